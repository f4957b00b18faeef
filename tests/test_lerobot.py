"""Physical arms through LeRobot, tested with LeRobot's real classes and the fleet's MuJoCo arm
registered as a LeRobot robot (fleet_lerobot/sim_arm.py). Runs in the LeRobot environment
(`make test-lerobot`); the main environment has no LeRobot and skips this module."""

from __future__ import annotations

import threading

import numpy as np
import pytest

pytest.importorskip("lerobot", reason="LeRobot is an optional extra in its own environment: make test-lerobot")

from conftest import TOKEN, wait_for  # noqa: E402
from fleet.v1 import fleet_pb2 as pb  # noqa: E402

SMALL = dict(d_model=32, n_heads=2, n_layers=1, keypoints=8, encoder_image_size=32)
INSTRUCTION = "move the gripper to the magenta ball"


def publish_policy(data_dir, state_dim: int = 7, version: int = 0) -> None:
    import torch

    from learner.versions import VersionRegistry
    from policy import PolicyConfig, VLAPolicy, save_checkpoint

    torch.manual_seed(0)
    config = PolicyConfig(vocab=tuple(INSTRUCTION.split()), state_dim=state_dim, **SMALL)
    registry = VersionRegistry(data_dir)
    save_checkpoint(registry.checkpoint_dir(version), VLAPolicy(config).eval(), version)
    registry.add(version, {"test": True})
    registry.publish(version, note="test")
    registry.close()


class LeRobotRobotThread:
    """A RobotClient driving a LeRobot-built robot, with a LeRobot teleoperator, on its own
    thread (the sim arm's EGL context belongs to the thread that built it)."""

    def __init__(self, work_dir, address, robot_id, robot_args: dict, teleop_args: dict | None,
                 teleop_type: str = "fleet_expert", **config):
        from robot_client.loop import RobotClient, RobotConfig

        self.error: BaseException | None = None
        self.client = None
        built = threading.Event()

        def run():
            from fleet_lerobot.devices import build_robot, build_teleoperator
            from fleet_lerobot.driver import LeRobotDriver, LeRobotTeleop
            from robot_client.teleop import NoOperator

            try:
                robot = build_robot("fleet_sim_arm", {"id": robot_id, **robot_args})
                driver = LeRobotDriver(robot, {"reach": INSTRUCTION}, max_steps=40)
                teleop = (LeRobotTeleop(build_teleoperator(teleop_type, {"arm_id": robot_id, **teleop_args}), driver)
                          if teleop_args is not None else NoOperator())
                self.client = RobotClient(RobotConfig(robot_id=robot_id, tasks=("reach",), learner=address, token=TOKEN,
                                                      work_dir=work_dir / robot_id, help_gate="off",
                                                      **{"realtime": False, **config}), driver, teleop)
                built.set()
                self.client.run()
            except BaseException as error:  # noqa: BLE001 - the test reads it
                self.error = error
                built.set()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert built.wait(60)

    def join(self, timeout: float = 180) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive()


def test_the_sim_arm_is_a_lerobot_robot_built_from_lerobots_registry():
    from lerobot.robots import RobotConfig, make_robot_from_config
    from lerobot.teleoperators import TeleoperatorConfig
    from lerobot.teleoperators.utils import TeleopEvents, make_teleoperator_from_config

    import fleet_lerobot.sim_arm  # noqa: F401  (registers the plugin's configs)

    robot = make_robot_from_config(RobotConfig.get_choice_class("fleet_sim_arm")(id="arm-a", max_delta=0.5))
    assert type(robot).__name__ == "FleetSimArm"
    features = robot.observation_features  # available before connecting, as LeRobot requires
    assert features["front"] == (96, 96, 3) and features["ee.x"] is float
    robot.connect()
    try:
        before = robot.get_observation()["ee.x"]
        sent = robot.send_action({"delta_x": 3.0, "delta_y": 0.0, "delta_z": 0.0, "gripper": -2.0})
        assert sent == {"delta_x": 0.5, "delta_y": 0.0, "delta_z": 0.0, "gripper": -1.0}  # clipped as reported
        assert robot.get_observation()["ee.x"] > before  # it moved
        expert = make_teleoperator_from_config(
            TeleoperatorConfig.get_choice_class("fleet_expert")(arm_id="arm-a", intervene_from=1, intervene_steps=2))
        expert.connect()
        assert set(expert.get_action()) == set(robot.action_features)
        assert expert.get_teleop_events()[TeleopEvents.IS_INTERVENTION] is True  # step 1 of the window [1, 3)
        with pytest.raises(ValueError, match="lacks"):
            robot.send_action({"delta_x": 0.0})
    finally:
        robot.disconnect()
    assert not robot.is_connected


def test_command_line_settings_take_the_type_of_the_config_field():
    from lerobot.cameras.opencv.configuration_opencv import OpenCVCameraConfig

    from fleet_lerobot.devices import _config, build_robot
    from fleet_lerobot.driver import feature_names
    from fleet_lerobot.shim import RobotConfig

    cameras = '{"front": {"type": "opencv", "index_or_path": 0, "width": 96, "height": 96, "fps": 30}}'
    config = _config(RobotConfig, "robot", "so101_follower",
                     {"id": "1", "port": "/dev/ttyACM0", "calibration_dir": "/tmp/cal", "cameras": cameras})
    assert config.id == "1" and str(config.calibration_dir) == "/tmp/cal" and not isinstance(config.calibration_dir, str)
    assert isinstance(config.cameras["front"], OpenCVCameraConfig) and config.cameras["front"].width == 96
    assert _config(RobotConfig, "robot", "fleet_sim_arm", {"max_delta": "0.5"}).max_delta == 0.5
    with pytest.raises(ValueError, match="has no setting 'colour'"):
        build_robot("fleet_sim_arm", {"colour": "red"})
    with pytest.raises(ValueError, match="unknown LeRobot robot type 'nope'; registered: .*so101_follower"):
        build_robot("nope")
    # End-effector teleops (gamepad, keyboard_ee) describe their action as one vector with names.
    assert feature_names({"dtype": "float32", "shape": (4,), "names": {"delta_x": 0, "delta_y": 1, "delta_z": 2,
                                                                        "gripper": 3}}) == ["delta_x", "delta_y",
                                                                                             "delta_z", "gripper"]


def test_lerobots_own_plugin_discovery_finds_the_sim_arm():
    """LeRobot's tools (lerobot-record, lerobot-teleoperate) import installed lerobot_robot_*
    distributions; make setup-lerobot installs plugins/lerobot_robot_fleet_sim. A fresh process,
    so nothing of fleet_lerobot is imported beforehand."""
    import subprocess
    import sys

    code = ("from lerobot.robots import RobotConfig, make_robot_from_config\n"
            "from lerobot.teleoperators import TeleoperatorConfig\n"
            "from lerobot.utils.import_utils import register_third_party_plugins\n"
            "assert 'fleet_sim_arm' not in RobotConfig.get_known_choices()\n"
            "register_third_party_plugins()\n"
            "robot = make_robot_from_config(RobotConfig.get_choice_class('fleet_sim_arm')(id='p'))\n"
            "print(type(robot).__name__, sorted({'fleet_expert', 'fleet_leader'} & set(TeleoperatorConfig.get_known_choices())))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "FleetSimArm ['fleet_expert', 'fleet_leader']"


def test_a_lerobot_teleoperator_takes_over_and_the_label_reaches_the_learner(learner_thread, tmp_path):
    from learner.store import StoreReader

    learner = learner_thread(train=False)
    publish_policy(tmp_path / "learner")
    robot = LeRobotRobotThread(tmp_path, learner.address, "lr-arm-1", {"max_delta": 0.6},
                               {"intervene_from": 5, "intervene_steps": 2}, max_episodes=1)
    robot.join()
    assert robot.error is None, robot.error
    # Both LeRobot devices were disconnected when the client stopped.
    assert not robot.client.driver.robot.is_connected and not robot.client.teleop.teleop.is_connected
    reader = StoreReader(tmp_path / "learner")
    wait_for(lambda: reader.complete_episodes(), 60, "the episode stored")
    row = reader.complete_episodes()[0]
    episode = reader.load_episode(row)
    embodiment = reader.robot_embodiment("lr-arm-1")
    reader.close()
    assert embodiment.robot_type == "lerobot/fleet_sim_arm" and embodiment.state_dim == 7
    assert {c.name for c in embodiment.cameras} == {"front", "wrist"}
    source = episode.arrays["source"]
    human = np.flatnonzero(source == pb.ACTION_SOURCE_INTERVENTION)
    # The teleop's own IS_INTERVENTION events started and ended the takeover.
    assert human.tolist() == [5, 6] and row["human_steps"] == 2 and row["takeovers"] == 1
    assert episode.num_steps > 8  # and handed back when the events ended: the policy drove on
    assert (source[:5] == pb.ACTION_SOURCE_AUTONOMOUS).all() and (source[7:] == pb.ACTION_SOURCE_AUTONOMOUS).all()
    # Steps record what the arm reported as sent: its safety clip, not the command.
    assert np.abs(episode.arrays["action"][:, :3]).max() <= 0.6 + 1e-6
    commanded = episode.arrays["policy_action"][:5, :3]
    np.testing.assert_allclose(episode.arrays["action"][:5, :3], np.clip(commanded, -0.6, 0.6), atol=1e-6)


def test_a_leader_arm_without_events_is_taken_over_and_handed_back_from_the_dashboard(learner_thread, tmp_path):
    import asyncio

    from learner.store import StoreReader

    learner = learner_thread(train=False)
    publish_policy(tmp_path / "learner")
    # The arm clips deltas to 0.2 (6 mm a step): the leader cannot finish the task while we watch.
    robot = LeRobotRobotThread(tmp_path, learner.address, "lr-arm-4", {"max_delta": 0.2}, {}, teleop_type="fleet_leader",
                               max_episodes=1, realtime=True)  # 10 Hz: 4 s of episode to act in

    def on_learner(call):  # FleetControl lives on the learner's event loop
        async def run():
            return call()
        return asyncio.run_coroutine_threadsafe(run(), learner._loop).result(10)

    control = learner.learner.control
    wait_for(lambda: robot.client is not None and robot.client._status.get("step", 0) >= 3, 60, "the episode running")
    on_learner(lambda: control.person_take_over("lr-arm-4", "alice"))  # "At the robot": the leader arm drives
    wait_for(lambda: robot.client.takeover.under_takeover, 10, "the takeover")
    taken_at = robot.client._status["step"]
    wait_for(lambda: robot.client._status["step"] >= taken_at + 5, 10, "five steps under the leader arm")
    on_learner(lambda: control.person_hand_back("lr-arm-4", "alice"))
    robot.join()
    assert robot.error is None, robot.error
    reader = StoreReader(tmp_path / "learner")
    wait_for(lambda: reader.complete_episodes(), 60, "the episode stored")
    row = reader.complete_episodes()[0]
    source = reader.load_episode(row).arrays["source"]
    reader.close()
    human = np.flatnonzero(source == pb.ACTION_SOURCE_INTERVENTION)
    assert row["takeovers"] == 1 and len(human) >= 5 and row["human_steps"] == len(human)
    assert human.tolist() == list(range(human[0], human[-1] + 1))  # one contiguous takeover
    assert source[0] == pb.ACTION_SOURCE_AUTONOMOUS


def test_a_robot_refuses_a_policy_trained_for_another_embodiment(learner_thread, tmp_path):
    from robot_client.loop import EmbodimentMismatch

    learner = learner_thread(train=False)
    publish_policy(tmp_path / "learner", state_dim=6)  # trained for a 6-value state; this arm gives 7
    robot = LeRobotRobotThread(tmp_path, learner.address, "lr-arm-2", {}, None, max_episodes=1)
    robot.join()
    assert isinstance(robot.error, EmbodimentMismatch)
    assert "state of 6 values, this robot gives 7" in str(robot.error)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def test_export_to_a_lerobot_dataset_and_import_it_back(learner_thread, tmp_path):
    from fleet_lerobot.dataset import export_store, import_dataset, load_dataset
    from learner.store import StoreReader

    learner = learner_thread(train=False)
    publish_policy(tmp_path / "learner")
    robot = LeRobotRobotThread(tmp_path, learner.address, "lr-arm-3", {}, {"intervene_from": 3, "intervene_steps": 5},
                               max_episodes=2, demos=1)
    robot.join()
    assert robot.error is None, robot.error
    reader = StoreReader(tmp_path / "learner")
    wait_for(lambda: len(reader.complete_episodes()) == 2, 60, "both episodes stored")
    rows = reader.complete_episodes()
    episodes = [reader.load_episode(row) for row in rows]
    reader.close()

    out = tmp_path / "dataset"
    figures = export_store(tmp_path / "learner", out, progress=None)
    assert figures["episodes"] == 2 and figures["cameras"] == ["front", "wrist"]
    dataset = load_dataset(out)  # LeRobot's own class reads it
    assert dataset.num_episodes == 2 and dataset.num_frames == sum(e.num_steps for e in episodes)
    index = 0
    for row, episode in zip(rows, episodes):
        a = episode.arrays
        for t in range(episode.num_steps):
            frame = dataset[index]
            index += 1
            np.testing.assert_array_equal(frame["observation.state"].numpy(), a["state"][t])
            np.testing.assert_array_equal(frame["action"].numpy(), a["action"][t])
            assert bool(frame["intervention"]) == (a["source"][t] == pb.ACTION_SOURCE_INTERVENTION)
            assert int(frame["policy_version"]) == row["policy_version"]
            assert frame["task"] == row["instruction"]
            for cam in ("front", "wrist"):
                decoded = np.round(frame[f"observation.images.{cam}"].numpy().transpose(1, 2, 0) * 255).astype(np.uint8)
                assert psnr(decoded, a[f"image/{cam}"][t]) >= 35.0
    kinds = [row["kind"] for row in rows]
    assert kinds == ["demonstration", "training"]
    sources = dataset.hf_dataset["action_source"]
    assert int(sources[0]) == 2  # the demonstration's steps: offline_demo

    only = export_store(tmp_path / "learner", tmp_path / "training-only", "kind=training,robot=lr-arm-3", progress=None)
    assert only["episodes"] == 1 and only["frames"] == episodes[1].num_steps
    with pytest.raises(ValueError, match="KEY=VALUE"):
        export_store(tmp_path / "learner", tmp_path / "bad", "colour=red", progress=None)
    with pytest.raises(FileExistsError):
        export_store(tmp_path / "learner", out, progress=None)  # never over an existing dataset

    imported = import_dataset(out, tmp_path / "second", robot_id="lerobot-import", progress=None)
    assert imported == {"episodes": 2, "frames": dataset.num_frames, "robot_id": "lerobot-import"}
    reader = StoreReader(tmp_path / "second")
    again = [reader.load_episode(row) for row in reader.complete_episodes()]
    reader.close()
    assert [e.kind for e in again] == ["demonstration", "demonstration"]
    for original, copy in zip(episodes, again):
        np.testing.assert_array_equal(copy.arrays["state"], original.arrays["state"])
        np.testing.assert_array_equal(copy.arrays["action"], original.arrays["action"])
        assert copy.instruction == original.instruction
        assert psnr(copy.arrays["image/front"], original.arrays["image/front"]) >= 35.0
