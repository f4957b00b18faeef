"""TakeoverCoordinator: who drives the arm, and the robot's requests for a human.

It hands the arm to an operator (the robot's own teleop device, or a person jogging from the
dashboard) and back, reports takeovers and help requests to the learner, and holds the robot
still while a FLOAT alarm waits for an answer. All of it runs on the control loop's thread, at
tick boundaries, so every step's label matches who chose its action.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import numpy as np

from fleet.v1 import fleet_pb2 as pb
from robot_client.config import RobotConfig
from robot_client.driver import Observation
from robot_client.help import HelpRule
from robot_client.monitoring import RobotMonitor
from robot_client.safety import Watchdog
from robot_client.takeover import Mode, TakeoverController
from robot_client.teleop import RemoteJog, TeleopSource
from robot_client.uplink import Previews, Uplink

log = logging.getLogger("fleetlearn.robot")

MODE_TO_PROTO = {
    Mode.AUTONOMOUS: pb.ROBOT_MODE_AUTONOMOUS, Mode.INTERVENTION: pb.ROBOT_MODE_INTERVENTION,
    Mode.PAUSED: pb.ROBOT_MODE_PAUSED, Mode.STOPPED: pb.ROBOT_MODE_STOPPED,
}


class TakeoverCoordinator:
    def __init__(self, config: RobotConfig, uplink: Uplink, teleop: TeleopSource, remote: RemoteJog | None,
                 monitor: RobotMonitor, help_rule: HelpRule, watchdog: Watchdog, previews: Previews,
                 status: dict, version: Callable[[], int], stopped: threading.Event, period: float):
        self.config, self.uplink, self.monitor, self.help_rule = config, uplink, monitor, help_rule
        self.watchdog, self.previews, self.status, self.version = watchdog, previews, status, version
        self.stopped, self.period = stopped, period
        self.teleop = teleop  # the robot's own teleop device (a leader arm, or the sim's scripted operator)
        self.remote = remote  # a person jogging from the dashboard, where the driver can be jogged
        self.source: TeleopSource = teleop  # whoever drives during the current takeover: teleop or remote
        self.takeover = TakeoverController()
        self.answer: str | None = None  # an operator's answer to a help request, while one is open
        self._help_open = False  # a help request no operator has answered yet
        self._assess = False  # the operator of this takeover still judges a help request (simulated)
        self._pending: pb.LearnerCommand | None = None  # a remote takeover sent between episodes

    # -- takeovers -------------------------------------------------------------------------------

    def take_over(self, command: pb.LearnerCommand, in_episode: bool, kind: str, episode_id: str,
                  step: int) -> tuple[bool, str]:
        """Hands the arm to an operator, or refuses (the operator is then given back at once).

        A remote takeover (a person at the dashboard) sent between episodes waits for the first
        step of the next training episode; evaluation episodes are never taken over, so a
        version's success rate stays the policy's own."""
        order = command.take_over
        problem = None
        if order.remote and self.remote is None:
            problem = "this robot cannot be driven from afar (its driver declares no jog dimensions)"
        elif not order.remote and not self.teleop.can_drive:
            problem = "this robot has no teleop device of its own"
        elif order.remote and (not in_episode or kind != "training"):
            self._pending = command
            return True, "takes effect at the next training episode"
        elif not in_episode:
            problem = "no episode is running"
        elif kind != "training":
            problem = f"{kind} episodes are not taken over"
        elif not self.takeover.take_over(order.operator_id):
            problem = f"the robot is {self.takeover.mode.value}"
        if problem:
            self.report_takeover_ended(episode_id, order.operator_id, 0, step)
            return False, problem
        self._help_open = False
        self.source = self.remote if order.remote else self.teleop
        self._assess = order.assess
        self.source.begin(order.operator_id)
        log.info("%s: %s took over at step %d%s", self.config.robot_id, order.operator_id, step,
                 " (remote)" if order.remote else "")
        return True, ""

    def take_pending(self) -> pb.LearnerCommand | None:
        """The remote takeover that waited for a training episode, if any (it is then no longer pending)."""
        command, self._pending = self._pending, None
        return command

    def withdraw_pending(self, episode_id: str, step: int) -> bool:
        """A hand-back before the waiting remote takeover began: it is withdrawn."""
        if self._pending is None:
            return False
        operator_id = self.take_pending().take_over.operator_id
        self.report_takeover_ended(episode_id, operator_id, 0, step)
        return True

    def poll_device(self, kind: str, episode_id: str, step: int) -> None:
        """A teleop device with events of its own (a LeRobot gamepad) may ask for a takeover itself."""
        self.teleop.poll()
        if kind == "training" and not self.takeover.under_takeover and self.teleop.wants_take_over():
            command = pb.LearnerCommand(take_over=pb.TakeOver(operator_id=self.teleop.operator_id))
            self.take_over(command, True, kind, episode_id, step)

    def jog(self, jog: pb.Jog) -> None:
        if not (self.takeover.under_takeover and self.source is self.remote and jog.operator_id == self.remote.operator_id):
            return  # a late jog after a hand-back, or from someone who is not driving
        try:
            self.remote.jog(jog.dx, jog.dy, jog.dz, jog.duration_s, jog.gripper if jog.HasField("gripper") else None)
        except ValueError as exc:
            log.warning("%s: ignoring jog: %s", self.config.robot_id, exc)

    def end_takeover(self, episode_id: str, step: int) -> None:
        ended = self.takeover.hand_back()
        if ended:
            self.report_takeover_ended(episode_id, ended[0], ended[1], step)
            self.help_rule.after_takeover()
            self.monitor.restart(step)

    def report_takeover_ended(self, episode_id: str, operator_id: str, human_steps: int, step: int) -> None:
        self.uplink.send(pb.RobotMessage(takeover_ended=pb.TakeoverEnded(
            robot_id=self.config.robot_id, episode_id=episode_id, operator_id=operator_id,
            step_index=step, human_steps=human_steps)))

    def answer_help(self, answer: str, episode_id: str, step: int) -> None:
        """An operator's "continue" or "end" for the running episode; it ends a takeover."""
        self.answer = answer
        if self.takeover.under_takeover:
            self.end_takeover(episode_id, step)

    # -- help requests ---------------------------------------------------------------------------

    def request_help(self, episode_id: str, step: int, reason: str, score: float, threshold: float = 0.0,
                     holding: bool = False) -> None:
        self.uplink.send(pb.RobotMessage(help=pb.HelpRequest(
            robot_id=self.config.robot_id, episode_id=episode_id, step_index=step, policy_version=self.version(),
            reason=reason, score=score, threshold=threshold, holding=holding)))
        self._help_open = True
        self.help_rule.after_takeover()  # do not repeat the request every tick while waiting

    def cancel_help(self, episode_id: str, reason: str) -> None:
        if self._help_open:
            self._help_open = False
            self.uplink.send(pb.RobotMessage(help_cancelled=pb.HelpCancelled(
                robot_id=self.config.robot_id, episode_id=episode_id, reason=reason)))

    def wait_for_help(self, episode_id: str, step: int, kind: str, policy_action: np.ndarray | None,
                      obs: Observation, apply_commands: Callable[..., None]) -> None:
        """FLOAT fired: hold still (no step is taken or recorded) until an operator answers, by
        taking over, saying continue or ending the episode; or give up after `help_wait_s`.
        An assigned simulated operator first judges whether the robot is really in trouble
        (`assess`); a person at the dashboard answers with the matching command instead.
        `apply_commands` applies the commands that arrive meanwhile (CommandHandler.apply)."""
        cfg = self.config
        self.request_help(episode_id, step, "float", self.monitor.index, self.monitor.tau, holding=True)
        self.status["mode"] = pb.ROBOT_MODE_WAITING_FOR_HELP
        self.answer = None
        deadline = time.monotonic() + cfg.help_wait_s
        next_preview = 0.0
        while self.answer is None:
            self.watchdog.beat()  # holding still on purpose while a person decides
            if self.previews.every and time.monotonic() >= next_preview:  # the dashboard shows what it holds
                self.previews.send(obs.images, self.status["mode"], episode_id, step)
                next_preview = time.monotonic() + 1.0
            apply_commands(True, episode_id, kind, step)
            if self.takeover.under_takeover and self.answer is None:
                # A simulated operator judges the request first; a person has already chosen.
                judged = self._assess and policy_action is not None
                self.answer = self.source.assess(policy_action) if judged else "take_over"
                if self.answer != "take_over":
                    self.end_takeover(episode_id, step)
            elif self.answer is None and (time.monotonic() > deadline or self.stopped.is_set()
                                          or self.takeover.mode is Mode.STOPPED):
                self.answer = "timeout"
                self.cancel_help(episode_id, f"no answer within {cfg.help_wait_s:.0f} s")
            elif self.answer is None:
                time.sleep(min(self.period, 0.05))
        if self.answer == "continue":
            self.monitor.continued = True
        log.info("%s: help request at step %d answered: %s", cfg.robot_id, step, self.answer)
        if self.answer != "end":  # only "end" outlives the wait (the episode loop acts on it)
            self.monitor.restart(step)
            self.status["mode"] = MODE_TO_PROTO[self.takeover.mode]
            self.answer = None
