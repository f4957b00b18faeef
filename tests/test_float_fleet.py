"""FLOAT in the fleet loop, over real gRPC with the MuJoCo sim: the robot holds and asks for help
when its index crosses tau, an operator answers, the index travels in the stream, and the
learner's percentile feedback reaches the robot."""

from __future__ import annotations

import numpy as np
import torch

from conftest import wait_for
from learner.store import StoreReader
from learner.versions import VersionRegistry
from monitor.float_detector import ReferenceBank
from policy import PolicyConfig, VLAPolicy, save_checkpoint
from test_fleet_e2e import SMALL_POLICY, RobotThread

VOCAB = ("push", "the", "red", "cube", "onto", "green", "target")


def publish_with_float(data_dir, version: int, indices: list[float]) -> None:
    """An untrained small policy that ships a FLOAT bank (random demo features of the right size)
    and the given calibration indices for push_cube."""
    policy = VLAPolicy(PolicyConfig(vocab=VOCAB, **SMALL_POLICY)).eval()
    # Its head predicts the zero (normalised) chunk whatever it sees: an untrained head's random
    # drift would push the arm against a workspace wall, where a test's jog has no room.
    torch.nn.init.zeros_(policy.head.out[1].weight)
    torch.nn.init.zeros_(policy.head.out[1].bias)
    cameras = {cam: torch.zeros((1, 96, 96, 3), dtype=torch.uint8) for cam in policy.config.cameras}
    dim = policy.embed_frames(cameras, torch.zeros(1, policy.config.state_dim)).numel() * policy.config.obs_steps
    rng = np.random.default_rng(0)
    bank = ReferenceBank.from_sequences([rng.normal(size=(6, dim)) for _ in range(3)], ["push_cube"] * 3)
    registry = VersionRegistry(data_dir)
    save_checkpoint(registry.checkpoint_dir(version), policy, version,
                    info={"float": {"push_cube": {"indices": indices, "source": "test"}}},
                    artifacts={"float_bank": bank.as_arrays()})
    registry.add(version, {"test": True})
    registry.publish(version, note="test")
    registry.close()


def test_float_alarm_holds_the_robot_an_operator_answers_and_the_index_is_streamed(learner_thread, tmp_path):
    learner = learner_thread(train=False, operators=1)
    data_dir = tmp_path / "learner"
    publish_with_float(data_dir, 0, indices=[0.0])  # tau = 0: the first scored chunk raises the alarm
    robot = RobotThread(tmp_path, learner.address, "arm-f", max_episodes=3, help_gate="float").start()
    robot.thread.join(timeout=240)
    assert not robot.thread.is_alive(), "robot did not finish its episodes"
    history = robot.client.history
    assert all(s["float_fired"] for s in history)
    # Each alarm was answered: the simulated operator took over (human steps) or said continue.
    assert all(s["human_steps"] > 0 or s["float_continued"] for s in history)
    control = learner.learner.control
    wait_for(lambda: not control.waiting and not control.assignments, 30, "the help queue to empty")
    assert control.help_requests >= len(history) and control.served >= len(history)

    reader = StoreReader(data_dir)
    wait_for(lambda: len(reader.complete_episodes()) == len(history), 60, "every episode stored")
    for row in reader.complete_episodes():
        episode = reader.load_episode(row)
        index = episode.arrays["extra/float_index"]
        assert index.shape[0] == episode.num_steps
        assert np.all(np.isfinite(index)) and index.max() > 0  # scored chunks, recorded per step
        assert episode.arrays["step_index"].tolist() == list(range(episode.num_steps))  # holding records nothing
    reader.close()


def test_a_missed_failure_lowers_the_percentile_and_the_robot_hears_of_it(learner_thread, tmp_path):
    learner = learner_thread(train=False)
    data_dir = tmp_path / "learner"
    publish_with_float(data_dir, 0, indices=[])  # no calibration yet: tau is infinite, FLOAT never fires
    robot = RobotThread(tmp_path, learner.address, "arm-m", max_episodes=10**6, help_gate="float").start()
    try:
        # The untrained policy fails push_cube without FLOAT firing: a false negative, p 95 -> 90.
        wait_for(lambda: robot.client.monitor.percentiles.get("push_cube", 95.0) < 95.0, 120,
                 "the learner's new percentile at the robot")
        assert not robot.client.history[0]["success"] and not robot.client.history[0]["float_fired"]
    finally:
        robot.stop()
    saved = (data_dir / "float_percentiles.json").read_text()
    assert '"push_cube"' in saved
    # More failures may have lowered p further after the robot last heard (it stopped meanwhile).
    assert learner.learner.control.percentiles.get("push_cube") <= robot.client.monitor.percentiles["push_cube"] <= 90
