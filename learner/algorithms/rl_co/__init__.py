"""RL-Co (RLinf-Co, ALGORITHMS.md section 4): sim-real co-training, then PPO in simulation
anchored on real data. Three parts, each read top to bottom:

  this file   the settings and the algorithm as the registry knows it; stage I's labels and loss
  loss.py     stage II's loss, per PPO minibatch:
                  L = L_PPO(sim rollouts) + c_v * L_value - c_ent * H + beta * L_SFT(real batch)
              with the diffusion chain as a Gaussian MDP, chunk rewards and advantages
  trainer.py  the fleet loop that runs both stages (RLCoTrainer)

Stage I (version 0) is supervised: a share `real_fraction` of every batch comes from real-proxy
robots' demonstrations, the rest from sim robots',

    L_I = E_{(o, a) ~ real_fraction * D_real + (1 - real_fraction) * D_sim} [ L_denoise(o, a) ]

and every step of a demonstration is a label.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from core.episode import EpisodeArrays
from learner.algorithms.base import ALGORITHMS, Algorithm
from learner.algorithms.hg_dagger import human_labels
from learner.algorithms.rl_co.loss import RLCoConfig
from policy import VLAPolicy


@dataclass
class RLCoSettings:
    real_fraction: float = 0.5        # stage I: share of each batch from real-proxy demonstrations
    real_only: bool = False           # stage I on real-proxy demonstrations alone (baseline a)
    rl: bool = True                   # False: stop after stage I (baseline b, SFT co-training)
    episodes_per_iteration: int = 40  # sim rollouts of the running version per PPO iteration (10 groups)
    minibatch: int = 64               # chunks per PPO minibatch
    real_batch: int = 32              # real-proxy windows per anchor batch
    lr: float = 3e-5  # 1e-4 moved the policy ~0.03 nats per step per iteration and did not learn faster
    value_hidden: int = 128           # width of the value head's hidden layer
    # The fresh value head is first regressed on the first batch's returns, so that the first
    # iteration's advantages are not noise: this many Adam steps at this rate.
    value_warmup_steps: int = 300
    value_warmup_lr: float = 1e-3
    loss: RLCoConfig = dataclasses.field(default_factory=RLCoConfig)

    def __post_init__(self):
        if not 0 <= self.real_fraction <= 1 or self.episodes_per_iteration < 1 or self.minibatch < 1:
            raise ValueError(f"invalid RL-Co settings: {self}")


@ALGORITHMS.register("rl_co", RLCoSettings)
class RLCo(Algorithm):
    """Co-train on real-proxy + sim demonstrations, then PPO in sim anchored on real data."""

    single_rank_reason = "its PPO iterations are not data-parallel yet"

    def __init__(self, config: RLCoSettings | None = None):
        super().__init__(config or RLCoSettings())

    @classmethod
    def trainer(cls) -> type:
        # Imported when asked: RLCoTrainer builds on learner.trainer, which finds it through here.
        from learner.algorithms.rl_co.trainer import RLCoTrainer

        return RLCoTrainer

    def wants_episode(self, kind: str, success: bool, human_steps: int) -> bool:
        return kind == "demonstration"  # rollouts reach RLCoTrainer.refresh by another path

    def step_labels(self, episode: EpisodeArrays) -> np.ndarray:
        return human_labels(episode.arrays)

    def loss(self, policy: VLAPolicy, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        loss = policy.compute_loss(batch)
        return loss, {"denoise_loss": float(loss.detach())}


__all__ = ["RLCo", "RLCoSettings", "RLCoConfig"]
