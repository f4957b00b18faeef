"""Offscreen renderers that are freed only on the thread that owns their GL context.

An EGL context is current on at most one thread, and `mujoco.Renderer` frees its GL objects on
whatever thread calls `close()`, or, for a renderer never closed, on whichever thread the
garbage collector happens to run. Freed from another thread, its context is usually still current
on its owner, so `eglMakeCurrent` fails and MuJoCo deletes the renderer's textures, buffers and
framebuffers by number in the context current on the freeing thread: another renderer's, which
then renders garbage or crashes. So a `ThreadRenderer` remembers its owner: the thread that
created it, or the one that rendered with it last (a render makes its context current there, so
it is current nowhere else). Closed on the owner thread it is freed at once; closed anywhere
else, or collected, it is only handed back, and the owner frees it at its next render or
renderer creation. One whose owner thread has ended is kept, unfreed, until the process exits.

All GL work of a process (creating, rendering, freeing) is also serialised by one lock. Several
robot threads of one test process each rendered with their own EGL context at once, and one
full `make test` in two crashed inside the renderer; software rendering (Mesa llvmpipe) is not
known to be safe with contexts driven from several threads at a time, and robots in production
run one sim per process, so the lock costs them nothing and takes the question away.

Every live `mujoco.Renderer` is referenced from this module, not only from the object that uses
it, so the cyclic collector never finalises one (`mujoco.Renderer.__del__` closes it wherever
the collector runs).
"""

from __future__ import annotations

import threading

import mujoco

# Reentrant: a collection (so a finalizer handing a renderer back) may start wherever objects are
# allocated, this module's own code under the lock included.
_lock = threading.RLock()
_gl = threading.RLock()  # one thread at a time does GL work in this process (module docstring)
_live: dict[int, mujoco.Renderer] = {}  # every open renderer, by id
_handed_back: list[tuple[mujoco.Renderer, threading.Thread]] = []  # closed elsewhere: (renderer, owner)
_kept: list[mujoco.Renderer] = []  # their owner thread has ended: never freed


class ThreadRenderer:
    """`mujoco.Renderer` (same `update_scene` and `render`) whose `close()`, and garbage
    collection, may happen on any thread: it is freed on its owner thread (module docstring)."""

    def __init__(self, model: mujoco.MjModel, height: int, width: int):
        free_handed_back()
        with _gl:
            renderer = mujoco.Renderer(model, height=height, width=width)
        self._owner = threading.current_thread()
        self._use = threading.RLock()  # a close elsewhere waits for a render in progress
        self._key = id(renderer)
        with _lock:
            _live[self._key] = renderer
        self._renderer: mujoco.Renderer | None = renderer

    def update_scene(self, data: mujoco.MjData, camera) -> None:
        self._open().update_scene(data, camera=camera)

    def render(self):
        with self._use:
            renderer = self._open()
            free_handed_back()
            with _gl:
                pixels = renderer.render()  # on another thread: fails if still current on the owner
            self._owner = threading.current_thread()  # current here now, so this thread frees it
            return pixels

    def close(self) -> None:
        renderer = self._detach()
        if renderer is None:
            return
        if threading.current_thread() is self._owner:
            with _gl:
                renderer.close()
            free_handed_back()
        else:
            _hand_back(renderer, self._owner)

    def __del__(self) -> None:
        # The collector runs wherever objects are allocated, even between two GL calls of a
        # render (mujoco.Renderer.render allocates), so a finalizer frees nothing, even on the
        # owner thread: it hands back, and the owner frees at its next render or creation.
        renderer = self._detach() if getattr(self, "_renderer", None) is not None else None
        if renderer is not None:
            _hand_back(renderer, self._owner)

    def _detach(self) -> mujoco.Renderer | None:
        with self._use:
            if self._renderer is None:
                return None
            self._renderer = None
            with _lock:
                return _live.pop(self._key)

    def _open(self) -> mujoco.Renderer:
        if self._renderer is None:
            raise RuntimeError("renderer is closed")
        return self._renderer


def _hand_back(renderer: mujoco.Renderer, owner: threading.Thread) -> None:
    with _lock:
        _handed_back.append((renderer, owner))


def free_handed_back() -> None:
    """Frees the handed-back renderers this thread owns (closed elsewhere, or collected); keeps,
    never freed, those whose owner thread has ended."""
    if not _handed_back:
        return
    with _lock:
        taken = _handed_back[:]
        del _handed_back[:len(taken)]
    me = threading.current_thread()
    for renderer, owner in taken:
        if owner is me:
            with _gl:
                renderer.close()
        elif owner.is_alive():
            _hand_back(renderer, owner)
        else:
            _kept.append(renderer)
