"""HG-DAgger (Kelly et al. 2019) on a fleet, as SOP runs it.

    D <- D_demos  U  {(o_t, a_human_t) : a human had taken over at step t}

Only steps whose action a person chose become labels: offline demonstrations and intervention
segments, less the ticks where the robot held still while the person reacted (`human_labels`).
Autonomous steps are stored (metrics, FLOAT, RL) but are not labels, unless
`use_autonomous_successes` is on, in which case autonomous steps of successful episodes count
too (ARMADA-style union). A training window [t, t + horizon) that straddles a takeover keeps
only the human tokens as labels: the loss mask below is exactly `step_labels` over the window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fleet.v1 import fleet_pb2 as pb
from core.episode import EpisodeArrays
from learner.algorithms.base import ALGORITHMS, Algorithm
from policy import VLAPolicy

HUMAN_SOURCES = (pb.ACTION_SOURCE_INTERVENTION, pb.ACTION_SOURCE_OFFLINE_DEMO)


def human_labels(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """Steps whose action a person chose: demonstrations and takeovers, less the ticks where the
    robot held still because the person had not acted yet (their reaction time, no jog key down;
    the robot's step extra "operator_holding"). A person taking over first has to notice and
    reach the controls: those ticks are recorded as intervention, but "hold still" is not their
    answer to the state, and learning it teaches the policy to stall exactly where it failed."""
    human = np.isin(arrays["source"], HUMAN_SOURCES)
    held = arrays.get("extra/operator_holding")
    return human if held is None else human & ~np.asarray(held, bool).reshape(human.shape)


@dataclass
class HGDaggerConfig:
    # Also learn from autonomous steps of episodes that succeeded (off by default, as in HG-DAgger).
    use_autonomous_successes: bool = False


@ALGORITHMS.register("hg_dagger", HGDaggerConfig)
class HGDagger(Algorithm):
    """Learn from interventions: demonstrations and the steps a person took over train the policy."""

    def __init__(self, config: HGDaggerConfig | None = None):
        super().__init__(config or HGDaggerConfig())

    def wants_episode(self, kind: str, success: bool, human_steps: int) -> bool:
        if kind == "evaluation":  # evaluation seeds measure versions; training on them would leak
            return False
        if kind == "demonstration" or human_steps > 0:
            return True
        return self.config.use_autonomous_successes and success

    def step_labels(self, episode: EpisodeArrays) -> np.ndarray:
        source = episode.arrays["source"]
        labels = human_labels(episode.arrays)
        if self.config.use_autonomous_successes and episode.success:
            labels |= source == pb.ACTION_SOURCE_AUTONOMOUS
        return labels

    def loss(self, policy: VLAPolicy, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        # batch["label_mask"] comes from step_labels: the denoising loss sees human tokens only.
        loss = policy.compute_loss(batch)
        return loss, {"denoise_loss": float(loss.detach())}
