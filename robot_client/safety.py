"""Robot-side safety: every action passes a shield before it reaches the arm, and a watchdog
holds the arm when the control loop stops producing actions.

Shield (each tick, whoever chose the action: policy, person, teleop device)
    - not finite, or the wrong shape: the previous safe action is repeated (the first tick of
      an episode: the driver's `hold_action()`, the action that keeps the arm where it is, e.g.
      a LeRobot arm's current joint positions; without one, zeros clipped into the bounds, which
      is "stand still" for the velocity-commanded sim arms);
    - clipped into the driver's action bounds (`action_bounds`: a Gymnasium Box's low/high;
      none declared, none applied: a LeRobot arm's joint targets are in its own units);
    - rate-limited: no dimension moves more than `max_action_rate` per second from the previous
      action, when the driver declares one.
The executed (shielded) action is what is recorded and streamed.

Watchdog
    If no action has been sent for `bound_s` (the loop is stuck in inference, a device read, a
    full disk...), the watchdog calls the driver's `hold()` once per stall: a physical arm is
    told to keep its current position. Simulated arms need nothing: their physics only advances
    when the loop steps them.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np

log = logging.getLogger("fleetlearn.safety")


@dataclass
class ActionLimits:
    low: np.ndarray
    high: np.ndarray
    max_step: np.ndarray | None = None  # per tick

    @classmethod
    def of(cls, driver) -> "ActionLimits":
        dim = driver.action_dim
        bounds = getattr(driver, "action_bounds", None)
        low, high = (np.asarray(b, np.float32).reshape(dim) for b in bounds) if bounds else (
            np.full(dim, -np.inf, np.float32), np.full(dim, np.inf, np.float32))
        rate = getattr(driver, "max_action_rate", None)  # per second
        max_step = None if rate is None else np.broadcast_to(np.asarray(rate, np.float32) / driver.control_hz, (dim,))
        return cls(low, high, max_step)


class SafetyShield:
    def __init__(self, limits: ActionLimits, hold_action=None):
        self.limits = limits
        self._hold_action = hold_action  # the driver's: the action that keeps the arm where it is
        self.previous: np.ndarray | None = None
        self.counts = {"non_finite": 0, "clipped": 0, "rate_limited": 0}

    def reset(self) -> None:
        """A new episode: no previous action to limit the rate against."""
        self.previous = None

    def hold_action(self) -> np.ndarray:
        held = self._hold_action() if self._hold_action is not None else None
        if held is None:
            held = np.zeros(self.limits.low.shape, np.float32)
        return np.clip(np.asarray(held, np.float32), self.limits.low, self.limits.high)

    def __call__(self, action) -> np.ndarray:
        a = np.asarray(action, np.float32)
        if a.shape != self.limits.low.shape or not np.all(np.isfinite(a)):
            self.counts["non_finite"] += 1
            log.error("unsafe action %s (shape %s): holding", np.array2string(a, precision=3)[:80], a.shape)
            a = self.previous if self.previous is not None else self.hold_action()
        clipped = np.clip(a, self.limits.low, self.limits.high)
        self.counts["clipped"] += int(not np.array_equal(clipped, a))
        a = clipped
        if self.limits.max_step is not None and self.previous is not None:
            limited = self.previous + np.clip(a - self.previous, -self.limits.max_step, self.limits.max_step)
            self.counts["rate_limited"] += int(not np.array_equal(limited, a))
            a = limited.astype(np.float32)
        self.previous = a
        return a


class Watchdog:
    """Calls `hold()` when `beat()` has not been called for `bound_s` while armed."""

    def __init__(self, hold, bound_s: float, name: str = "robot"):
        self.hold, self.bound_s, self.name = hold, bound_s, name
        self.holds = 0
        self._last = time.monotonic()
        self._armed = False
        self._held = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"{name}-watchdog", daemon=True)
        self._thread.start()

    def beat(self) -> None:
        self._last = time.monotonic()
        self._held = False

    def arm(self, armed: bool) -> None:
        """Armed during episodes; between episodes the loop waits for nothing urgent."""
        self.beat()
        self._armed = armed

    def _watch(self) -> None:
        while not self._stop.wait(self.bound_s / 4):
            stalled = time.monotonic() - self._last
            if self._armed and not self._held and stalled > self.bound_s:
                self._held = True
                self.holds += 1
                log.error("%s: no action for %.2f s (bound %.2f s): holding the arm", self.name, stalled, self.bound_s)
                try:
                    self.hold()
                except Exception:
                    log.exception("%s: hold failed", self.name)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
