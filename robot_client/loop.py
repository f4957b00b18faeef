"""RobotClient: one robot's life, episode after episode, on a loop that never waits on network,
disk or weights.

Its parts: `EpisodeRunner` (robot_client/episode.py) runs one episode at a fixed rate and records
every step; `CommandHandler` (commands.py) applies operator commands between ticks;
`TakeoverCoordinator` (coordinator.py) hands the arm to operators and asks for help; `Uplink`
(uplink.py) spools the chunks and talks to the learner on its own threads. What is left here
chooses the next episode and swaps in new weights, only between episodes, so every episode runs
on exactly one policy version.

Tasks: a robot may run several tasks with the one shared policy. Demonstrations and training
episodes go round the task list in turn (each robot starts at its own offset), so every task gets
an even share of data.

Evaluation: every `eval_every`-th episode runs one of this robot's fixed evaluation seeds (for
every task, seeds interleaved across tasks) until its share for the running version is done; evaluation episodes never ask for help and refuse
takeovers, so a version's success rate is the policy's alone. The robot does not swap to a new
version before its evaluation share of the current one is complete, except to go back to an
older version (a rollback: the learner says the running one is worse, so it stops at once), and
it does not evaluate a version again that it has already evaluated in full.
"""

from __future__ import annotations

import json
import logging
import threading
import time

import numpy as np
import torch

from fleet.v1 import fleet_pb2 as pb
from core import wire
from policy import Checkpoint, PolicyRunner
from robot_client.commands import CommandHandler
from robot_client.config import RobotConfig
from robot_client.coordinator import TakeoverCoordinator
from robot_client.driver import Driver
from robot_client.episode import EpisodeRunner
from robot_client.help import HelpRule
from robot_client.monitoring import RobotMonitor
from robot_client.safety import ActionLimits, SafetyShield, Watchdog
from robot_client.takeover import Mode
from robot_client.teleop import RemoteJog, TeleopSource
from robot_client.uplink import Previews, Uplink, UplinkConfig

log = logging.getLogger("fleetlearn.robot")

EVAL_SEED_BASE = 1_000_000  # evaluation seeds live far from the training seeds

__all__ = ["EmbodimentMismatch", "RLRefused", "RobotClient", "RobotConfig", "embodiment_mismatch"]


class EmbodimentMismatch(RuntimeError):
    """The policy the learner serves was trained for a different robot than this one."""


def embodiment_mismatch(policy_config, driver) -> str | None:
    """What differs between the robot a policy was trained for and `driver`'s, or None."""
    problems = []
    cameras = tuple(policy_config.cameras)
    if set(cameras) - set(driver.cameras):
        problems.append(f"the policy reads cameras {sorted(cameras)}, this robot has {sorted(driver.cameras)}")
    if policy_config.state_dim != driver.state_dim:
        problems.append(f"the policy reads a state of {policy_config.state_dim} values, this robot gives "
                        f"{driver.state_dim}")
    if policy_config.action_dim != driver.action_dim:
        problems.append(f"the policy acts in {policy_config.action_dim} dimensions, this robot takes {driver.action_dim}")
    return "; ".join(problems) or None


class RLRefused(RuntimeError):
    """A robot that stands in for a real one was asked to serve an RL rollout."""


class RobotClient:
    def __init__(self, config: RobotConfig, driver: Driver, teleop: TeleopSource, expert_action=None):
        self.config = config
        self.driver = driver
        self.teleop = teleop  # the robot's own teleop device (a leader arm, or the sim's scripted operator)
        self.expert_action = expert_action  # the simulated help rule's reference (the sim's expert), or None
        self.help_rule = HelpRule(config.help)
        self.monitor = RobotMonitor()
        self.rng = np.random.default_rng(config.seed)
        self.checkpoint: Checkpoint | None = None
        self.eval_pending: list[tuple[str, int]] = []  # (task, index into the evaluation seed list)
        self.evaluated: set[int] = set()  # versions whose evaluation share this robot has finished
        # Every action passes the shield; the watchdog holds the arm if the loop stops acting.
        self.shield = SafetyShield(ActionLimits.of(driver), hold_action=driver.hold_action)
        self.watchdog = Watchdog(driver.hold, bound_s=max(0.5, 5.0 / driver.control_hz), name=config.robot_id)
        self.task = config.tasks[0]
        self._turns = {"demonstration": 0, "training": 0}
        self._group: tuple[int, int, str, int] | None = None  # RL rollout group: (version, seed, task, repeat)
        self.stopped = threading.Event()
        self._status = {"mode": pb.ROBOT_MODE_IDLE, "episode_id": "", "step": 0, "kind": ""}
        self.period = 1.0 / driver.control_hz
        embodiment = wire.embodiment_to_proto(driver.robot_type, driver.cameras, driver.state_dim,
                                              driver.action_dim, driver.control_hz)
        self.uplink = Uplink(
            UplinkConfig(address=config.learner, token=config.token, robot_id=config.robot_id,
                         spool_dir=config.work_dir / "spool", weights_dir=config.work_dir / "weights",
                         tls=config.tls, ack_log=config.work_dir / "acks.csv" if config.ack_log else None,
                         device=config.device),
            embodiment, driver.tasks, self._heartbeat, running_version=lambda: self.version)
        previews = Previews(self.uplink, driver.cameras, driver.control_hz, config.preview_hz)
        remote = RemoteJog(driver, driver.jog_dims) if driver.jog_dims else None  # a person jogging from the dashboard
        self.operators = TakeoverCoordinator(config, self.uplink, teleop, remote, self.monitor, self.help_rule,
                                             self.watchdog, previews, self._status, lambda: self.version,
                                             self.stopped, self.period)
        self.takeover = self.operators.takeover
        self.commands = CommandHandler(config, self.uplink, self.operators, self.monitor, driver.tasks, self.stopped)
        self.episodes = EpisodeRunner(config, driver, teleop, self.operators, self.commands, self.monitor,
                                      self.help_rule, self.shield, self.watchdog, self.uplink, previews, self._status,
                                      self.stopped, expert_action)

    # What the episodes did, for callers, tests and stats.json.
    history = property(lambda self: self.episodes.history)
    episodes_run = property(lambda self: self.episodes.episodes_run)
    steps_spooled = property(lambda self: self.episodes.steps_spooled)
    ticks = property(lambda self: self.episodes.ticks)
    missed_ticks = property(lambda self: self.episodes.missed_ticks)

    @property
    def version(self) -> int:
        return self.checkpoint.version if self.checkpoint else -1

    @property
    def rl_sampling(self) -> tuple[int, float] | None:
        """(denoising steps, sigma) when the running version is trained by RL (its checkpoint says
        so): chunks are then sampled as a Gaussian chain and streamed with it."""
        rl = self._rl_info
        return (int(rl["denoise_steps"]), float(rl["sigma"])) if rl else None

    @property
    def rl_group(self) -> int:
        """How many rollouts of one seed the running RL version asks for (1: no groups)."""
        rl = self._rl_info
        return max(1, int(rl.get("group", 1))) if rl else 1

    @property
    def _rl_info(self) -> dict | None:
        """The running version's checkpoint info "rl" (an RL version), or None."""
        return self.checkpoint.meta.get("info", {}).get("rl") if self.checkpoint else None

    @property
    def refuses_rl(self) -> bool:
        """The running version is an RL version and this robot does not serve RL rollouts."""
        return self.rl_sampling is not None and not self.driver.serves_rl

    def _heartbeat(self) -> pb.Heartbeat:
        return pb.Heartbeat(robot_id=self.config.robot_id, sent_at=time.time(), mode=self._status["mode"],
                            episode_id=self._status["episode_id"], step_index=self._status["step"],
                            policy_version=self.version, task=self.task, spooled_chunks=self.uplink.spooled_chunks,
                            missed_ticks=self.episodes.take_missed(), float_index=self.monitor.index,
                            float_threshold=self.monitor.tau if self.monitor.running else 0.0,
                            episode_kind=wire.KIND_TO_PROTO.get(self._status["kind"], pb.EPISODE_KIND_UNSPECIFIED),
                            max_steps=self.driver.max_steps)

    # -- lifecycle -----------------------------------------------------------------------------

    def run(self) -> None:
        self.uplink.start()
        try:
            while not self.stopped.is_set():
                if self.config.max_episodes is not None and self.episodes_run >= self.config.max_episodes:
                    break
                self.commands.apply(in_episode=False)
                if self.takeover.mode is Mode.STOPPED:
                    break
                if self.takeover.mode is Mode.PAUSED:
                    time.sleep(self.period)
                    continue
                if self.episodes_run < self.config.demos:
                    self.run_episode("demonstration", int(self.rng.integers(2**31)), self._next_task("demonstration"))
                    continue
                self._maybe_swap()
                if self.checkpoint is None:
                    self._status["mode"] = pb.ROBOT_MODE_IDLE
                    time.sleep(0.1)  # no policy yet: wait for version 0 without busy-looping
                    continue
                # An RL version on a robot that stands in for a real one: evaluation only.
                evaluation_only = self.refuses_rl
                if self.eval_pending and (evaluation_only or self.episodes_run % self.config.eval_every == 0):
                    task, index = self.eval_pending.pop(0)
                    self.run_episode("evaluation", EVAL_SEED_BASE + index, task)
                elif evaluation_only:
                    self._status["mode"] = pb.ROBOT_MODE_IDLE
                    time.sleep(0.5)  # until a version it may run arrives
                else:
                    self.run_episode("training", *self._next_training_episode())
        finally:
            self.close()

    def _next_training_episode(self) -> tuple[int, str, int]:
        """(seed, task, sampler seed) of the next training episode. An RL version may ask for
        rollouts in groups (checkpoint info rl.group = G): G episodes of the same task and seed,
        each with its own sampler noise, so the learner can compare them with each other."""
        group = self.rl_group
        previous = self._group
        if group > 1 and previous is not None and previous[0] == self.version and previous[3] < group:
            self._group = (previous[0], previous[1], previous[2], previous[3] + 1)
        else:
            self._group = (self.version, int(self.rng.integers(2**31)), self._next_task("training"), 1)
        _, seed, task, repeat = self._group
        return seed, task, (seed + 104_729 * (repeat - 1)) % 2**31

    def _next_task(self, kind: str) -> str:
        """Round-robin over the task list, starting at an offset given by the robot's seed."""
        tasks = self.config.tasks
        task = tasks[(self._turns[kind] + self.config.seed) % len(tasks)]
        self._turns[kind] += 1
        return task

    def close(self, drain_s: float = 5.0) -> None:
        self.uplink.stop(drain_s=drain_s)
        self.monitor.close()
        self.watchdog.close()
        self.driver.close()
        self.teleop.close()  # a device of its own (LeRobot) disconnects too
        self.write_stats()

    def write_stats(self) -> None:
        """The control loop's timing and FLOAT's queue at exit, in work_dir/stats.json (benchmarks
        and the demo read it): missed ticks are ticks that overran their period."""
        worker = self.monitor.worker
        stats = dict(ticks=self.ticks, missed_ticks=self.missed_ticks, episodes=self.episodes_run,
                     steps_spooled=self.steps_spooled, spool_write_failures=self.uplink.spool_writer.failures,
                     watchdog_holds=self.watchdog.holds, **{f"shield_{k}": v for k, v in self.shield.counts.items()},
                     float_chunks_scored=worker.processed if worker else 0,
                     float_chunks_dropped=worker.dropped if worker else 0)
        self.config.work_dir.mkdir(parents=True, exist_ok=True)
        (self.config.work_dir / "stats.json").write_text(json.dumps(stats, indent=1))

    def _maybe_swap(self) -> None:
        running = self.checkpoint.version if self.checkpoint is not None else None
        # A newer version waits until this one's evaluation share is done; a rollback does not.
        checkpoint = self.uplink.standby.take(
            when=lambda version: not (self.eval_pending and running is not None and version > running))
        if checkpoint is None:
            return
        mismatch = embodiment_mismatch(checkpoint.policy.config, self.driver)
        if mismatch:
            raise EmbodimentMismatch(f"{self.config.robot_id} ({self.driver.robot_type}) cannot run policy version "
                                     f"{checkpoint.version}: {mismatch}")
        previous = self.version
        if self.checkpoint is not None and not self.eval_pending:
            self.evaluated.add(previous)
        torch.manual_seed(self.config.seed)
        self.checkpoint = checkpoint
        self.monitor.load(checkpoint)
        self.eval_pending = [] if checkpoint.version in self.evaluated else \
            [(task, index) for index in self.config.eval_seeds for task in self.config.tasks]
        log.info("%s swapped policy %d -> %d", self.config.robot_id, previous, checkpoint.version)

    def run_episode(self, kind: str, seed: int, task: str | None = None, sampler_seed: int | None = None) -> dict:
        task = task or self.config.tasks[0]
        self.task = task
        if kind == "training" and self.refuses_rl:
            raise RLRefused(f"{self.config.robot_id} ({self.driver.robot_type}) does not serve RL rollouts: policy "
                            f"version {self.version} is trained by RL in simulation, and this robot stands in for a "
                            "real one")
        runner = (PolicyRunner(self.checkpoint.policy, seed if sampler_seed is None else sampler_seed, rl=self.rl_sampling)
                  if self.checkpoint else None)
        return self.episodes.run(kind, seed, task, runner, self.version)
