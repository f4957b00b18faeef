"""Canary releases: a new version runs on a fraction of the robots first.

When the trainer publishes a version, the publisher announces it only to the canary robots
(`fraction` of the robots watching, at least one); the others keep the stable version. The
verdict (promote: every robot gets the candidate; roll back: the stable version is published
again, as a rollback, and every robot returns to it) comes from one of two tests, by name:

    paired  (the learner's default) the candidate's evaluation episodes on the canary robots
            against the promoted versions' outcomes on the same evaluation seeds (the same
            scenes, so scene difficulty cancels). Once the candidate has `episodes` such paired
            seeds, it is rolled back when its successes on them fall more than `margin` x
            `episodes` below those of the best promoted version on the same seeds. This is a
            non-inferiority rule, not a significance test: it keeps the versions every robot runs
            from sliding below the best one measured so far, at the price of sometimes holding
            back a candidate that is merely unlucky (the next one is tried next). With fewer
            paired seeds than that once the candidate has run 4 x `episodes` episodes (small
            evaluation shares), those decide; with none (robots that run no evaluation seeds, a
            restarted learner with no record of them), the Fisher test below does.
    fisher  one-sided Fisher exact test on all finished episodes (training or evaluation),
            `episodes` per arm, the stable arm counted on the other robots since the candidate
            appeared. H0: the candidate succeeds at least as often; roll back when p < alpha.
            With 10 episodes per arm and alpha 0.05 it catches a collapse (80% -> 20%), not a
            drop of a few points.

Robots on the candidate never exceed ceil(fraction x robots watching when it was published);
one trial runs at a time (a version published meanwhile waits for the verdict, and the newest
waiting one is tried next). Trials and evaluation records live in the learner's memory: a
learner restarted mid-trial takes the registry's latest publication as stable.
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


TESTS = ("paired", "fisher")
EvalKey = tuple[str, int]  # (task, evaluation seed)


@dataclass
class CanarySettings:
    fraction: float = 0.0      # 0: no canary, every robot gets a new version at once
    episodes: int = 10         # paired: evaluation seeds the candidate needs; fisher: episodes per arm
    alpha: float = 0.05        # fisher only
    test: str = "fisher"
    margin: float = 0.15       # paired only: the largest drop, as a fraction of `episodes`, still promoted

    @property
    def enabled(self) -> bool:
        return self.fraction > 0

    def __post_init__(self):
        if not 0 <= self.fraction < 1:
            raise ValueError(f"the canary fraction must be in [0, 1), got {self.fraction}")
        if self.episodes < 1 or not 0 < self.alpha < 1:
            raise ValueError("canary episodes must be at least 1 and alpha in (0, 1)")
        if self.test not in TESTS:
            raise ValueError(f"unknown canary test {self.test!r}; choose one of {', '.join(TESTS)}")
        if not 0 <= self.margin < 1:
            raise ValueError(f"the canary margin must be in [0, 1), got {self.margin}")

    def canary_count(self, robots: int) -> int:
        """Robots that get a candidate: ceil(fraction x robots), at least 1 and never all (the
        stable arm needs robots too); 0 below two robots, where there is nothing to compare."""
        if robots < 2:
            return 0
        return min(robots - 1, max(1, math.ceil(self.fraction * robots)))

    def hold_episodes(self, robots: int, eval_every: int) -> int:
        """About how many episodes each canary robot runs before a paired verdict: its share of
        `episodes` evaluation seeds, one every `eval_every` episodes (the robots' setting)."""
        canaries = self.canary_count(robots)
        return eval_every * math.ceil(self.episodes / canaries) if canaries else 0


# The learner's default guard (`fleet learner`, and so `make demo`): half the robots get a new
# version first; it reaches the rest unless it scores more than 0.15 x 12 = 1.8 successes below
# the best promoted version on 12 shared evaluation seeds.
DEFAULT_GUARD = CanarySettings(fraction=0.5, episodes=12, test="paired", margin=0.15)


def describe(decision: dict) -> str:
    """A verdict in one line, whichever test made it (for logs and rollback notes)."""
    if decision["test"] == "paired":
        return (f"{decision['candidate_success']} against {decision['reference_success']} for version "
                f"{decision['reference']} on the same evaluation seeds, margin {decision['margin']:g}")
    return (f"{decision['candidate_success']} against {decision['stable_success']} on version "
            f"{decision['stable']}, Fisher p={decision['p_value']:.3f}")


@dataclass
class CanaryTrial:
    """One candidate against the stable version (and, paired, the promoted versions' records)."""

    candidate: int
    stable: int
    robots: frozenset[str]
    started_at: float = field(default_factory=time.time)
    outcomes: dict[int, list[bool]] = field(default_factory=dict)
    evaluations: dict[EvalKey, bool] = field(default_factory=dict)  # the candidate's, canary robots only

    def record(self, robot_id: str, version: int, success: bool, evaluation: EvalKey | None = None) -> None:
        """Candidate outcomes count from the canary robots only, stable ones from the others: a
        robot cannot vote for a version it was not given. `evaluation`: the episode's (task,
        seed) when it was an evaluation episode (the first outcome per seed counts)."""
        on_trial = robot_id in self.robots
        if (version == self.candidate and on_trial) or (version == self.stable and not on_trial):
            self.outcomes.setdefault(version, []).append(bool(success))
        if evaluation is not None and version == self.candidate and on_trial:
            self.evaluations.setdefault(evaluation, bool(success))

    def decision(self, settings: CanarySettings, promoted: dict[int, dict[EvalKey, bool]] | None = None) -> dict | None:
        """None while the evidence is short; then the verdict. `promoted`: the evaluation
        outcomes of the versions every robot has run, by version (the paired test's references)."""
        if settings.test == "paired":
            # Its robots' evaluation shares are done well within 4 x episodes episodes (one
            # evaluation every other episode); then what is paired decides, or with nothing paired,
            # the unpaired test.
            references = {version: record for version, record in (promoted or {}).items() if version != self.candidate}
            paired = [key for key in self.evaluations if any(key in record for record in references.values())]
            if len(paired) >= settings.episodes:
                return self._paired(settings, references, paired[:settings.episodes])
            if len(self.outcomes.get(self.candidate, [])) < 4 * settings.episodes:
                return None
            if paired:
                return self._paired(settings, references, paired)
        return self._fisher(settings)

    def _paired(self, settings: CanarySettings, references: dict[int, dict[EvalKey, bool]],
                seeds: list[EvalKey]) -> dict:
        candidate = sum(self.evaluations[key] for key in seeds)
        scores = {version: sum(record[key] for key in seeds if key in record) / sum(key in record for key in seeds)
                  for version, record in references.items() if any(key in record for key in seeds)}
        best = max(scores, key=lambda version: (scores[version], version))
        floor = scores[best] * len(seeds) - settings.margin * len(seeds)
        return {"test": "paired", "candidate": self.candidate, "stable": self.stable, "promote": candidate >= floor,
                "candidate_success": f"{candidate}/{len(seeds)}", "reference": best,
                "reference_success": f"{scores[best] * len(seeds):g}/{len(seeds)}", "margin": settings.margin,
                "seeds": [list(key) for key in seeds], "canary_robots": sorted(self.robots), "decided_at": time.time()}

    def _fisher(self, settings: CanarySettings) -> dict | None:
        cand, stab = self.outcomes.get(self.candidate, []), self.outcomes.get(self.stable, [])
        if len(cand) < settings.episodes or len(stab) < settings.episodes:
            return None
        cand, stab = cand[:settings.episodes * 2], stab[-settings.episodes * 2:]
        p = fisher_less(sum(cand), len(cand), sum(stab), len(stab))
        return {"test": "fisher", "candidate": self.candidate, "stable": self.stable, "promote": p >= settings.alpha,
                "p_value": p, "candidate_success": f"{sum(cand)}/{len(cand)}",
                "stable_success": f"{sum(stab)}/{len(stab)}", "canary_robots": sorted(self.robots),
                "decided_at": time.time()}


def verdicts(data_dir: Path) -> dict[int, str]:
    """"promoted" or "rolled back" per candidate version, from DATA/canary.jsonl (empty without it)."""
    path = Path(data_dir) / "canary.jsonl"
    if not path.exists():
        return {}
    decisions = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {int(d["candidate"]): "promoted" if d["promote"] else "rolled back" for d in decisions}


def record_decision(data_dir: Path | None, decision: dict) -> None:
    """Every verdict, appended to DATA/canary.jsonl."""
    if data_dir is None:
        return
    with open(Path(data_dir) / "canary.jsonl", "a") as f:
        f.write(json.dumps(decision) + "\n")
