"""The robot's control loop: a fixed-rate tick that never waits on network, disk or weights.

Per tick: apply queued operator commands -> observe -> action (policy chunk, or the teleop source
while a takeover is active) -> send to the arm -> record a labelled Step. Sealed chunks go to a
spool-writer thread; the uplink threads ship them. New weights are swapped in only between
episodes, so every episode runs on exactly one policy version.

Tasks: a robot may run several tasks with the one shared policy. Demonstrations and training
episodes go round the task list in turn (each robot starts at its own offset), so every task gets
an even share of data.

Evaluation: every `eval_every`-th episode runs one of this robot's fixed evaluation seeds (for
every task, seeds interleaved across tasks) until its share for the running version is done; evaluation episodes never ask for help and refuse
takeovers, so a version's success rate is the policy's alone. The robot does not swap to a new
version before its evaluation share of the current one is complete.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fleet.v1 import fleet_pb2 as pb
from core import wire
from policy import Checkpoint, PolicyRunner
from robot_client.driver import Driver, Observation
from robot_client.help import HelpRule, HelpRuleConfig
from robot_client.monitoring import RobotMonitor
from robot_client.takeover import Mode, TakeoverController
from robot_client.teleop import RemoteJog
from core.tls import ClientTLS
from robot_client.safety import ActionLimits, SafetyShield, Watchdog
from robot_client.uplink import Uplink, UplinkConfig

log = logging.getLogger("fleetlearn.robot")

EVAL_SEED_BASE = 1_000_000  # evaluation seeds live far from the training seeds

_MODE_TO_PROTO = {
    Mode.AUTONOMOUS: pb.ROBOT_MODE_AUTONOMOUS, Mode.INTERVENTION: pb.ROBOT_MODE_INTERVENTION,
    Mode.PAUSED: pb.ROBOT_MODE_PAUSED, Mode.STOPPED: pb.ROBOT_MODE_STOPPED,
}
HELP_GATES = ("float", "rule", "off")


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


@dataclass
class RobotConfig:
    robot_id: str
    tasks: tuple[str, ...]
    learner: str
    token: str
    work_dir: Path
    demos: int = 0                    # expert demonstrations to record before running the policy
    eval_seeds: tuple[int, ...] = ()  # indices into the fleet's evaluation seed list
    eval_every: int = 2               # every n-th episode is an evaluation while the share lasts
    max_episodes: int | None = None
    realtime: bool = True             # False runs ticks back to back (tests, benchmarks)
    operator_segment_steps: int = 20
    help: HelpRuleConfig = field(default_factory=HelpRuleConfig)
    # When a training episode asks for a human: "float" (FLOAT index above tau: the robot holds
    # still until an operator answers), "rule" (the fixed expert-disagreement rule of the sim,
    # the robot keeps going meanwhile), or "off".
    help_gate: str = "float"
    help_wait_s: float = 60.0  # a robot holding for help gives up waiting after this long
    preview_hz: float = 4.0  # live camera pictures for the dashboard (0: none)
    seed: int = 0
    tls: ClientTLS | None = None  # the learner's CA (and this robot's certificate for mTLS); None: plaintext
    ack_log: bool = False  # log every chunk's ack latency to work_dir/acks.csv (soak benchmarks)

    def __post_init__(self):
        if self.help_gate not in HELP_GATES:
            raise ValueError(f"help_gate must be one of {HELP_GATES}, got {self.help_gate!r}")


class ChunkBuilder:
    """Accumulates steps and seals chunks below a byte budget (and about one second of data)."""

    def __init__(self, header: dict, max_bytes: int, max_steps: int):
        self.header = header
        self.max_bytes = max_bytes
        self.max_steps = max_steps
        self.sequence = 0
        self.steps: list[pb.Step] = []
        self.bytes = 0

    def add(self, step: pb.Step) -> pb.EpisodeChunk | None:
        size = step.ByteSize() + 16
        sealed = None
        if self.steps and (self.bytes + size > self.max_bytes or len(self.steps) >= self.max_steps):
            sealed = self.seal()
        self.steps.append(step)
        self.bytes += size
        return sealed

    def seal(self, outcome: pb.EpisodeOutcome | None = None) -> pb.EpisodeChunk:
        chunk = pb.EpisodeChunk(sequence=self.sequence, steps=self.steps, **self.header)
        if outcome is not None:
            chunk.episode_end = True
            chunk.outcome.CopyFrom(outcome)
        self.sequence += 1
        self.steps, self.bytes = [], 0
        return chunk


class RobotClient:
    def __init__(self, config: RobotConfig, driver: Driver, teleop, expert_action=None):
        self.config = config
        self.driver = driver
        self.teleop = teleop  # the robot's own teleop device (a leader arm, or the sim's scripted operator)
        jog_dims = getattr(driver, "jog_dims", None)
        self.remote = RemoteJog(driver, jog_dims) if jog_dims else None  # a person jogging from the dashboard
        self.source = teleop  # whoever drives during the current takeover: teleop or remote
        self._assess_takeover = False  # the operator of this takeover still judges a help request (simulated)
        self._pending_takeover: pb.LearnerCommand | None = None  # a remote takeover sent between episodes
        self._preview_every = max(1, round(driver.control_hz / config.preview_hz)) if config.preview_hz > 0 else 0
        self._preview_camera = "front" if "front" in driver.cameras else next(iter(driver.cameras))
        # Reference action for the simulated help rule (the sim's expert); None on real robots.
        self.expert_action = expert_action
        self.takeover = TakeoverController()
        self.help_rule = HelpRule(config.help)
        self.monitor = RobotMonitor()
        self._answer: str | None = None  # an operator's answer to a help request, while one is open
        self._help_open = False  # a help request no operator has answered yet
        self.rng = np.random.default_rng(config.seed)
        self.checkpoint: Checkpoint | None = None
        self.eval_pending: list[tuple[str, int]] = []  # (task, index into the evaluation seed list)
        self.episodes_run = 0
        self.steps_spooled = 0  # steps handed to the uplink (every one must reach the learner)
        # Every action passes the shield; the watchdog holds the arm if the loop stops acting.
        self.shield = SafetyShield(ActionLimits.of(driver), hold_action=getattr(driver, "hold_action", None))
        self.watchdog = Watchdog(getattr(driver, "hold", lambda: None), bound_s=max(0.5, 5.0 / driver.control_hz),
                                 name=config.robot_id)
        self.spool_write_failures = 0
        self._closing = threading.Event()
        self.task = config.tasks[0]
        self._turns = {"demonstration": 0, "training": 0}
        self._group: tuple[int, int, str, int] | None = None  # RL rollout group: (version, seed, task, repeat)
        self.history: list[dict] = []  # one summary per finished episode, for callers and tests
        self.missed_ticks = 0
        self.ticks = 0  # real-time control ticks run (holding for help and pauses not counted)
        self.missed_since_heartbeat = 0
        self.stopped = threading.Event()
        self._status = {"mode": pb.ROBOT_MODE_IDLE, "episode_id": "", "step": 0, "kind": ""}
        self._spool_queue: queue.Queue = queue.Queue()
        embodiment = wire.embodiment_to_proto(driver.robot_type, driver.cameras, driver.state_dim,
                                              driver.action_dim, driver.control_hz)
        self.uplink = Uplink(
            UplinkConfig(address=config.learner, token=config.token, robot_id=config.robot_id,
                         spool_dir=config.work_dir / "spool", weights_dir=config.work_dir / "weights",
                         tls=config.tls, ack_log=config.work_dir / "acks.csv" if config.ack_log else None),
            embodiment, driver.tasks, self._heartbeat)
        self.uplink.running_version = lambda: self.version
        self._spool_writer = threading.Thread(target=self._write_spool, name="spool-writer", daemon=True)
        self.period = 1.0 / driver.control_hz

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
        return self.rl_sampling is not None and not getattr(self.driver, "serves_rl", False)

    # -- background helpers --------------------------------------------------------------------

    def _heartbeat(self) -> pb.Heartbeat:
        missed, self.missed_since_heartbeat = self.missed_since_heartbeat, 0
        return pb.Heartbeat(robot_id=self.config.robot_id, sent_at=time.time(), mode=self._status["mode"],
                            episode_id=self._status["episode_id"], step_index=self._status["step"],
                            policy_version=self.version, task=self.task,
                            spooled_chunks=self._spool_queue.qsize() + len(self.uplink.spool), missed_ticks=missed,
                            float_index=self.monitor.index, float_threshold=self.monitor.tau if self.monitor.running else 0.0,
                            episode_kind=wire.KIND_TO_PROTO.get(self._status["kind"], pb.EPISODE_KIND_UNSPECIFIED),
                            max_steps=self.driver.max_steps)

    def _write_spool(self) -> None:
        """Sealed chunks to the spool. A write that fails (disk full, I/O error) is retried until
        it succeeds; the chunk waits in memory meanwhile, so no step is dropped."""
        while True:
            chunk = self._spool_queue.get()
            if chunk is None:
                return
            delay = 0.1
            while True:
                try:
                    self.uplink.spool.put(chunk)
                    break
                except OSError as exc:
                    self.spool_write_failures += 1
                    if self._closing.is_set() and delay >= 1.0:  # shutting down and still failing
                        log.error("%s: DROPPING chunk %s/%d (%d steps): the spool cannot be written (%s) and "
                                  "the robot is stopping", self.config.robot_id, chunk.episode_id, chunk.sequence,
                                  len(chunk.steps), exc)
                        break
                    log.error("%s: cannot spool chunk %s/%d (%s); retrying in %.1f s", self.config.robot_id,
                              chunk.episode_id, chunk.sequence, exc, delay)
                    time.sleep(delay)
                    delay = min(delay * 2, 5.0)

    # -- lifecycle -----------------------------------------------------------------------------

    def run(self) -> None:
        self._spool_writer.start()
        self.uplink.start()
        try:
            while not self.stopped.is_set():
                if self.config.max_episodes is not None and self.episodes_run >= self.config.max_episodes:
                    break
                self._apply_commands(in_episode=False)
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
        self._closing.set()
        self._spool_queue.put(None)
        self._spool_writer.join(timeout=10)
        self.uplink.stop(drain_s=drain_s)
        self.monitor.close()
        self.watchdog.close()
        self.driver.close()
        close_teleop = getattr(self.teleop, "close", None)  # a device of its own (LeRobot) disconnects too
        if close_teleop is not None:
            close_teleop()
        self.write_stats()

    def write_stats(self) -> None:
        """The control loop's timing and FLOAT's queue at exit, in work_dir/stats.json (benchmarks
        and the demo read it): missed ticks are ticks that overran their period."""
        worker = self.monitor.worker
        stats = dict(ticks=self.ticks, missed_ticks=self.missed_ticks, episodes=self.episodes_run,
                     steps_spooled=self.steps_spooled, spool_write_failures=self.spool_write_failures,
                     watchdog_holds=self.watchdog.holds, **{f"shield_{k}": v for k, v in self.shield.counts.items()},
                     float_chunks_scored=worker.processed if worker else 0,
                     float_chunks_dropped=worker.dropped if worker else 0)
        self.config.work_dir.mkdir(parents=True, exist_ok=True)
        (self.config.work_dir / "stats.json").write_text(json.dumps(stats, indent=1))

    def _maybe_swap(self) -> None:
        if self.eval_pending and self.checkpoint is not None:
            return  # finish this version's evaluation share first
        checkpoint = self.uplink.standby.take()
        if checkpoint is None:
            return
        mismatch = embodiment_mismatch(checkpoint.policy.config, self.driver)
        if mismatch:
            raise EmbodimentMismatch(f"{self.config.robot_id} ({self.driver.robot_type}) cannot run policy version "
                                     f"{checkpoint.version}: {mismatch}")
        previous = self.version
        torch.manual_seed(self.config.seed)
        self.checkpoint = checkpoint
        self.monitor.load(checkpoint)
        self.eval_pending = [(task, index) for index in self.config.eval_seeds for task in self.config.tasks]
        log.info("%s swapped policy %d -> %d", self.config.robot_id, previous, checkpoint.version)

    # -- commands ------------------------------------------------------------------------------

    def _apply_commands(self, in_episode: bool, episode_id: str = "", kind: str = "", step: int = 0) -> None:
        while True:
            try:
                command = self.uplink.commands.get_nowait()
            except queue.Empty:
                return
            body = command.WhichOneof("body")
            accepted, detail = True, ""
            if body == "jog":  # many per second while a key is held: applied, never acknowledged
                self._jog(command.jog)
                continue
            if body == "take_over":
                accepted, detail = self._take_over(command, in_episode, kind, episode_id, step)
            elif body == "hand_back":
                if self._pending_takeover is not None:
                    pending, self._pending_takeover = self._pending_takeover.take_over, None
                    self._report_takeover_ended(episode_id, pending.operator_id, 0, step)
                    detail = "the pending takeover was withdrawn"
                elif not self.takeover.holds_takeover:
                    accepted, detail = False, "nobody was driving"
                self._end_takeover(episode_id, step)
            elif body == "pause":
                self.takeover.pause()
            elif body == "resume":
                self.takeover.resume()
            elif body == "stop":
                self.takeover.stop()
                self.stopped.set()
            elif body in ("continue_episode", "end_episode"):
                if in_episode:
                    self._answer = "continue" if body == "continue_episode" else "end"
                    if self.takeover.under_takeover:
                        self._end_takeover(episode_id, step)
                else:
                    accepted, detail = False, "no episode is running"
            elif body == "set_float_threshold":
                self.monitor.set_percentile(command.set_float_threshold.task, command.set_float_threshold.percentile)
            elif body == "set_task":
                if command.set_task.task in self.driver.tasks:
                    self.config.tasks = (command.set_task.task,)
                else:
                    accepted, detail = False, f"this robot runs {sorted(self.driver.tasks)}"
                    log.warning("%s: ignoring set_task %r (this robot runs %s)", self.config.robot_id,
                                command.set_task.task, sorted(self.driver.tasks))
            self._acknowledge(command, accepted, detail, episode_id, step)

    def _take_over(self, command: pb.LearnerCommand, in_episode: bool, kind: str, episode_id: str,
                   step: int) -> tuple[bool, str]:
        """Hands the arm to an operator, or refuses (the operator is then given back at once).

        A remote takeover (a person at the dashboard) sent between episodes waits for the first
        step of the next training episode; evaluation episodes are never taken over, so a
        version's success rate stays the policy's own."""
        order = command.take_over
        problem = None
        if order.remote and self.remote is None:
            problem = "this robot cannot be driven from afar (its driver declares no jog dimensions)"
        elif not order.remote and not getattr(self.teleop, "can_drive", True):
            problem = "this robot has no teleop device of its own"
        elif order.remote and (not in_episode or kind != "training"):
            self._pending_takeover = command
            return True, "takes effect at the next training episode"
        elif not in_episode:
            problem = "no episode is running"
        elif kind != "training":
            problem = f"{kind} episodes are not taken over"
        elif not self.takeover.take_over(order.operator_id):
            problem = f"the robot is {self.takeover.mode.value}"
        if problem:
            self._report_takeover_ended(episode_id, order.operator_id, 0, step)
            return False, problem
        self._help_open = False
        self.source = self.remote if order.remote else self.teleop
        self._assess_takeover = order.assess
        self.source.begin(order.operator_id)
        log.info("%s: %s took over at step %d%s", self.config.robot_id, order.operator_id, step,
                 " (remote)" if order.remote else "")
        return True, ""

    def _jog(self, jog: pb.Jog) -> None:
        if not (self.takeover.under_takeover and self.source is self.remote and jog.operator_id == self.remote.operator_id):
            return  # a late jog after a hand-back, or from someone who is not driving
        try:
            self.remote.jog(jog.dx, jog.dy, jog.dz, jog.duration_s, jog.gripper if jog.HasField("gripper") else None)
        except ValueError as exc:
            log.warning("%s: ignoring jog: %s", self.config.robot_id, exc)

    def _acknowledge(self, command: pb.LearnerCommand, accepted: bool, detail: str, episode_id: str, step: int) -> None:
        self.uplink.send(pb.RobotMessage(command_applied=pb.CommandApplied(
            robot_id=self.config.robot_id, command_id=command.command_id, accepted=accepted, detail=detail,
            episode_id=episode_id, step_index=step, applied_at=time.time())))

    def _send_preview(self, obs: Observation, episode_id: str, step: int) -> None:
        """A live picture for the dashboard; the uplink's thread encodes it (PNG), not the control loop."""
        pixels, mode, sent_at = obs.images[self._preview_camera], self._status["mode"], time.time()
        self.uplink.send(lambda: pb.RobotMessage(preview=pb.Preview(
            robot_id=self.config.robot_id, image=wire.png_image_to_proto(self._preview_camera, pixels),
            mode=mode, episode_id=episode_id, step_index=step, sent_at=sent_at)), droppable=True)

    def _end_takeover(self, episode_id: str, step: int) -> None:
        ended = self.takeover.hand_back()
        if ended:
            self._report_takeover_ended(episode_id, ended[0], ended[1], step)
            self.help_rule.after_takeover()
            self.monitor.restart(step)

    def _report_takeover_ended(self, episode_id: str, operator_id: str, human_steps: int, step: int) -> None:
        self.uplink.send(pb.RobotMessage(takeover_ended=pb.TakeoverEnded(
            robot_id=self.config.robot_id, episode_id=episode_id, operator_id=operator_id,
            step_index=step, human_steps=human_steps)))

    # -- one episode ---------------------------------------------------------------------------

    def run_episode(self, kind: str, seed: int, task: str | None = None, sampler_seed: int | None = None) -> dict:
        cfg = self.config
        task = task or cfg.tasks[0]
        self.task = task
        episode_id = f"{cfg.robot_id}-{uuid.uuid4().hex[:12]}"
        if kind == "training" and self.refuses_rl:
            raise RLRefused(f"{cfg.robot_id} ({self.driver.robot_type}) does not serve RL rollouts: policy version "
                            f"{self.version} is trained by RL in simulation, and this robot stands in for a real one")
        runner = (PolicyRunner(self.checkpoint.policy, seed if sampler_seed is None else sampler_seed, rl=self.rl_sampling)
                  if self.checkpoint else None)
        instruction = self.driver.tasks.get(task, task)
        builder = ChunkBuilder(
            dict(robot_id=cfg.robot_id, episode_id=episode_id, policy_version=self.version, task=task,
                 instruction=instruction, kind=wire.KIND_TO_PROTO[kind], seed=seed),
            max_bytes=min(wire.CHUNK_TARGET_BYTES, self.uplink.max_message_bytes // 2),
            max_steps=max(1, int(round(self.driver.control_hz))))
        self.help_rule.reset()
        self.monitor.start_episode(task, watch=kind == "training" and cfg.help_gate == "float" and runner is not None)
        self._answer = None
        self._status.update(episode_id=episode_id, step=0, kind=kind,
                            mode=pb.ROBOT_MODE_DEMONSTRATING if kind == "demonstration" else pb.ROBOT_MODE_AUTONOMOUS)
        obs = self.driver.reset(task, seed)
        self.shield.reset()
        self.watchdog.arm(True)
        if self._pending_takeover is not None and kind == "training":  # a person asked for it meanwhile
            command, self._pending_takeover = self._pending_takeover, None
            self._acknowledge(command, *self._take_over(command, True, kind, episode_id, 0), episode_id, 0)
        total_reward, success, termination = 0.0, False, "timeout"
        human_steps = takeovers = 0
        sources: list[str] = []
        next_tick = time.perf_counter()
        step = num_steps = 0  # num_steps: steps recorded (an episode stopped or ended early has fewer)
        for step in range(self.driver.max_steps):
            self._apply_commands(True, episode_id, kind, step)
            while self.takeover.mode is Mode.PAUSED and not self.stopped.is_set():
                self.watchdog.beat()  # paused on purpose: the arm holds, the loop is alive
                time.sleep(self.period)
                self._apply_commands(True, episode_id, kind, step)
                next_tick = time.perf_counter()
            if self.takeover.mode is Mode.STOPPED or self.stopped.is_set():
                termination = "stopped"
                break

            poll = getattr(self.teleop, "poll", None)
            if poll is not None:  # a teleop device with its own events (LeRobot gamepad, keyboard)
                poll()
                if kind == "training" and not self.takeover.under_takeover and self.teleop.wants_take_over():
                    command = pb.LearnerCommand(take_over=pb.TakeOver(operator_id=self.teleop.operator_id))
                    self._take_over(command, True, kind, episode_id, step)

            policy_action = runner.act(obs.images, obs.state, instruction) if runner else None
            if runner is not None:
                self.monitor.observe(step, runner, obs.images, obs.state)
            if not self.takeover.under_takeover and self.monitor.alarm(step):
                self._wait_for_help(episode_id, step, kind, policy_action, obs)
                next_tick = time.perf_counter()
            if self._answer == "end":
                termination = "ended by operator"
                break

            if kind == "demonstration":
                source, action = "offline_demo", self.teleop.expert_action()
            elif self.takeover.under_takeover:
                source, action = "intervention", np.asarray(self.source.action(obs), np.float32)
                self.takeover.record_step()
                human_steps += 1
            else:
                source, action = "autonomous", policy_action
                if kind == "training" and cfg.help_gate == "rule" and self.expert_action is not None:
                    help_needed = self.help_rule.update(policy_action, self.expert_action(), self._task_distance())
                    if help_needed:
                        self._request_help(episode_id, step, *help_needed)

            action = self.shield(action)  # bounds, rate, and never a NaN to the arm
            if runner and source != "autonomous":
                runner.executed_instead(action)  # a long-context policy remembers what was really done
            rl_extras = runner.rl_extras() if runner is not None and kind == "training" else None
            distance_before = self._task_distance() if rl_extras is not None else None
            next_obs, reward, terminated, truncated, info = self.driver.step(action)
            self.watchdog.beat()
            sent = getattr(self.driver, "last_sent", None)  # a robot that reports what it really executed
            if sent is not None:
                action = sent
            total_reward += reward
            sources.append(source)
            done = terminated or truncated or step == self.driver.max_steps - 1
            extras = {"float_index": np.float32(self.monitor.index)} if self.monitor.running else {}
            if rl_extras is not None:  # an RL rollout: the chain, and the task's distance for reward shaping
                extras.update(rl_extras)
                extras["rl/distance"] = np.array([distance_before, self._task_distance()], np.float32)  # NaN: none
            record = wire.step_to_proto(step, time.time(), obs.images, obs.state, action, policy_action, source,
                                        reward, done, extras)
            sealed = builder.add(record)
            num_steps = step + 1
            if sealed is not None:
                self._spool_queue.put(sealed)
                self.steps_spooled += len(sealed.steps)
            obs = next_obs
            self._status["step"] = step
            self._status["mode"] = _MODE_TO_PROTO[self.takeover.mode] if kind != "demonstration" else pb.ROBOT_MODE_DEMONSTRATING
            if self._preview_every and step % self._preview_every == 0:
                self._send_preview(obs, episode_id, step)

            if self.takeover.under_takeover and self.source.wants_hand_back():
                takeovers += 1
                self._end_takeover(episode_id, step)
                if runner:
                    runner.replan()  # from the state the operator left
            if terminated or truncated:
                success = bool(info.get("is_success", False))
                termination = "success" if success else ("failure" if terminated else "timeout")
                break
            if cfg.realtime:
                self.ticks += 1
                next_tick += self.period
                delay = next_tick - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                else:
                    self.missed_ticks += 1
                    self.missed_since_heartbeat += 1
                    next_tick = time.perf_counter()
        if self.takeover.under_takeover:
            takeovers += 1
            self._end_takeover(episode_id, step)
        self._cancel_help(episode_id, "the episode ended")
        self.watchdog.arm(False)
        self._status.update(mode=pb.ROBOT_MODE_IDLE, kind="")
        if num_steps == 0:  # stopped before its first step: nothing happened, nothing to send
            self.monitor.summary()
            return dict(episode_id=episode_id, kind=kind, task=task, version=self.version, success=False, steps=0,
                        human_steps=0, takeovers=0, sources=[], termination=termination)
        outcome = pb.EpisodeOutcome(success=success, total_reward=total_reward, num_steps=num_steps,
                                    termination=termination, float_summary=self.monitor.summary())
        last = builder.seal(outcome)
        self._spool_queue.put(last)
        self.steps_spooled += len(last.steps)
        self.episodes_run += 1
        summary = dict(episode_id=episode_id, kind=kind, task=task, version=self.version, success=success,
                       steps=num_steps, human_steps=human_steps, takeovers=takeovers, sources=sources,
                       termination=termination, float_fired=outcome.float_summary.fired,
                       float_continued=outcome.float_summary.operator_continued)
        self.history.append(summary)
        log.info("%s %s %s episode v%d: %s in %d steps, %d takeovers, %d human steps", cfg.robot_id, task, kind,
                 self.version, "success" if success else termination, num_steps, takeovers, human_steps)
        return summary

    def _task_distance(self) -> float | None:
        """The driver's distance to the goal (metres), where its task measures one."""
        return getattr(self.driver, "task_distance", lambda: None)()

    def _request_help(self, episode_id: str, step: int, reason: str, score: float, threshold: float = 0.0,
                      holding: bool = False) -> None:
        self.uplink.send(pb.RobotMessage(help=pb.HelpRequest(
            robot_id=self.config.robot_id, episode_id=episode_id, step_index=step, policy_version=self.version,
            reason=reason, score=score, threshold=threshold, holding=holding)))
        self._help_open = True
        self.help_rule.after_takeover()  # do not repeat the request every tick while waiting

    def _cancel_help(self, episode_id: str, reason: str) -> None:
        if self._help_open:
            self._help_open = False
            self.uplink.send(pb.RobotMessage(help_cancelled=pb.HelpCancelled(
                robot_id=self.config.robot_id, episode_id=episode_id, reason=reason)))

    def _wait_for_help(self, episode_id: str, step: int, kind: str, policy_action: np.ndarray | None,
                       obs: Observation) -> None:
        """FLOAT fired: hold still (no step is taken or recorded) until an operator answers, by
        taking over, saying continue or ending the episode; or give up after `help_wait_s`.
        An assigned simulated operator first judges whether the robot is really in trouble
        (`assess`); a person at the dashboard answers with the matching command instead."""
        cfg = self.config
        self._request_help(episode_id, step, "float", self.monitor.index, self.monitor.tau, holding=True)
        self._status["mode"] = pb.ROBOT_MODE_WAITING_FOR_HELP
        self._answer = None
        deadline = time.monotonic() + cfg.help_wait_s
        next_preview = 0.0
        while self._answer is None:
            self.watchdog.beat()  # holding still on purpose while a person decides
            if self._preview_every and time.monotonic() >= next_preview:  # the dashboard shows what it holds
                self._send_preview(obs, episode_id, step)
                next_preview = time.monotonic() + 1.0
            self._apply_commands(True, episode_id, kind, step)
            if self.takeover.under_takeover and self._answer is None:
                # A simulated operator judges the request first; a person has already chosen.
                assess = getattr(self.source, "assess", None) if self._assess_takeover else None
                self._answer = assess(policy_action) if assess is not None and policy_action is not None else "take_over"
                if self._answer != "take_over":
                    self._end_takeover(episode_id, step)
            elif self._answer is None and (time.monotonic() > deadline or self.stopped.is_set()
                                           or self.takeover.mode is Mode.STOPPED):
                self._answer = "timeout"
                self._cancel_help(episode_id, f"no answer within {cfg.help_wait_s:.0f} s")
            elif self._answer is None:
                time.sleep(min(self.period, 0.05))
        if self._answer == "continue":
            self.monitor.continued = True
        log.info("%s: help request at step %d answered: %s", cfg.robot_id, step, self._answer)
        if self._answer != "end":  # only "end" outlives the wait (the episode loop acts on it)
            self.monitor.restart(step)
            self._status["mode"] = _MODE_TO_PROTO[self.takeover.mode]
            self._answer = None
