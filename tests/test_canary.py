"""Canary releases: the statistical test against hand-computed cases, and a deliberately bad
version (trained on corrupted labels) rolled back automatically, never run by more robots than
the canary fraction."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from conftest import wait_for
from learner.canary import DEFAULT_GUARD, CanarySettings, CanaryTrial, describe, fisher_less
from learner.store import StoreReader
from learner.trainer import TrainerConfig, fit_offline
from learner.versions import VersionRegistry
from policy import save_checkpoint
from test_fleet_e2e import RobotThread


def test_fisher_exact_one_sided_matches_hand_computed_tables():
    # 0/5 against 5/5: only the observed table is as extreme, 1 / C(10, 5).
    assert fisher_less(0, 5, 5, 5) == pytest.approx(1 / 252)
    # 3/5 against 3/5: P(X <= 3) with 6 successes among 10, 5 drawn = (6 + 60 + 120) / 252.
    assert fisher_less(3, 5, 3, 5) == pytest.approx(186 / 252)
    # A candidate doing better is never evidence against it.
    assert fisher_less(5, 5, 0, 5) == pytest.approx(1.0)


def test_trial_waits_for_both_arms_then_promotes_or_rolls_back():
    settings = CanarySettings(fraction=0.25, episodes=5, alpha=0.05)
    assert settings.canary_count(4) == 1 and settings.canary_count(10) == 3
    assert settings.canary_count(1) == 0 and CanarySettings(fraction=0.9).canary_count(3) == 2  # never all
    same = CanaryTrial(candidate=2, stable=1, robots=frozenset({"a"}))
    for _ in range(5):
        same.record("a", 2, True)
        same.record("b", 2, False)  # a robot not on trial cannot vote for the candidate
        assert same.decision(settings) is None  # the stable arm has nothing yet
    for success in (True, True, False, True, True):
        same.record("b", 1, success)
        same.record("a", 1, False)  # nor a canary robot for the stable version
    verdict = same.decision(settings)
    assert verdict["promote"] and verdict["candidate_success"] == "5/5" and verdict["stable_success"] == "4/5"
    worse = CanaryTrial(candidate=2, stable=1, robots=frozenset({"a"}))
    for _ in range(5):
        worse.record("a", 2, False)
        worse.record("b", 1, True)
        worse.record("b", 7, True)  # another version's episodes do not count
    verdict = worse.decision(settings)
    assert not verdict["promote"] and verdict["p_value"] == pytest.approx(1 / 252)


def test_paired_trial_compares_the_same_seeds_with_the_best_promoted_version():
    settings = CanarySettings(fraction=0.5, episodes=4, test="paired", margin=0.25)
    seeds = [("reach", i) for i in range(6)]
    promoted = {0: {key: i < 2 for i, key in enumerate(seeds)},   # v0: 2 of the 6
                1: {key: i < 4 for i, key in enumerate(seeds)}}   # v1: 4 of the 6, the best
    trial = CanaryTrial(candidate=2, stable=1, robots=frozenset({"a"}))
    trial.record("a", 2, False, ("reach", 99))  # a seed no promoted version has run: not paired
    trial.record("b", 2, True, seeds[0])        # a robot not on trial cannot vote for the candidate
    for key in seeds[:3]:
        trial.record("a", 2, True, key)
        assert trial.decision(settings, promoted) is None  # fewer than 4 paired seeds
    trial.record("a", 2, False, seeds[0])  # only the first outcome of a seed counts
    trial.record("a", 2, False, seeds[3])
    verdict = trial.decision(settings, promoted)
    # 3/4 against v1's 4/4 on the same seeds: one fewer, the margin allows 0.25 x 4 = 1.
    assert verdict["test"] == "paired" and verdict["promote"]
    assert verdict["reference"] == 1 and verdict["candidate_success"] == "3/4" and verdict["reference_success"] == "4/4"
    strict = CanarySettings(fraction=0.5, episodes=4, test="paired", margin=0.2)
    assert not trial.decision(strict, promoted)["promote"]  # 0.2 x 4 = 0.8 < one fewer
    assert trial.decision(strict, {0: promoted[0]})["promote"]  # against v0's 2/4 it is better
    assert describe(verdict) == "3/4 against 4/4 for version 1 on the same evaluation seeds, margin 0.25"


def test_the_default_guard_is_the_paired_canary_on_half_the_robots():
    assert DEFAULT_GUARD.enabled and DEFAULT_GUARD.test == "paired"
    # 4 robots: 2 canaries share 12 seeds, one evaluation every other episode -> 12 episodes each.
    assert DEFAULT_GUARD.canary_count(4) == 2 and DEFAULT_GUARD.hold_episodes(4, eval_every=2) == 12
    assert DEFAULT_GUARD.hold_episodes(1, eval_every=2) == 0  # one robot: no trial


def test_paired_trial_falls_back_to_fisher_without_evaluation_seeds():
    settings = CanarySettings(fraction=0.5, episodes=3, test="paired")
    trial = CanaryTrial(candidate=2, stable=1, robots=frozenset({"a"}))
    for _ in range(11):
        trial.record("a", 2, False)
        trial.record("b", 1, True)
        assert trial.decision(settings, {1: {}}) is None  # waits 4 x episodes for evaluation seeds
    trial.record("a", 2, False)
    verdict = trial.decision(settings, {1: {}})
    assert verdict["test"] == "fisher" and not verdict["promote"]
    # Fewer paired seeds than asked for (the robots' evaluation shares are small): they decide.
    short = CanaryTrial(candidate=2, stable=1, robots=frozenset({"a"}))
    short.record("a", 2, True, ("reach", 0))
    for _ in range(10):
        short.record("a", 2, True)
        assert short.decision(settings, {1: {("reach", 0): True}}) is None
    short.record("a", 2, True)
    verdict = short.decision(settings, {1: {("reach", 0): True}})
    assert verdict["test"] == "paired" and verdict["promote"] and verdict["candidate_success"] == "1/1"
    with pytest.raises(ValueError, match="unknown canary test"):
        CanarySettings(test="vibes")


def demonstrations(n: int):
    from bench.sim import _demonstration, close_envs

    try:
        return [_demonstration(("reach", seed)) for seed in range(n)]
    finally:
        close_envs()  # the env it rendered them with is not left open on this thread


@pytest.fixture(scope="module")
def good_and_bad():
    """A version trained on 20 reach demonstrations, and one trained on the same with corrupted
    labels (every action negated)."""
    demos = demonstrations(20)
    config = TrainerConfig(data_dir=None, batch_size=32,
                           policy_overrides=dict(d_model=64, n_heads=2, n_layers=1, encoder_image_size=32))
    corrupted = [dataclasses.replace(d, arrays={**d.arrays, "action": -d.arrays["action"]}) for d in demos]
    return fit_offline(demos, 2500, config), fit_offline(corrupted, 300, config)


@pytest.mark.parametrize("test", ["paired", "fisher"])
def test_a_bad_version_is_rolled_back_and_reaches_only_the_canary_robots(learner_thread, tmp_path, test, good_and_bad):
    good, bad = good_and_bad

    # reach: the good version succeeds about 40% (8/20 measured), the bad one about never; 25 episodes
    # per arm make a false promotion unlikely (the stable arm would need 4 or fewer successes: ~1%).
    # Paired: the first 12 of the canary robot's 24 evaluation seeds against version 0's outcomes on
    # them; version 0 would have to fail all 12 (~0.2%) for the margin (0.05 x 12 = 0.6) to let a
    # 0/12 through. The verdict falls mid-share: the rollback must not wait for the rest.
    settings = CanarySettings(fraction=0.25, episodes=25, alpha=0.05) if test == "fisher" else \
        CanarySettings(fraction=0.25, episodes=12, test="paired", margin=0.05)
    evaluation = dict(eval_seeds=tuple(range(24)), eval_every=1) if test == "paired" else {}
    learner = learner_thread(train=False, canary=settings)
    data = learner.config.data_dir
    registry = VersionRegistry(data)
    save_checkpoint(registry.checkpoint_dir(0), good, 0)
    registry.add(0, {"test": "good"})
    registry.publish(0, note="good")
    robots = [RobotThread(tmp_path / "robots", learner.address, f"arm-{i}", tasks=("reach",), help_gate="off",
                          preview_hz=0, seed=i, **evaluation).start() for i in range(4)]
    try:
        wait_for(lambda: all(r.client.version == 0 for r in robots), 60, "every robot on version 0")
        save_checkpoint(registry.checkpoint_dir(1), bad, 1)
        registry.add(1, {"test": "corrupted labels"})
        registry.publish(1, note="trained on corrupted labels")
        publisher = learner.learner.publisher
        wait_for(lambda: publisher.decisions, 240, "the canary's verdict")
        verdict = publisher.decisions[0]
        assert not verdict["promote"], verdict
        wait_for(lambda: registry.current().version == 0 and registry.current().rollback, 10, "the rollback recorded")
        wait_for(lambda: all(r.client.version == 0 for r in robots), 60, "every robot back on version 0")
    finally:
        for robot in robots:
            robot.stop()
    reader = StoreReader(data)
    on_bad = {row["robot_id"] for row in reader.db.execute("SELECT robot_id FROM episodes WHERE policy_version=1")}
    reader.close()
    assert 1 <= len(on_bad) <= math.ceil(settings.fraction * len(robots)), on_bad
    assert on_bad == set(verdict["canary_robots"])
    assert (data / "canary.jsonl").read_text().count("\n") == 1
    assert verdict["test"] == test
    if test == "fisher":
        assert np.isfinite(verdict["p_value"]) and verdict["p_value"] < settings.alpha
    else:
        assert verdict["reference"] == 0 and verdict["candidate_success"] == "0/12", verdict
        assert publisher.promoted_evaluations.keys() == {0}  # the rolled-back version is no reference
        reader = StoreReader(data)
        evaluations = dict(((v, n) for v, n in reader.db.execute(
            "SELECT policy_version, COUNT(*) FROM episodes WHERE kind='evaluation' AND robot_id=? "
            "GROUP BY policy_version", (verdict["canary_robots"][0],))))
        reader.close()
        # Back at once (the one episode under way when the verdict fell may finish), and version 0,
        # evaluated in full before the trial, is not evaluated again.
        assert 12 <= evaluations[1] <= 18 and evaluations[0] == 24, evaluations
