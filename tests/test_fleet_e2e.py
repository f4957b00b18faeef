"""End to end over real gRPC on loopback, with the real MuJoCo sim and real (short) training."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from conftest import TOKEN, free_port, wait_for
from fleet.v1 import fleet_pb2 as pb
from learner.algorithms import make_algorithm
from learner.samplers import LabelledEpisode, WindowIndex
from learner.store import StoreReader
from learner.versions import VersionRegistry
from policy import PolicyConfig, VLAPolicy, save_checkpoint
from robot_client.driver import SimDriver
from robot_client.loop import RobotClient, RobotConfig
from robot_client.operators import OperatorModel
from robot_client.teleop import ScriptedOperator

SMALL_POLICY = dict(d_model=32, n_heads=2, n_layers=1, keypoints=8, encoder_image_size=32)


class RobotThread:
    """A RobotClient on its own thread. The sim is built on that thread: EGL contexts are per thread."""

    def __init__(self, work_dir: Path, address: str, robot_id: str, **config):
        operator_steps = config.pop("operator_steps", 8)
        tasks = tuple(config.pop("tasks", ("push_cube",)))
        max_steps = config.pop("max_steps", None)
        variant = config.pop("variant", "sim")
        self.config = RobotConfig(robot_id=robot_id, tasks=tasks, learner=address, token=TOKEN,
                                  work_dir=work_dir / robot_id, **{"realtime": False, **config})
        self.client: RobotClient | None = None
        self._built = threading.Event()

        def run():
            driver = SimDriver(list(tasks), max_steps=max_steps, variant=variant)
            operator = ScriptedOperator(driver, segment_steps=operator_steps)
            self.client = RobotClient(self.config, driver, operator, expert_action=operator.reference_action)
            self._built.set()
            self.client.run()

        self.thread = threading.Thread(target=run, daemon=True)

    def start(self) -> "RobotThread":
        self.thread.start()
        assert self._built.wait(30)
        return self

    def stop(self) -> None:
        self.client.stopped.set()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive()


def publish_small_policy(data_dir: Path, version: int, registry=None, damage: str | None = None) -> None:
    """Writes a real (untrained) checkpoint as `version` and publishes it, in `registry` (default:
    the store's own). `damage` spoils the weights after their hash is recorded: "tampered" (one
    byte changed) or "truncated" (cut in half), so robots must refuse them."""
    config = PolicyConfig(vocab=("push", "the", "red", "cube", "onto", "green", "target"), **SMALL_POLICY)
    registry = registry or VersionRegistry(data_dir)
    directory = registry.checkpoint_dir(version)
    save_checkpoint(directory, VLAPolicy(config).eval(), version)
    weights = directory / "policy.safetensors"
    if damage == "tampered":
        raw = bytearray(weights.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        weights.write_bytes(bytes(raw))
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    registry.add(version, {"test": damage or True})
    registry.publish(version, note=damage or "test")
    registry.close()


def stored_steps(data_dir: Path, robot_id: str) -> dict[str, tuple[dict, list[int], list[int]]]:
    """episode_id -> (episode row, step indices in storage order, action sources)."""
    reader = StoreReader(data_dir)
    out = {}
    for row in reader.db.execute("SELECT * FROM episodes WHERE robot_id=?", (robot_id,)).fetchall():
        if row["complete"]:
            episode = reader.load_episode(row)
            out[row["episode_id"]] = (dict(row), episode.arrays["step_index"].tolist(),
                                      episode.arrays["source"].tolist())
    reader.close()
    return out


def test_interventions_arrive_labelled_and_are_exactly_the_hg_dagger_labels(learner_thread, tmp_path):
    learner = learner_thread(operators=1, trainer=dict(min_demos=2, bootstrap_updates=20, publish_every_updates=10,
                                                       batch_size=8, policy_overrides=SMALL_POLICY))
    robot = RobotThread(tmp_path, learner.address, "arm-1", demos=2, max_episodes=7).start()
    robot.thread.join(timeout=240)
    assert not robot.thread.is_alive(), "robot did not finish its episodes"
    data_dir = tmp_path / "learner"
    history = robot.client.history
    wait_for(lambda: len(stored_steps(data_dir, "arm-1")) == len(history), 60, "every episode to be stored")
    stored = stored_steps(data_dir, "arm-1")

    codes = {"autonomous": pb.ACTION_SOURCE_AUTONOMOUS, "intervention": pb.ACTION_SOURCE_INTERVENTION,
             "offline_demo": pb.ACTION_SOURCE_OFFLINE_DEMO}
    for summary in history:
        row, indices, sources = stored[summary["episode_id"]]
        assert indices == list(range(summary["steps"]))
        assert sources == [codes[s] for s in summary["sources"]], "labels changed between robot and learner"
        assert row["human_steps"] == summary["human_steps"]
        assert row["takeovers"] == summary["takeovers"], (summary["termination"], "".join(s[0] for s in summary["sources"]))
    assert sum(s["human_steps"] for s in history) > 0, "no operator ever took over"

    # The HG-DAgger loss trains on exactly the human steps: demos + interventions, nothing
    # autonomous, and none of the hold-still ticks that start each takeover (the operator's
    # reaction delay, 2 ticks by default), which the robot marks in the step extra operator_holding.
    algorithm = make_algorithm("hg_dagger")
    reader = StoreReader(data_dir)
    index = WindowIndex(horizon=PolicyConfig().horizon)
    human_steps, trained_steps = set(), set()
    delay, held_steps = OperatorModel().reaction_delay_steps, 0
    for row in reader.complete_episodes():
        episode = reader.load_episode(row)
        source = episode.arrays["source"]
        if row["kind"] == "training":
            held = episode.arrays["extra/operator_holding"].astype(bool).reshape(-1)
            under = source == pb.ACTION_SOURCE_INTERVENTION
            starts = under & ~np.r_[False, under[:-1]]
            assert not np.any(held & ~under), "a hold-still tick outside a takeover"
            assert np.all(held[starts]), "a takeover that did not start with the operator's reaction"
            held_steps += int(held.sum())
        else:
            held = np.zeros(len(source), bool)
        for t, s in enumerate(source):
            if s in (pb.ACTION_SOURCE_INTERVENTION, pb.ACTION_SOURCE_OFFLINE_DEMO) and row["kind"] != "evaluation" \
                    and not held[t]:
                human_steps.add((row["episode_id"], t))
        if not algorithm.wants_episode(row["kind"], bool(row["success"]), row["human_steps"]):
            continue
        position = len(index.episodes)
        index.add(LabelledEpisode(episode, algorithm.step_labels(episode), online=row["kind"] != "demonstration"))
        for pos, t in index.windows:
            if pos == position:
                labels = index.episodes[pos].labels[t:t + index.horizon]
                trained_steps.update((row["episode_id"], t + j) for j in np.flatnonzero(labels))
    assert trained_steps == human_steps
    assert 0 < held_steps <= delay * sum(s["takeovers"] for s in history)

    # And the trainer really trained on them: a version after v0 was published from fleet data.
    registry = VersionRegistry(data_dir)
    wait_for(lambda: (registry.latest() or 0) >= 1, 120, "a version trained on intervention data")


def test_new_version_reaches_every_robot_and_tags_its_steps(learner_thread, tmp_path):
    learner = learner_thread(train=False)
    data_dir = tmp_path / "learner"
    publish_small_policy(data_dir, 0)
    robots = [RobotThread(tmp_path, learner.address, f"arm-{i}", help=_no_help()).start() for i in range(2)]
    try:
        wait_for(lambda: all(r.client.version == 0 for r in robots), 90, "version 0 on every robot")
        publish_small_policy(data_dir, 1)
        wait_for(lambda: all(r.client.version == 1 for r in robots), 90, "version 1 on every robot")

        def tagged_with_v1():
            reader = StoreReader(data_dir)
            found = {row[0] for row in reader.db.execute(
                "SELECT DISTINCT robot_id FROM episodes WHERE policy_version=1 AND complete=1")}
            reader.close()
            return found == {"arm-0", "arm-1"}

        wait_for(tagged_with_v1, 90, "steps tagged with version 1 from both robots")

        registry = VersionRegistry(data_dir)  # roll back: version 0 is published again
        registry.publish(0, note="rollback", rollback=True)
        wait_for(lambda: all(r.client.version == 0 for r in robots), 90, "the rollback on every robot")
    finally:
        for r in robots:
            r.stop()
    for r in robots:  # each episode ran on one version: 0, then 1, then 0 again, never interleaved
        versions = [s["version"] for s in r.client.history]
        changes = [v for i, v in enumerate(versions) if i == 0 or v != versions[i - 1]]
        assert changes in ([0, 1], [0, 1, 0]), changes


def _no_help():
    from robot_client.help import HelpRuleConfig

    return HelpRuleConfig(disagreement=1e9, no_progress_steps=10**9)


def _assert_exactly_once(data_dir: Path, robot: RobotThread) -> None:
    stored = stored_steps(data_dir, robot.client.config.robot_id)
    for summary in robot.client.history:
        assert summary["episode_id"] in stored, f"episode {summary['episode_id']} lost"
        _, indices, _ = stored[summary["episode_id"]]
        assert indices == list(range(summary["steps"])), "a step was lost or stored twice"


def test_learner_killed_mid_episode_loses_nothing_and_stores_nothing_twice(learner_process, tmp_path):
    learner = learner_process(["--no-train"]).start()
    robot = RobotThread(tmp_path, learner.address, "arm-k", demos=10**6, realtime=True).start()
    try:
        wait_for(lambda: robot.client._status["step"] > 5, 60, "the robot to be mid-episode")
        time.sleep(1.5)
        learner.kill()  # SIGKILL: no graceful shutdown
        time.sleep(2.5)  # the robot keeps running and spooling meanwhile
        learner.start()
        wait_for(lambda: len(robot.client.history) >= 3, 60, "more episodes after the restart")
        # The uplink may still be in its reconnect backoff: let it catch up before stopping the robot.
        wait_for(lambda: len(robot.client.uplink.spool) <= 2, 60, "the spool to catch up with the restarted learner")
    finally:
        robot.stop()  # drains the spool before returning
    assert len(robot.client.uplink.spool) == 0
    _assert_exactly_once(tmp_path / "learner", robot)


def test_robot_started_while_learner_down_delivers_its_spool_later(learner_process, tmp_path):
    port = free_port()
    robot = RobotThread(tmp_path, f"127.0.0.1:{port}", "arm-s", demos=2).start()
    try:
        wait_for(lambda: len(robot.client.history) == 2, 60, "two demonstrations recorded offline")
        wait_for(lambda: len(robot.client.uplink.spool) > 0, 10, "chunks in the spool")
        learner_process(["--no-train"], port=port).start()
        wait_for(lambda: len(robot.client.uplink.spool) == 0, 60, "the spool to drain")
    finally:
        robot.stop()
    _assert_exactly_once(tmp_path / "learner", robot)


def test_one_policy_learns_a_task_list_and_is_evaluated_per_task(learner_thread, tmp_path):
    from learner.metrics import version_table
    from policy import load_checkpoint
    from policy.vla import instruction_words

    tasks = ("reach", "press_button")
    learner = learner_thread(operators=1, trainer=dict(min_demos=4, bootstrap_updates=20, publish_every_updates=10_000,
                                                       batch_size=8, policy_overrides=SMALL_POLICY))
    robot = RobotThread(tmp_path, learner.address, "arm-1", tasks=tasks, demos=4, eval_seeds=(0,),
                        max_episodes=8).start()
    robot.thread.join(timeout=240)
    assert not robot.thread.is_alive(), "robot did not finish its episodes"
    history = robot.client.history
    demo_tasks = [h["task"] for h in history if h["kind"] == "demonstration"]
    assert sorted(demo_tasks) == sorted(tasks * 2), "demonstrations do not go round the task list"
    assert sorted(h["task"] for h in history if h["kind"] == "evaluation") == sorted(tasks)

    data_dir = tmp_path / "learner"
    wait_for(lambda: len(stored_steps(data_dir, "arm-1")) == len(history), 60, "every episode to be stored")
    instructions = {row["task"]: row["instruction"] for row, _, _ in stored_steps(data_dir, "arm-1").values()}
    assert instructions == {task: robot.client.driver.tasks[task] for task in tasks}
    # One policy, conditioned on both instructions.
    vocab = set(load_checkpoint(VersionRegistry(data_dir).checkpoint_dir(0)).policy.config.vocab)
    assert all(set(instruction_words(instructions[task])) <= vocab for task in tasks)
    reader = StoreReader(data_dir)
    table = version_table(reader, robots=1, operators=1, eval_seeds=len(tasks))
    reader.close()
    assert table[0]["eval_complete"] and set(table[0]["task_success"]) == set(tasks)
