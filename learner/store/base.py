"""The episode store's interface and its rules, whatever the backend.

An `EpisodeIndex` is what the store's writer needs of an index (register robots, tell which chunks
are stored, index written chunks); an `EpisodeReader` is what the trainer, the dashboard, the
metrics and the benchmarks read. The SQLite backend (learner/store/sqlite.py) is the embedded
default; the Redis backend (learner/store/redis.py) serves several ingest replicas. Both follow
one completion rule, `episode_totals` below: the Redis index script is its Lua twin, and
tests/test_scaleout.py holds the two to the same answers on the same chunks. One integrity rule,
`continuity_problem`, keeps a stored episode whole: the servicer refuses a chunk that breaks it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Protocol

import numpy as np
from safetensors.numpy import load_file

from core.episode import EpisodeArrays
from fleet.v1 import fleet_pb2 as pb

INTERVENTION = pb.ACTION_SOURCE_INTERVENTION


class CorruptChunk(ValueError):
    """A stored chunk file that cannot be read back (cut short, altered or gone)."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"chunk file {path}: {reason}")
        self.path = path


def load_episode_arrays(root: Path, paths: list[str]) -> dict[str, np.ndarray]:
    """An episode's arrays from its chunk files (relative to the store `root`, in order), as both
    readers load them; CorruptChunk names the first file that cannot be read or does not fit."""
    parts = []
    for rel in paths:
        try:
            parts.append(load_file(str(root / rel)))
        except Exception as exc:  # safetensors' header and length errors, a missing file
            raise CorruptChunk(rel, f"unreadable ({exc})") from exc
    try:
        arrays = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    except (KeyError, ValueError, IndexError) as exc:
        raise CorruptChunk(paths[-1] if paths else "?", f"does not fit the episode's other chunks ({exc!r})") from exc
    return arrays


def chunk_summary(arrays: dict[str, np.ndarray]) -> dict[str, int]:
    """What an episode's totals need of one chunk: its human steps and where takeovers start."""
    source = arrays["source"]
    human = source == INTERVENTION
    return {"human_steps": int(human.sum()), "takeover_starts": int(np.sum(human[1:] & ~human[:-1])),
            "first_source": int(source[0]), "last_source": int(source[-1])}


def episode_totals(chunks: Iterable[dict], final_sequence: int | None) -> dict | None:
    """The completion rule: an episode is complete once its final chunk (the one marked
    episode_end) and every chunk before it are stored. Then its human steps are the sum over its
    chunks, and its takeovers are the autonomous-to-intervention switches, counting one where a
    chunk starts under intervention after a chunk that did not end under it. `chunks` are the
    stored chunk summaries (`chunk_summary`) in sequence order. None while incomplete."""
    chunks = list(chunks)
    if final_sequence is None or len(chunks) != final_sequence + 1:
        return None
    takeovers, previous_last = 0, None
    for c in chunks:
        takeovers += c["takeover_starts"]
        if c["first_source"] == INTERVENTION and previous_last != INTERVENTION:
            takeovers += 1
        previous_last = c["last_source"]
    return {"human_steps": sum(c["human_steps"] for c in chunks), "takeovers": takeovers}


def continuity_problem(sequence: int, first_step: int, num_steps: int, end: bool, final: int | None,
                       spans: dict[int, tuple[int, int]]) -> str | None:
    """The integrity rule across an episode's chunks: steps run on from one chunk to the next and
    nothing comes after the end chunk (within a chunk, and the end chunk against its outcome,
    core/wire.py checks). `final` is the stored end chunk's sequence (None before it) and
    `spans` the stored chunks' (first step, steps) by sequence. Why the chunk is refused, or
    None; a chunk already stored (a re-send) is not checked again."""
    if sequence in spans:
        return None
    if final is not None and (sequence > final or end):
        return f"chunk {sequence} comes after the episode's end (chunk {final})"
    if end and (later := [s for s in spans if s > sequence]):
        return f"chunk {sequence} ends the episode, but chunk {min(later)} is stored after it"
    if (before := spans.get(sequence - 1)) and sum(before) != first_step:
        return f"chunk {sequence} starts at step {first_step}, but chunk {sequence - 1} ends before step {sum(before)}"
    if (after := spans.get(sequence + 1)) and first_step + num_steps != after[0]:
        return (f"chunk {sequence} ends before step {first_step + num_steps}, but chunk {sequence + 1} starts at "
                f"step {after[0]}")
    return None


@dataclass
class StoredEpisode:
    """What the index holds of an episode (`EpisodeIndex.episode_spans`): its end chunk's sequence
    (None before it; -1 for an episode closed before its chunk 0 arrived), its stored chunks'
    (first step, steps) by sequence, and when its first chunk was stored (None: nothing yet)."""

    final: int | None = None
    spans: dict[int, tuple[int, int]] = field(default_factory=dict)
    opened_at: float | None = None


# An episode open longer than its bound is closed with this termination (`close_stale`).
TRUNCATED = "truncated_by_learner"


def truncated_final(sequences: Iterable[int]) -> int:
    """Where an episode closed while open ends: the last chunk of the run 0, 1, 2, ... stored
    (steps join up within it, continuity_problem saw to that); -1 without chunk 0. Chunks after a
    gap are left out. The Redis close script is its Lua twin."""
    stored, final = set(sequences), -1
    while final + 1 in stored:
        final += 1
    return final


class EpisodeContinuity:
    """`continuity_problem` as one episode stream applies it: what the index holds of an episode
    is read once, when the stream first sees the episode; the chunks the stream accepts after
    that (which the writer may not have indexed yet) are added as they go. With `open_bound_s`, a
    new chunk of an episode whose first chunk was stored longer ago than that is refused: the
    learner closes such an episode as truncated (EpisodeStore.close_stale). Remembers the last
    `keep` episodes."""

    def __init__(self, keep: int = 16, open_bound_s: float | None = None):
        self.keep, self.open_bound_s = keep, open_bound_s
        self.episodes: dict[tuple[str, str], StoredEpisode] = {}

    def known(self, chunk: pb.EpisodeChunk) -> bool:
        return (chunk.robot_id, chunk.episode_id) in self.episodes

    def learn(self, chunk: pb.EpisodeChunk, stored: StoredEpisode) -> None:
        """What the index holds of the chunk's episode (`EpisodeIndex.episode_spans`)."""
        if len(self.episodes) >= self.keep:
            del self.episodes[next(iter(self.episodes))]
        self.episodes[(chunk.robot_id, chunk.episode_id)] = StoredEpisode(
            stored.final, dict(stored.spans), stored.opened_at if stored.opened_at is not None else time.time())

    def accept(self, chunk: pb.EpisodeChunk, first_step: int, num_steps: int) -> str | None:
        """Checks the chunk and records it when it passes; why it is refused, or None."""
        seen = self.episodes[(chunk.robot_id, chunk.episode_id)]
        if (self.open_bound_s is not None and chunk.sequence not in seen.spans
                and time.time() - seen.opened_at > self.open_bound_s):
            return (f"the episode has been open longer than the learner's bound of {self.open_bound_s / 60:.3g} min "
                    "(fleet learner --episode-open-minutes): it is closed as truncated and takes no more chunks")
        problem = continuity_problem(chunk.sequence, first_step, num_steps, chunk.episode_end, seen.final, seen.spans)
        if problem is None:
            seen.spans[chunk.sequence] = (first_step, num_steps)
            if chunk.episode_end:
                seen.final = chunk.sequence
        return problem


class EpisodeIndex(Protocol):
    """What EpisodeStore's writer thread needs of an index."""

    def register_robot(self, robot_id: str, embodiment: pb.Embodiment, tasks: list[dict]) -> None: ...

    def robot_embodiment(self, robot_id: str) -> pb.Embodiment | None: ...

    def stored(self, keys: list[tuple[str, str, int]]) -> set[tuple[str, str, int]]: ...

    def add(self, fresh: list[tuple[pb.EpisodeChunk, dict[str, np.ndarray], tuple[str, int]]]) -> set: ...

    def episode_spans(self, robot_id: str, episode_id: str) -> StoredEpisode:
        """What `continuity_problem` checks a new chunk of the episode against."""
        ...

    def close_stale(self, opened_before: float) -> list[tuple[str, str]]:
        """Closes every episode still open whose first chunk was stored before `opened_before`
        (a robot that never ended it): it ends at `truncated_final` with termination TRUNCATED,
        not a success, and completes like any other (one without chunk 0 is closed empty and
        never completes). Returns the (robot id, episode id) closed."""
        ...

    def close(self) -> None: ...


class EpisodeReader(Protocol):
    """What readers of a store use: complete episodes (new ones on each call for the trainer),
    their arrays, registered robots and demonstration counts."""

    def complete_episodes(self, after_completed_at: float = 0.0) -> list: ...

    def load_episode(self, row) -> EpisodeArrays: ...

    def robot_embodiment(self, robot_id: str) -> pb.Embodiment | None: ...

    def demonstration_counts(self) -> dict[str, int]: ...

    def close(self) -> None: ...
