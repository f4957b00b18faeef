"""EpisodeRunner: one episode at a fixed rate, every step labelled and streamed.

Per tick: apply queued operator commands -> observe -> action (policy chunk, or the teleop source
while a takeover is active) -> shield -> send to the arm -> record a labelled Step. Steps are
sealed into chunks (ChunkBuilder) and handed to the uplink's spool writer; nothing here waits on
network, disk or weights.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Callable

import numpy as np

from fleet.v1 import fleet_pb2 as pb
from core import wire
from policy import PolicyRunner
from robot_client.commands import CommandHandler
from robot_client.config import RobotConfig
from robot_client.coordinator import MODE_TO_PROTO, TakeoverCoordinator
from robot_client.driver import Driver
from robot_client.help import HelpRule
from robot_client.monitoring import RobotMonitor
from robot_client.safety import SafetyShield, Watchdog
from robot_client.takeover import Mode
from robot_client.teleop import TeleopSource
from robot_client.uplink import Previews, Uplink

log = logging.getLogger("fleetlearn.robot")


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


class EpisodeRunner:
    def __init__(self, config: RobotConfig, driver: Driver, teleop: TeleopSource, operators: TakeoverCoordinator,
                 commands: CommandHandler, monitor: RobotMonitor, help_rule: HelpRule, shield: SafetyShield,
                 watchdog: Watchdog, uplink: Uplink, previews: Previews, status: dict, stopped: threading.Event,
                 expert_action: Callable[[], np.ndarray] | None = None):
        self.config, self.driver, self.teleop, self.operators, self.commands = config, driver, teleop, operators, commands
        self.monitor, self.help_rule, self.shield, self.watchdog = monitor, help_rule, shield, watchdog
        self.uplink, self.previews, self.status, self.stopped = uplink, previews, status, stopped
        # Reference action for the simulated help rule (the sim's expert); None on real robots.
        self.expert_action = expert_action
        self.period = 1.0 / driver.control_hz
        self.episodes_run = 0
        self.steps_spooled = 0  # steps handed to the uplink (every one must reach the learner)
        self.history: list[dict] = []  # one summary per finished episode, for callers and tests
        self.ticks = 0  # real-time control ticks run (holding for help and pauses not counted)
        self.missed_ticks = 0
        self.missed_since_heartbeat = 0

    def take_missed(self) -> int:
        """Ticks missed since the last call (each heartbeat reports its share)."""
        missed, self.missed_since_heartbeat = self.missed_since_heartbeat, 0
        return missed

    def _spool(self, chunk: pb.EpisodeChunk) -> None:
        self.uplink.spool_chunk(chunk)
        self.steps_spooled += len(chunk.steps)

    def run(self, kind: str, seed: int, task: str, runner: PolicyRunner | None, version: int) -> dict:
        """One episode of `kind` on `task` from `seed`; `runner` runs the policy (None: none yet)."""
        cfg, driver, operators, takeover = self.config, self.driver, self.operators, self.operators.takeover
        episode_id = f"{cfg.robot_id}-{uuid.uuid4().hex[:12]}"
        instruction = driver.tasks.get(task, task)
        builder = ChunkBuilder(
            dict(robot_id=cfg.robot_id, episode_id=episode_id, policy_version=version, task=task,
                 instruction=instruction, kind=wire.KIND_TO_PROTO[kind], seed=seed),
            max_bytes=min(wire.CHUNK_TARGET_BYTES, self.uplink.max_message_bytes // 2),
            max_steps=max(1, int(round(driver.control_hz))))
        self.help_rule.reset()
        self.monitor.start_episode(task, watch=kind == "training" and cfg.help_gate == "float" and runner is not None)
        operators.answer = None
        self.status.update(episode_id=episode_id, step=0, kind=kind,
                           mode=pb.ROBOT_MODE_DEMONSTRATING if kind == "demonstration" else pb.ROBOT_MODE_AUTONOMOUS)
        obs = driver.reset(task, seed)
        self.shield.reset()
        self.watchdog.arm(True)
        self.commands.start_pending_takeover(kind, episode_id)
        total_reward, success, termination = 0.0, False, "timeout"
        human_steps = takeovers = 0
        sources: list[str] = []
        next_tick = time.perf_counter()
        step = num_steps = 0  # num_steps: steps recorded (an episode stopped or ended early has fewer)
        for step in range(driver.max_steps):
            self.commands.apply(True, episode_id, kind, step)
            while takeover.mode is Mode.PAUSED and not self.stopped.is_set():
                self.watchdog.beat()  # paused on purpose: the arm holds, the loop is alive
                time.sleep(self.period)
                self.commands.apply(True, episode_id, kind, step)
                next_tick = time.perf_counter()
            if takeover.mode is Mode.STOPPED or self.stopped.is_set():
                termination = "stopped"
                break
            operators.poll_device(kind, episode_id, step)

            policy_action = runner.act(obs.images, obs.state, instruction) if runner else None
            if runner is not None:
                self.monitor.observe(step, runner, obs.images, obs.state)
            if not takeover.under_takeover and self.monitor.alarm(step):
                operators.wait_for_help(episode_id, step, kind, policy_action, obs, self.commands.apply)
                next_tick = time.perf_counter()
            if operators.answer == "end":
                termination = "ended by operator"
                break

            holding = False
            if kind == "demonstration":
                source, action = "offline_demo", self.teleop.expert_action()
            elif takeover.under_takeover:
                source, action = "intervention", np.asarray(operators.source.action(obs), np.float32)
                holding = operators.source.holding
                takeover.record_step()
                human_steps += 1
            else:
                source, action = "autonomous", policy_action
                if kind == "training" and cfg.help_gate == "rule" and self.expert_action is not None:
                    help_needed = self.help_rule.update(policy_action, self.expert_action(), driver.task_distance())
                    if help_needed:
                        operators.request_help(episode_id, step, *help_needed)

            action = self.shield(action)  # bounds, rate, and never a NaN to the arm
            if runner and source != "autonomous":
                runner.executed_instead(action)  # a long-context policy remembers what was really done
            rl_extras = runner.rl_extras() if runner is not None and kind == "training" else None
            distance_before = driver.task_distance() if rl_extras is not None else None
            next_obs, reward, terminated, truncated, info = driver.step(action)
            self.watchdog.beat()
            if driver.last_sent is not None:  # a robot that reports what it really executed
                action = driver.last_sent
            total_reward += reward
            sources.append(source)
            done = terminated or truncated or step == driver.max_steps - 1
            extras = {"float_index": np.float32(self.monitor.index)} if self.monitor.running else {}
            if kind == "training":  # a takeover's hold-still ticks are recorded but are no labels
                extras["operator_holding"] = np.bool_(holding)
            if rl_extras is not None:  # an RL rollout: the chain, and the task's distance for reward shaping
                extras.update(rl_extras)
                extras["rl/distance"] = np.array([distance_before, driver.task_distance()], np.float32)  # NaN: none
            record = wire.step_to_proto(step, time.time(), obs.images, obs.state, action, policy_action, source,
                                        reward, done, extras)
            sealed = builder.add(record)
            num_steps = step + 1
            if sealed is not None:
                self._spool(sealed)
            obs = next_obs
            self.status["step"] = step
            self.status["mode"] = MODE_TO_PROTO[takeover.mode] if kind != "demonstration" else pb.ROBOT_MODE_DEMONSTRATING
            if self.previews.due(step):
                self.previews.send(obs.images, self.status["mode"], episode_id, step)

            if takeover.under_takeover and operators.source.wants_hand_back():
                takeovers += 1
                operators.end_takeover(episode_id, step)
                if runner:
                    runner.replan()  # from the state the operator left
            if terminated or truncated:
                success = bool(info.get("is_success", False))
                termination = "success" if success else ("failure" if terminated else "timeout")
                break
            if cfg.realtime:
                next_tick = self._pace(next_tick)
        if takeover.under_takeover:
            takeovers += 1
            operators.end_takeover(episode_id, step)
        operators.cancel_help(episode_id, "the episode ended")
        self.watchdog.arm(False)
        self.status.update(mode=pb.ROBOT_MODE_IDLE, kind="")
        if num_steps == 0:  # stopped before its first step: nothing happened, nothing to send
            self.monitor.summary()
            return dict(episode_id=episode_id, kind=kind, task=task, version=version, success=False, steps=0,
                        human_steps=0, takeovers=0, sources=[], termination=termination)
        outcome = pb.EpisodeOutcome(success=success, total_reward=total_reward, num_steps=num_steps,
                                    termination=termination, float_summary=self.monitor.summary())
        self._spool(builder.seal(outcome))
        self.episodes_run += 1
        summary = dict(episode_id=episode_id, kind=kind, task=task, version=version, success=success,
                       steps=num_steps, human_steps=human_steps, takeovers=takeovers, sources=sources,
                       termination=termination, float_fired=outcome.float_summary.fired,
                       float_continued=outcome.float_summary.operator_continued)
        self.history.append(summary)
        log.info("%s %s %s episode v%d: %s in %d steps, %d takeovers, %d human steps", cfg.robot_id, task, kind,
                 version, "success" if success else termination, num_steps, takeovers, human_steps)
        return summary

    def _pace(self, next_tick: float) -> float:
        """Sleeps until the next tick is due; a tick that overran counts as missed. Returns when
        the tick after it is due."""
        self.ticks += 1
        next_tick += self.period
        delay = next_tick - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
            return next_tick
        self.missed_ticks += 1
        self.missed_since_heartbeat += 1
        return time.perf_counter()
