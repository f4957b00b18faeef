"""RL-Co (RLinf-Co): PPO in simulation, anchored by the policy's own supervised loss on real data.

    L = L_PPO(sim rollouts) + c_v * L_value - c_ent * H + beta * L_SFT(one batch of real data)

per PPO minibatch, beta constant (no schedule), as in RLinf's code. L_SFT is the diffusion
policy's denoising loss (`VLAPolicy.compute_loss`) on real-proxy demonstrations.

The diffusion policy as a Gaussian MDP (DPPO, Ren et al. 2024; RLinf's flow noise)
    An action chunk is sampled by K denoising steps (K = `denoise_steps`, 4 by default, evenly
    spaced over the training schedule). Each step is Gaussian:

        x_{k-1} ~ N(mu_theta(x_k, t_k, obs), sigma^2 I),
        mu_theta = sqrt(abar_{k-1}) x0_hat + sqrt(1 - abar_{k-1}) eps_hat   (the DDIM mean)

    where x0_hat is the head's (clipped) clean-chunk estimate and eps_hat the noise it implies.
    The last step lands on the chunk itself (abar = 1: mu = x0_hat), with the same noise, so the
    executed chunk is a sample of the policy. sigma = `sigma` (DPPO's minimum exploration std).
    The chain (x_K, ..., x_0) is recorded at rollout time; its log-likelihood

        log pi(chain | obs) = sum_k log N(x_{k-1}; mu_theta(x_k, t_k, obs), sigma^2 I)

    is tractable and differentiable in theta, which is all PPO needs. x_K ~ N(0, I) does not
    depend on theta and is left out.

Rewards are chunk-level (the summed task reward of the steps the chunk drove), advantages by
GAE over the chunks of an episode, normalised per batch; a small value head reads the same
observation embedding as the diffusion head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from policy import VLAPolicy


@dataclass
class RLCoConfig:
    beta: float = 0.1            # weight of the real-data anchor (RLinf default; their example 0.2)
    gamma: float = 0.99          # per chunk
    gae_lambda: float = 0.95
    clip: float = 0.2
    value_coef: float = 0.5
    entropy_coef: float = 0.005  # with a fixed sigma the chain entropy is a constant: reported, no gradient
    denoise_steps: int = 4
    sigma: float = 0.1           # exploration std of every denoising step (normalised action units)
    epochs: int = 2              # PPO passes over each rollout batch

    def __post_init__(self):
        if self.beta < 0 or not 0 < self.clip < 1 or self.denoise_steps < 1 or self.sigma <= 0:
            raise ValueError(f"invalid RL-Co config: {self}")


class ValueHead(nn.Module):
    """V(obs) from the pooled observation embedding (frames + instruction) the policy computes."""

    def __init__(self, d_model: int, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * d_model, hidden), nn.Mish(), nn.Linear(hidden, 1))

    def forward(self, frames: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        pooled = frames.mean(dim=(1, 2))  # (B, To, F, d) -> (B, d)
        return self.net(torch.cat([pooled, text], dim=-1)).squeeze(-1)


class GaussianChain:
    """Sampling and log-likelihood of action chunks as K Gaussian denoising steps."""

    def __init__(self, policy: VLAPolicy, steps: int, sigma: float):
        self.policy = policy
        self.sigma = sigma
        schedule = policy.schedule
        self.timesteps = torch.linspace(schedule.train_steps - 1, 0, steps).round().long()
        bars = schedule.alpha_bars[self.timesteps]
        self.abar = bars
        self.abar_prev = torch.cat([bars[1:], torch.ones(1)])  # the last step lands on the chunk

    def _mean(self, x: torch.Tensor, k: int, frames: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        t = self.timesteps[k].expand(x.shape[0])
        out = self.policy.head(x, t, frames, text)
        abar, abar_prev = self.abar[k], self.abar_prev[k]
        if self.policy.config.prediction == "sample":
            x0 = out.clamp(-1.0, 1.0)
        else:
            x0 = ((x - (1 - abar).sqrt() * out) / abar.sqrt()).clamp(-1.0, 1.0)
        eps = (x - abar.sqrt() * x0) / (1 - abar).sqrt()
        return abar_prev.sqrt() * x0 + (1 - abar_prev).sqrt() * eps

    @torch.no_grad()
    def sample(self, frames: torch.Tensor, text: torch.Tensor, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(chunk (B, T, A) normalised, chain (B, K + 1, T, A), log-likelihood (B,))."""
        c = self.policy.config
        x = torch.randn((frames.shape[0], c.horizon, c.action_dim), generator=generator)
        chain, logp = [x], torch.zeros(frames.shape[0])
        for k in range(len(self.timesteps)):
            mean = self._mean(x, k, frames, text)
            x = mean + self.sigma * torch.randn(mean.shape, generator=generator)
            logp += self._gaussian_log_prob(x, mean)
            chain.append(x)
        return x, torch.stack(chain, dim=1), logp

    def log_prob(self, frames: torch.Tensor, text: torch.Tensor, chain: torch.Tensor) -> torch.Tensor:
        """log pi(chain | obs), differentiable in the policy's parameters. chain (B, K + 1, T, A)."""
        logp = torch.zeros(chain.shape[0])
        for k in range(len(self.timesteps)):
            logp = logp + self._gaussian_log_prob(chain[:, k + 1], self._mean(chain[:, k], k, frames, text))
        return logp

    def _gaussian_log_prob(self, x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        var = self.sigma ** 2
        return (-((x - mean) ** 2) / (2 * var) - 0.5 * math.log(2 * math.pi * var)).flatten(1).sum(-1)

    def entropy(self) -> float:
        """Entropy of one chain given its start (constant: sigma is fixed)."""
        c = self.policy.config
        per_dim = 0.5 * math.log(2 * math.pi * math.e * self.sigma ** 2)
        return per_dim * len(self.timesteps) * c.horizon * c.action_dim


def gae(rewards: np.ndarray, values: np.ndarray, last_value: float, done: bool, gamma: float, lam: float
        ) -> tuple[np.ndarray, np.ndarray]:
    """Advantages and returns of one episode's chunks (GAE). `done`: the episode ended in a terminal
    state (no bootstrap); else it was cut off and `last_value` bootstraps it."""
    advantages = np.zeros(len(rewards), np.float32)
    next_value, running = (0.0 if done else last_value), 0.0
    for i in reversed(range(len(rewards))):
        delta = rewards[i] + gamma * next_value - values[i]
        running = delta + gamma * lam * running
        advantages[i] = running
        next_value = values[i]
    return advantages, advantages + np.asarray(values, np.float32)


def rl_co_loss(policy: VLAPolicy, value_head: ValueHead, chain: GaussianChain, rollout: dict[str, torch.Tensor],
               real_batch: dict[str, torch.Tensor] | None, config: RLCoConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """One PPO minibatch plus the anchor. `rollout` holds the observation batch keys the policy
    reads ("image/<cam>" and "state", or "frames"; "tokens"), "chain" (B, K + 1, T, A), "old_logp",
    "advantage" and "return" (B,). `real_batch` is one supervised batch of real data (None: the
    no-anchor ablation)."""
    frames, text = policy._observation(rollout, augment=False)
    logp = chain.log_prob(frames, text, rollout["chain"])
    log_ratio = logp - rollout["old_logp"]
    ratio = log_ratio.exp()
    advantage = rollout["advantage"]
    clipped = ratio.clamp(1.0 - config.clip, 1.0 + config.clip)
    ppo = -torch.min(ratio * advantage, clipped * advantage).mean()
    value = value_head(frames.detach(), text.detach())
    value_loss = ((value - rollout["return"]) ** 2).mean()
    entropy = chain.entropy()
    loss = ppo + config.value_coef * value_loss - config.entropy_coef * entropy
    figures = {"ppo_loss": float(ppo.detach()), "value_loss": float(value_loss.detach()),
               "ratio_mean": float(ratio.detach().mean()), "clip_fraction": float(((ratio - 1).abs() > config.clip).float().mean()),
               "approx_kl": float(((ratio - 1) - log_ratio).detach().mean()), "entropy": entropy}
    if real_batch is not None and config.beta > 0:
        anchor = policy.compute_loss(real_batch)
        loss = loss + config.beta * anchor
        figures["anchor_loss"] = float(anchor.detach())
    return loss, figures
