"""CommandHandler: the learner's and operators' commands, applied by the control loop between ticks.

The uplink's control stream queues them as they arrive (another thread); `apply` drains the queue
at a tick boundary and acknowledges each one (CommandApplied: accepted or not, and why), except
jogs, which come many times a second while a key is held.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from fleet.v1 import fleet_pb2 as pb
from robot_client.config import RobotConfig
from robot_client.coordinator import TakeoverCoordinator
from robot_client.monitoring import RobotMonitor
from robot_client.uplink import Uplink

log = logging.getLogger("fleetlearn.robot")


class CommandHandler:
    def __init__(self, config: RobotConfig, uplink: Uplink, operators: TakeoverCoordinator, monitor: RobotMonitor,
                 driver_tasks: dict[str, str], stopped: threading.Event):
        self.config, self.uplink, self.operators, self.monitor = config, uplink, operators, monitor
        self.driver_tasks, self.stopped = driver_tasks, stopped

    def apply(self, in_episode: bool, episode_id: str = "", kind: str = "", step: int = 0) -> None:
        operators, takeover = self.operators, self.operators.takeover
        while True:
            try:
                command = self.uplink.commands.get_nowait()
            except queue.Empty:
                return
            body = command.WhichOneof("body")
            accepted, detail = True, ""
            if body == "jog":  # many per second while a key is held: applied, never acknowledged
                operators.jog(command.jog)
                continue
            if body == "take_over":
                accepted, detail = operators.take_over(command, in_episode, kind, episode_id, step)
            elif body == "hand_back":
                if operators.withdraw_pending(episode_id, step):
                    detail = "the pending takeover was withdrawn"
                elif not takeover.holds_takeover:
                    accepted, detail = False, "nobody was driving"
                operators.end_takeover(episode_id, step)
            elif body == "pause":
                takeover.pause()
            elif body == "resume":
                takeover.resume()
            elif body == "stop":
                takeover.stop()
                self.stopped.set()
            elif body in ("continue_episode", "end_episode"):
                if in_episode:
                    operators.answer_help("continue" if body == "continue_episode" else "end", episode_id, step)
                else:
                    accepted, detail = False, "no episode is running"
            elif body == "set_float_threshold":
                self.monitor.set_percentile(command.set_float_threshold.task, command.set_float_threshold.percentile)
            elif body == "set_task":
                if command.set_task.task in self.driver_tasks:
                    self.config.tasks = (command.set_task.task,)
                else:
                    accepted, detail = False, f"this robot runs {sorted(self.driver_tasks)}"
                    log.warning("%s: ignoring set_task %r (this robot runs %s)", self.config.robot_id,
                                command.set_task.task, sorted(self.driver_tasks))
            self.acknowledge(command, accepted, detail, episode_id, step)

    def start_pending_takeover(self, kind: str, episode_id: str) -> None:
        """A person asked to take over between episodes: at step 0 of a training episode, they do."""
        if kind != "training":
            return
        command = self.operators.take_pending()
        if command is not None:
            self.acknowledge(command, *self.operators.take_over(command, True, kind, episode_id, 0), episode_id, 0)

    def acknowledge(self, command: pb.LearnerCommand, accepted: bool, detail: str, episode_id: str, step: int) -> None:
        self.uplink.send(pb.RobotMessage(command_applied=pb.CommandApplied(
            robot_id=self.config.robot_id, command_id=command.command_id, accepted=accepted, detail=detail,
            episode_id=episode_id, step_index=step, applied_at=time.time())))
