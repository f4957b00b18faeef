"""Action chunks sampled as a chain of K Gaussian denoising steps (DPPO; RLinf's flow noise).

Each step is x_{k-1} ~ N(mu_theta(x_k, t_k, obs), sigma^2 I) with the DDIM mean
mu_theta = sqrt(abar_{k-1}) x0_hat + sqrt(1 - abar_{k-1}) eps_hat, and the last step lands on the
chunk itself, so the executed chunk is a sample of the policy and log pi_k of every step is
tractable. The robot samples with it (an RL version's rollouts) and RL-Co's PPO scores the chain
under newer weights (learner/algorithms/rl_co/loss.py has the derivation); both import it from here,
so the robot side needs no learner code.
"""

from __future__ import annotations

import math

import torch

from policy.diffusion import gaussian
from policy.vla import VLAPolicy


class GaussianChain:
    """Sampling and per-step log-likelihood of action chunks as K Gaussian denoising steps."""

    def __init__(self, policy: VLAPolicy, steps: int, sigma: float):
        self.policy = policy
        self.sigma = sigma
        c = policy.config
        self.scored = slice(c.past_tokens, c.past_tokens + c.n_action_steps)  # the executed tokens
        schedule = policy.schedule
        self.timesteps = torch.linspace(schedule.train_steps - 1, 0, steps).round().long()
        bars = schedule.alpha_bars[self.timesteps]
        self.abar = bars
        self.abar_prev = torch.cat([bars[1:], torch.ones(1)])  # the last step lands on the chunk

    def _mean(self, x: torch.Tensor, k: int, frames: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        t = self.timesteps[k].to(x.device).expand(x.shape[0])
        out = self.policy.head(x, t, frames, text)
        abar, abar_prev = self.abar[k].to(x.device), self.abar_prev[k].to(x.device)
        if self.policy.config.prediction == "sample":
            x0 = out.clamp(-1.0, 1.0)
        else:
            x0 = ((x - (1 - abar).sqrt() * out) / abar.sqrt()).clamp(-1.0, 1.0)
        eps = (x - abar.sqrt() * x0) / (1 - abar).sqrt()
        return abar_prev.sqrt() * x0 + (1 - abar_prev).sqrt() * eps

    @torch.no_grad()
    def sample(self, frames: torch.Tensor, text: torch.Tensor, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(chunk (B, T, A) normalised, chain (B, K + 1, T, A), per-step log-likelihood (B, K))."""
        c = self.policy.config
        x = gaussian((frames.shape[0], c.horizon, c.action_dim), generator, frames.device)
        chain, logp = [x], []
        for k in range(len(self.timesteps)):
            mean = self._mean(x, k, frames, text)
            x = mean + self.sigma * gaussian(mean.shape, generator, frames.device)
            logp.append(self._gaussian_log_prob(x, mean))
            chain.append(x)
        return x, torch.stack(chain, dim=1), torch.stack(logp, dim=1)

    def log_prob(self, frames: torch.Tensor, text: torch.Tensor, chain: torch.Tensor) -> torch.Tensor:
        """log pi_k(chain | obs) per denoising step (B, K), differentiable in the policy's
        parameters. chain (B, K + 1, T, A)."""
        return torch.stack([self._gaussian_log_prob(chain[:, k + 1], self._mean(chain[:, k], k, frames, text))
                            for k in range(len(self.timesteps))], dim=1)

    def _gaussian_log_prob(self, x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        """log N(x; mean, sigma^2 I) over the scored tokens, (B,)."""
        var = self.sigma ** 2
        diff = (x - mean)[:, self.scored]
        return (-(diff ** 2) / (2 * var) - 0.5 * math.log(2 * math.pi * var)).flatten(1).sum(-1)

    def entropy(self) -> float:
        """Entropy of one denoising step given its input, over the scored tokens (constant: sigma
        is fixed)."""
        c = self.policy.config
        per_dim = 0.5 * math.log(2 * math.pi * math.e * self.sigma ** 2)
        return per_dim * (self.scored.stop - self.scored.start) * c.action_dim
