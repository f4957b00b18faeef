"""Canary releases: a new version runs on a fraction of the robots first.

When the trainer publishes a version, the publisher announces it only to the canary robots
(`fraction` of the robots watching, at least one); the others keep the stable version. Once
the candidate has `episodes` finished training or evaluation episodes, and the stable version as
many since the candidate appeared, the two success rates are compared:

    test   one-sided Fisher exact test, H0: the candidate succeeds at least as often as the
           stable version; H1: it succeeds less often.
    rule   roll back when p < alpha (the stable version is published again, as a rollback, and
           every robot returns to it); otherwise promote (every robot gets the candidate).

So a version is promoted unless the data show, at level alpha, that it is worse. With 10
episodes per arm and alpha 0.05 that catches a collapse (for example 80% -> 20%) but not a
drop of a few points; raise `episodes` for finer guarantees. Robots on the candidate never
exceed ceil(fraction x robots watching when it was published); one trial runs at a time (a
version published meanwhile waits for the verdict, and the newest waiting one is tried next).
The trial lives in the learner's memory: a learner restarted mid-trial takes the registry's
latest publication as stable.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("fleetlearn.canary")


def fisher_less(successes_a: int, n_a: int, successes_b: int, n_b: int) -> float:
    """One-sided Fisher exact p-value that arm a's success rate is below arm b's: P(X <= s_a)
    for X hypergeometric with the margins of the 2x2 table."""
    total, successes = n_a + n_b, successes_a + successes_b
    denominator = math.comb(total, n_a)
    low = max(0, successes - n_b)
    return sum(math.comb(successes, x) * math.comb(total - successes, n_a - x)
               for x in range(low, successes_a + 1)) / denominator


@dataclass
class CanarySettings:
    fraction: float = 0.0      # 0: no canary, every robot gets a new version at once
    episodes: int = 10         # per arm before deciding
    alpha: float = 0.05

    @property
    def enabled(self) -> bool:
        return self.fraction > 0

    def __post_init__(self):
        if not 0 <= self.fraction < 1:
            raise ValueError(f"the canary fraction must be in [0, 1), got {self.fraction}")
        if self.episodes < 1 or not 0 < self.alpha < 1:
            raise ValueError("canary episodes must be at least 1 and alpha in (0, 1)")

    def canary_count(self, robots: int) -> int:
        """Robots that get a candidate: ceil(fraction x robots), at least 1 and never all (the
        stable arm needs robots too); 0 below two robots, where there is nothing to compare."""
        if robots < 2:
            return 0
        return min(robots - 1, max(1, math.ceil(self.fraction * robots)))


@dataclass
class CanaryTrial:
    """One candidate against the stable version."""

    candidate: int
    stable: int
    robots: frozenset[str]
    started_at: float = field(default_factory=time.time)
    outcomes: dict[int, list[bool]] = field(default_factory=dict)

    def record(self, robot_id: str, version: int, success: bool) -> None:
        """Candidate outcomes count from the canary robots only, stable ones from the others: a
        robot cannot vote for a version it was not given."""
        on_trial = robot_id in self.robots
        if (version == self.candidate and on_trial) or (version == self.stable and not on_trial):
            self.outcomes.setdefault(version, []).append(bool(success))

    def decision(self, settings: CanarySettings) -> dict | None:
        """None while either arm has fewer than `episodes` outcomes; then the verdict."""
        cand, stab = self.outcomes.get(self.candidate, []), self.outcomes.get(self.stable, [])
        if len(cand) < settings.episodes or len(stab) < settings.episodes:
            return None
        cand, stab = cand[:settings.episodes * 2], stab[-settings.episodes * 2:]
        p = fisher_less(sum(cand), len(cand), sum(stab), len(stab))
        return {"candidate": self.candidate, "stable": self.stable, "promote": p >= settings.alpha, "p_value": p,
                "candidate_success": f"{sum(cand)}/{len(cand)}", "stable_success": f"{sum(stab)}/{len(stab)}",
                "canary_robots": sorted(self.robots), "decided_at": time.time()}


def record_decision(data_dir: Path | None, decision: dict) -> None:
    """Every verdict, appended to DATA/canary.jsonl."""
    if data_dir is None:
        return
    with open(Path(data_dir) / "canary.jsonl", "a") as f:
        f.write(json.dumps(decision) + "\n")
