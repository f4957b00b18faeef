"""FLOAT detector: Sinkhorn against a hand-computed case and POT, the index, the threshold updates."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from monitor import FloatDetector, ReferenceBank, ThresholdCalibrator, cosine_cost, sinkhorn
from monitor.detectors import ChunkSignals
from monitor.float_detector import prefix_costs


def test_sinkhorn_matches_the_hand_computed_two_by_two_plan():
    # Cost [[0, 1], [1, 0]] between uniform halves: by symmetry the plan is [[x, h - x], [h - x, x]]
    # with h = 1/2, and entropic optimality gives x / (h - x) = exp(1 / epsilon).
    epsilon = 0.5
    plan = sinkhorn(np.array([[0.0, 1.0], [1.0, 0.0]]), np.full(2, 0.5), np.full(2, 0.5), epsilon)
    x = math.exp(1 / epsilon) / (2 * (1 + math.exp(1 / epsilon)))
    assert plan == pytest.approx(np.array([[x, 0.5 - x], [0.5 - x, x]]), abs=1e-9)
    assert x == pytest.approx(0.4404, abs=1e-4)


def test_sinkhorn_agrees_with_pot_in_batches():
    ot = pytest.importorskip("ot")
    rng = np.random.default_rng(0)
    cost = cosine_cost(rng.normal(size=(3, 6, 4)), rng.normal(size=(3, 9, 4)))
    a, b = np.full((3, 6), 1 / 6), np.full((3, 9), 1 / 9)
    plans = sinkhorn(cost, a, b, epsilon=0.1, iterations=500, tolerance=0.0)
    for i in range(3):
        reference = ot.sinkhorn(a[i], b[i], cost[i], reg=0.1, method="sinkhorn_log", numItermax=5000, stopThr=1e-12)
        assert plans[i] == pytest.approx(reference, abs=1e-7)
    assert plans.sum(axis=2) == pytest.approx(a) and plans.sum(axis=1) == pytest.approx(b)
    early = sinkhorn(cost, a, b, epsilon=0.1)  # default: stops once the marginals hold to 1e-6
    assert early.sum(axis=2) == pytest.approx(a, rel=1e-6) and early == pytest.approx(plans, abs=1e-6)


def test_a_prefix_that_follows_a_demo_costs_less_than_one_that_leaves_it():
    rng = np.random.default_rng(1)
    demo = rng.normal(size=(10, 8))
    bank = ReferenceBank.from_sequences([demo, demo[:7]])
    assert bank.sequences.shape == (2, 10, 8) and bank.lengths.tolist() == [10, 7]
    assert np.array_equal(bank.sequences[1, 7:], np.repeat(demo[6:7], 3, axis=0))  # padded with its end

    on_track, off_track = FloatDetector(bank, candidates=2), FloatDetector(bank, candidates=2)
    on_track.reset()
    off_track.reset()
    for t in range(6):
        on_track.update(ChunkSignals(demo[t] + 0.01 * rng.normal(size=8)))
        off_track.update(ChunkSignals(demo[t] if t < 3 else rng.normal(size=8)))
    # Entropic smoothing leaves ~0.003 per step on track; leaving the demo adds ~0.05 per chunk.
    assert on_track.index < 0.03 and off_track.index > 5 * on_track.index
    # Future columns cost nothing: a 3-step prefix along the demo matches its first 3 steps.
    total, per_step = prefix_costs(bank.sequences[:1], demo[:3])
    elsewhere, _ = prefix_costs(bank.sequences[:1], -demo[:3])  # pointing away from every demo step
    assert total[0] < 0.01 and elsewhere[0] > 10 * total[0] and per_step.shape == (1, 3)


def test_threshold_percentile_moves_by_five_within_bounds():
    calibrator = ThresholdCalibrator()
    assert calibrator.tau == float("inf")  # no successful rollout yet: never fires
    for value in range(1, 101):
        calibrator.add_success(value / 100)
    assert calibrator.tau == pytest.approx(np.percentile(np.arange(1, 101) / 100, 95))
    assert calibrator.false_positive() == pytest.approx(np.percentile(np.arange(1, 101) / 100, 100))
    assert calibrator.percentile == 100.0
    calibrator.false_positive()
    assert calibrator.percentile == 100.0  # capped
    for _ in range(25):
        calibrator.false_negative()
    assert calibrator.percentile == 0.0 and calibrator.tau == pytest.approx(0.01)


def test_reference_bank_from_demonstrations_holds_one_feature_per_chunk():
    import torch

    from monitor.features import build_reference_bank, episode_features
    from test_ptp import TINY, tiny_episode
    from policy import PolicyConfig, VLAPolicy

    policy = VLAPolicy(PolicyConfig(obs_steps=3, horizon=6, **TINY)).eval()
    demos = [tiny_episode(20, 0, "a"), tiny_episode(13, 1, "b")]
    bank = build_reference_bank(policy, demos, chunk_steps=8)
    assert bank.sequences.shape == (2, 3, 3 * 2 * 32) and bank.lengths.tolist() == [3, 2]
    features = episode_features(policy, demos[0], chunk_steps=8)
    frames = policy.embed_frames({"front": torch.from_numpy(demos[0].arrays["image/front"])},
                                 torch.from_numpy(demos[0].arrays["state"])).detach().numpy()
    assert np.allclose(features[1], frames[[6, 7, 8]].ravel(), atol=1e-5)  # window ending at step 8
    assert np.allclose(features[0], frames[[0, 0, 0]].ravel(), atol=1e-5)  # the first frame stands in


def test_worker_scores_chunks_off_the_calling_thread_and_never_blocks():
    from monitor.worker import QUEUE_SIZE, FloatWorker

    rng = np.random.default_rng(2)
    demo = rng.normal(size=(6, 8))
    seen = []
    detector = FloatDetector(ReferenceBank.from_sequences([demo]), tau=0.05, candidates=1)
    worker = FloatWorker(detector, on_index=lambda chunk, index: seen.append((chunk, index)))
    worker.start_episode()
    for feature in [demo[0], demo[1], demo[2], -demo[3], -demo[3], -demo[3]]:  # one chunk at a time, as a robot
        assert worker.submit(ChunkSignals(feature))
        worker.drain()
    assert [c for c, _ in seen] == [1, 2, 3, 4, 5, 6] and worker.fired and worker.index == seen[-1][1]
    worker.start_episode()
    worker.drain()
    assert worker.index == 0.0 and not worker.fired

    slow = threading.Event()
    worker.on_index = lambda chunk, index: slow.wait(5)  # a stalled worker: submit still returns at once
    accepted = [worker.submit(ChunkSignals(demo[0])) for _ in range(QUEUE_SIZE + 3)]
    assert accepted.count(False) >= 2 and worker.dropped >= 2
    slow.set()
    worker.close()


def test_a_shipped_bank_scores_like_the_original():
    rng = np.random.default_rng(4)
    bank = ReferenceBank.from_sequences([rng.normal(size=(int(n), 64)) for n in rng.integers(3, 7, 5)])
    shipped = ReferenceBank.from_arrays(bank.as_arrays())
    rollout = rng.normal(size=(4, 64))
    original, copy = FloatDetector(bank), FloatDetector(shipped)
    original.reset()
    copy.reset()
    for feature in rollout:
        assert copy.update(ChunkSignals(feature)) == pytest.approx(original.update(ChunkSignals(feature)), rel=1e-3)


def test_baselines_share_the_detector_interface_and_score_what_they_claim():
    from monitor.detectors import ActionVarianceDetector, NearestDemoDetector

    rng = np.random.default_rng(5)
    demo = rng.normal(size=(5, 16))
    nearest = NearestDemoDetector(ReferenceBank.from_sequences([demo, demo[:3]]))
    nearest.reset()
    assert nearest.update(ChunkSignals(demo[2])) == pytest.approx(0.0, abs=1e-9)  # on a demo chunk
    away = -demo[2]
    expected = min(1 - away @ d / (np.linalg.norm(away) * np.linalg.norm(d)) for d in demo)  # padding not counted
    assert nearest.update(ChunkSignals(away)) == pytest.approx(expected) and expected > 0.5
    assert nearest.update(ChunkSignals(demo[4])) == pytest.approx(expected)  # the episode score keeps its max
    nearest.reset()
    assert nearest.index == 0.0

    variance = ActionVarianceDetector()
    variance.reset()
    agree = np.repeat(rng.normal(size=(1, 8, 4)), 6, axis=0)
    assert variance.update(ChunkSignals(demo[0], agree)) == pytest.approx(0.0)
    spread = rng.normal(scale=2.0, size=(6, 8, 4))
    assert variance.update(ChunkSignals(demo[0], spread)) == pytest.approx(spread.var(axis=0).mean())
    with pytest.raises(ValueError, match="sampled action chunks"):
        variance.update(ChunkSignals(demo[0]))


def test_scoring_helpers_against_hand_computed_values():
    from monitor.detectors import auroc, balanced_accuracy, best_threshold

    failed = np.array([True, True, False, False, False])
    # 1 of 2 failures caught, 2 of 3 successes left alone: (1/2 + 2/3) / 2.
    assert balanced_accuracy(np.array([True, False, True, False, False]), failed) == pytest.approx(7 / 12)
    assert balanced_accuracy(np.ones(5, bool), failed) == 0.5  # always firing scores chance
    scores = np.array([0.9, 0.4, 0.5, 0.1, 0.2])
    # failure/success pairs ranked right: 0.9 beats all 3; 0.4 beats 0.1 and 0.2 -> 5 of 6.
    assert auroc(scores, failed) == pytest.approx(5 / 6)
    assert auroc(np.array([1.0, 1.0, 1.0, 0.0, 1.0]), failed) == pytest.approx((2 * 1 + 2 * 0.5 * 2) / 6)
    tau = best_threshold(scores, failed)
    assert balanced_accuracy(scores > tau, failed) == pytest.approx(max(
        balanced_accuracy(scores > c, failed) for c in np.linspace(0, 1, 101)))
    with pytest.raises(ValueError):
        balanced_accuracy(np.ones(3, bool), np.ones(3, bool))


def test_final_index_equals_the_running_index_and_leave_one_out_scores_every_demo():
    from monitor.calibration import calibration_indices, leave_one_out_indices, threshold

    rng = np.random.default_rng(6)
    demos = [rng.normal(size=(int(n), 12)) for n in (4, 5, 6)]
    bank = ReferenceBank.from_sequences(demos, ["a", "a", "b"])
    rollout = rng.normal(size=(5, 12))
    detector = FloatDetector(bank.for_task("a"))
    detector.reset()
    running = [detector.update(ChunkSignals(f)) for f in rollout]
    assert detector.final_index(rollout) == pytest.approx(running[-1])
    assert bank.for_task("b").tasks == ("b",) and bank.for_task("c") is None
    assert len(leave_one_out_indices(bank.for_task("a"))) == 2
    calibration = calibration_indices(bank, {"b": [rollout] * 5})
    assert calibration["a"]["source"].endswith("leave one out") and len(calibration["a"]["indices"]) == 2
    assert calibration["b"]["source"] == "5 successful rollouts" and len(calibration["b"]["indices"]) == 5
    assert threshold([], 95.0) == float("inf") and threshold([1.0, 3.0], 50.0) == pytest.approx(2.0)
    shipped = ReferenceBank.from_arrays(bank.as_arrays())
    assert shipped.tasks == ("a", "a", "b")
    with pytest.raises(ValueError, match="malformed FLOAT bank"):
        ReferenceBank.from_arrays({"sequences": np.zeros((2, 3, 4)), "lengths": np.zeros(3)})
