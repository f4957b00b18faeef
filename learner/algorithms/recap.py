"""RECAP (pi*0.6; ALGORITHMS.md section 5) as a fleet learner algorithm.

Every stored step is a label (autonomous successes and failures, interventions, demonstrations),
but the policy learns p(action | observation, instruction, advantage indicator):

  value       one distributional value network for all tasks (conditioned on the instruction),
              `bins` atoms on [-1, 0], trained by cross-entropy against the two-hot projection
              of the step's Monte-Carlo return normalised per task (recap_labels.py)
  advantage   A_t = n-step normalised return + V(o_{t+n}) - V(o_t), binarised per task: the
              top `top_fraction` (30%) of its advantages are positive, that is those at or
              above the 100 * (1 - top_fraction) = 70th percentile; steps a human chose
              (interventions, demonstrations) are positive
  policy      the usual denoising loss with the indicator (1 negative, 2 positive) added to the
              text token; with probability `dropout` it is replaced by 0 ("none"), so the
              unconditioned policy is learned too. Robots run it conditioned on positive
              (PolicyConfig.deploy_advantage).

The value network reads the policy's own frame and instruction embeddings, detached (in training,
the ones the denoising loss has just computed): it never shapes the encoder, and it costs one
small MLP per batch. It trains with the policy (its loss is
added to the batch's). Advantages are recomputed by `relabel`, which the trainer calls after
each refresh: values of newly added episodes are computed in full, plus a rotating share of the
older ones, so the labels follow the value network as it learns without a pass over the whole
store each time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from learner.algorithms.base import ALGORITHMS, Algorithm
from learner.algorithms.hg_dagger import human_labels
from learner.algorithms.recap_labels import binarise, n_step_advantages, returns_to_go, step_rewards, task_norm
from core.episode import EpisodeArrays
from policy import VLAPolicy
from policy.device import to_device

NEGATIVE, POSITIVE = 1, 2  # the policy's advantage indicator; 0 is "none" (conditioning dropout)


@dataclass
class RecapConfig:
    failure_penalty: float = -100.0  # added to the last step's reward of a failed episode
    n_step: int = 10                 # the advantage's lookahead
    top_fraction: float = 0.3        # per task: this share of the advantages (the largest) is positive
    dropout: float = 0.3             # conditioning dropout
    bins: int = 201                  # atoms of the distributional value
    value_hidden: int = 256          # width of the value network's two hidden layers
    value_weight: float = 1.0
    revalue_per_relabel: int = 8     # older episodes whose values are recomputed per relabel

    def __post_init__(self):
        if not 0 < self.top_fraction <= 1 or not 0 <= self.dropout <= 1 or self.n_step < 1 or self.bins < 2:
            raise ValueError(f"invalid RECAP config: {self}")

    @property
    def percentile(self) -> float:
        """The per-task percentile of the advantages at and above which a step is positive."""
        return 100.0 * (1.0 - self.top_fraction)


class ValueNet(nn.Module):
    """(current frame's embedding tokens, instruction embedding) -> logits over `bins` returns."""

    def __init__(self, d_model: int, frame_tokens: int, bins: int, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Linear((frame_tokens + 1) * d_model, hidden), nn.Mish(),
                                 nn.Linear(hidden, hidden), nn.Mish(), nn.Linear(hidden, bins))
        self.register_buffer("support", torch.linspace(-1.0, 0.0, bins))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)

    def expected(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.softmax(-1) @ self.support


def two_hot(values: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """(B,) values in [support[0], support[-1]] -> (B, bins) weights on the two nearest atoms."""
    values = values.clamp(float(support[0]), float(support[-1]))
    step = float(support[1] - support[0])
    position = (values - support[0]) / step
    lower = position.floor().long().clamp(0, len(support) - 2)
    upper_weight = (position - lower.float()).clamp(0.0, 1.0)
    target = torch.zeros(values.shape[0], len(support), device=values.device)
    target.scatter_(1, lower.unsqueeze(1), (1.0 - upper_weight).unsqueeze(1))
    target.scatter_add_(1, (lower + 1).unsqueeze(1), upper_weight.unsqueeze(1))
    return target


def value_features(policy: VLAPolicy, batch: dict[str, torch.Tensor], frames: torch.Tensor | None = None) -> torch.Tensor:
    """The value network's input, detached: the current frame's tokens and the words' mean.
    `frames`: the batch's frame embeddings when the policy's loss has computed them already."""
    with torch.no_grad():
        if frames is None:
            frames = policy.batch_frames(batch, augment=False)
        return torch.cat([frames[:, -1].flatten(1), policy._words(batch["tokens"])], dim=1).float()


@ALGORITHMS.register("recap", RecapConfig)
class Recap(Algorithm):
    """Advantage-conditioned policy on all fleet data: a distributional value, human steps positive."""

    single_rank_reason = "its value network is not data-parallel yet"

    policy_overrides = {"advantage_conditioned": True, "deploy_advantage": POSITIVE}

    def __init__(self, config: RecapConfig | None = None):
        super().__init__(config or RecapConfig())
        self.value: ValueNet | None = None
        self._cursor = 0  # where the rotating re-valuation goes on

    # -- which data, which labels --------------------------------------------------------------

    def wants_episode(self, kind: str, success: bool, human_steps: int) -> bool:
        return kind != "evaluation"  # evaluation seeds measure versions; training on them would leak

    def step_labels(self, episode: EpisodeArrays) -> np.ndarray:
        """Every step is a label. Also attaches the episode's returns and provisional per-step
        figures (the indicator from the human mask alone) until `relabel` computes advantages."""
        n = episode.num_steps
        returns = returns_to_go(step_rewards(n, episode.success, self.config.failure_penalty))
        human = human_labels(episode.arrays)
        episode.arrays["recap/return"] = returns
        episode.arrays["recap/value"] = np.full(n, np.nan)
        episode.arrays["window/value_target"] = (returns / task_norm([returns])).astype(np.float32)
        episode.arrays["window/advantage"] = np.where(human, POSITIVE, NEGATIVE).astype(np.int64)
        return np.ones(n, bool)

    # -- the value network ---------------------------------------------------------------------

    def extra_parameters(self, policy: VLAPolicy) -> list[nn.Parameter]:
        """Trained with the policy, by the same optimizer (built for this policy's shape)."""
        c = policy.config
        if self.value is None:
            self.value = ValueNet(c.d_model, c.frame_tokens, self.config.bins, self.config.value_hidden).to(policy.device)
        return list(self.value.parameters())

    def artifacts(self) -> dict[str, dict[str, np.ndarray]]:
        """The value network, saved with each version so a restarted learner resumes it."""
        if self.value is None:
            return {}
        return {"recap_value": {k: v.detach().cpu().numpy().copy() for k, v in self.value.state_dict().items()}}

    def restore(self, artifacts: dict[str, dict[str, np.ndarray]], policy: VLAPolicy) -> None:
        self.extra_parameters(policy)
        if "recap_value" in artifacts:
            self.value.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in artifacts["recap_value"].items()})
            self.value.to(policy.device)

    @torch.no_grad()
    def episode_values(self, index, position: int, policy: VLAPolicy, cached: bool) -> np.ndarray:
        n = len(index.episodes[position].labels)
        values = []
        for start in range(0, n, 128):
            picks = [(position, t) for t in range(start, min(n, start + 128))]
            batch = to_device(index.batch(picks, policy.config.cameras, policy.tokenize, cached=cached), policy.device)
            values.append(self.value.expected(self.value(value_features(policy, batch))).cpu().numpy())
        return np.concatenate(values).astype(np.float64)

    def relabel(self, index, policy: VLAPolicy, cached: bool = False) -> dict[str, float]:
        """Recomputes values where due, then every task's advantages and indicators."""
        if self.value is None:
            self.extra_parameters(policy)
        items = index.episodes
        due = [p for p, item in enumerate(items) if np.isnan(item.episode.arrays["recap/value"]).any()]
        fresh = set(due)
        older = [p for p in range(len(items)) if p not in fresh]
        for _ in range(min(self.config.revalue_per_relabel, len(older))):
            due.append(older[self._cursor % len(older)])
            self._cursor += 1
        for position in due:
            items[position].episode.arrays["recap/value"] = self.episode_values(index, position, policy, cached)
        by_task: dict[str, list[int]] = {}
        for position, item in enumerate(items):
            by_task.setdefault(item.episode.task, []).append(position)
        positive, total = 0, 0
        for positions in by_task.values():
            arrays = [items[p].episode.arrays for p in positions]
            norm = task_norm([a["recap/return"] for a in arrays])
            advantages = [n_step_advantages(a["recap/return"], a["recap/value"], norm, self.config.n_step)
                          for a in arrays]
            humans = [human_labels(a) for a in arrays]
            for a, label in zip(arrays, binarise(advantages, humans, self.config.percentile)):
                a["window/value_target"] = (a["recap/return"] / norm).astype(np.float32)
                a["window/advantage"] = np.where(label, POSITIVE, NEGATIVE).astype(np.int64)
                positive += int(label.sum())
                total += len(label)
        return {"positive_share": positive / max(total, 1), "revalued_episodes": len(due)}

    # -- the loss ------------------------------------------------------------------------------

    def loss(self, policy: VLAPolicy, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        if self.value is None:
            self.extra_parameters(policy)
        indicator = batch["advantage"]
        dropped = torch.rand(indicator.shape, device=indicator.device) < self.config.dropout
        conditioned = {**batch, "advantage": torch.where(dropped, torch.zeros_like(indicator), indicator)}
        observation = policy._observation(conditioned, augment=policy.training)  # the encoder runs once
        denoise = policy.compute_loss(conditioned, observation)
        logits = self.value(value_features(policy, batch, frames=observation[0]))
        target = two_hot(batch["value_target"].float(), self.value.support)
        value_loss = -(target * F.log_softmax(logits, -1)).sum(-1).mean()
        return denoise + self.config.value_weight * value_loss, {
            "denoise_loss": float(denoise.detach()), "value_loss": float(value_loss.detach())}
