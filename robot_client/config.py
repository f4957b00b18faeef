"""RobotConfig: one robot's settings, read by the control loop and its parts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from core.tls import ClientTLS
from robot_client.help import HelpRuleConfig

HELP_GATES = ("float", "rule", "off")


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
    # Where the policy runs (policy/device.py): cpu (the default: a robot's computer), auto or cuda[:N].
    device: str = "cpu"

    def __post_init__(self):
        if self.help_gate not in HELP_GATES:
            raise ValueError(f"help_gate must be one of {HELP_GATES}, got {self.help_gate!r}")
