"""RL-Co's stage II loss (RLinf-Co): PPO in simulation, anchored by the policy's own supervised
loss on real data.

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
    The chain (x_K, ..., x_0) is recorded at rollout time; the log-likelihood of each step

        log pi_k(chain | obs) = log N(x_{k-1}[S]; mu_theta(x_k, t_k, obs)[S], sigma^2 I)

    is tractable and differentiable in theta, which is all PPO needs. x_K ~ N(0, I) does not
    depend on theta and is left out. S is the set of scored tokens: the ones the robot executes
    (`n_action_steps` from the current step's token on). The other tokens of the chunk are
    sampled too, but nothing the robot does depends on their final values, so scoring them would
    only add variance to the ratio; their noise counts as part of the environment.

    As in DPPO, every denoising step is its own PPO sample: the ratio is taken and clipped per
    step, all K steps of a chunk sharing the chunk's advantage. One ratio over the sum of K steps
    would move K times as far for the same parameter change and clip almost everything.

Rewards are chunk-level: the summed task reward of the steps the chunk drove (1 on success), plus,
where the task measures its distance to the goal, potential-based shaping
`shaping * (gamma * phi(s_end) - phi(s_start))` with phi = -distance in metres (Ng et al. 1999:
it leaves the optimal policy unchanged and turns a sparse success into a signal every chunk).
Advantages by GAE over the chunks of an episode, normalised per batch; a small value head reads
the same observation embedding as the diffusion head.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from policy import VLAPolicy
from policy.chain import GaussianChain


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
    epochs: int = 4              # PPO passes over each rollout batch (at most: see target_kl)
    group: int = 4               # rollouts per seed (1: none); grouped chunks use a leave-one-out baseline
    target_kl: float = 0.02      # an iteration stops early once a minibatch's approx. KL per step exceeds 1.5x this
    shaping: float = 10.0        # reward per metre of progress towards the goal (0: success only)

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


def chunk_rewards(step_rewards: np.ndarray, distance: np.ndarray | None, starts: np.ndarray, ends: np.ndarray,
                  gamma: float, shaping: float) -> np.ndarray:
    """The reward of each chunk [starts[i], ends[i]) of an episode: the task reward of its steps,
    plus `shaping * (distance before its first step - gamma * distance after its last)` where the
    rollout carries the task's distance to the goal (`distance` (steps, 2): before and after each
    step; NaN where the task has no such measure)."""
    rewards = np.array([step_rewards[s:e].sum() for s, e in zip(starts, ends)], np.float32)
    if shaping > 0 and distance is not None and np.isfinite(distance).all():
        rewards += shaping * (distance[starts, 0] - gamma * distance[ends - 1, 1])  # phi = -distance
    return rewards


def returns_to_go(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """The discounted return from each chunk of an episode to its end."""
    out, running = np.zeros(len(rewards), np.float32), 0.0
    for t in reversed(range(len(rewards))):
        running = rewards[t] + gamma * running
        out[t] = running
    return out


def group_advantages(rewards: list[np.ndarray], groups: list, gamma: float) -> list[np.ndarray | None]:
    """Advantages of the chunks of rollouts that share their start (same task and seed, groups[i]
    names episode i's group): the discounted return-to-go of each chunk minus the mean
    return-to-go of the group's other episodes at the same chunk index (0 past an episode's end).
    A leave-one-out baseline: unbiased, and it removes what the layout alone decides, which a
    value head learns slowly from a few hundred episodes. None for an episode alone in its group."""
    to_go = [returns_to_go(r, gamma) for r in rewards]
    members: dict = {}
    for i, key in enumerate(groups):
        members.setdefault(key, []).append(i)
    out: list[np.ndarray | None] = [None] * len(rewards)
    for indices in members.values():
        if len(indices) < 2:
            continue
        length = max(len(to_go[i]) for i in indices)
        padded = np.zeros((len(indices), length), np.float32)
        for row, i in enumerate(indices):
            padded[row, :len(to_go[i])] = to_go[i]
        total = padded.sum(0)
        for row, i in enumerate(indices):
            baseline = (total - padded[row]) / (len(indices) - 1)
            out[i] = to_go[i] - baseline[:len(to_go[i])]
    return out


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
    reads ("image/<cam>" and "state", or "frames"; "tokens"), "chain" (B, K + 1, T, A), "old_logp"
    (B, K), "advantage" and "return" (B,). Each denoising step is a PPO sample with its own clipped
    ratio. `real_batch` is one supervised batch of real data (None: the no-anchor ablation)."""
    frames, text = policy._observation(rollout, augment=False)
    logp = chain.log_prob(frames, text, rollout["chain"])
    log_ratio = logp - rollout["old_logp"]
    ratio = log_ratio.exp()
    advantage = rollout["advantage"][:, None]
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
