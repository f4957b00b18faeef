"""DDPM noise schedule (training) and DDIM sampling (inference), written out.

Training: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps; the head predicts eps or x_0 (MSE).
Sampling: deterministic DDIM (eta = 0) over `inference_steps` evenly spaced timesteps.
"""

from __future__ import annotations

import math
from typing import Callable

import torch


def squared_cosine_alpha_bars(steps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Cumulative signal level abar_t for t = 0..steps-1 (Nichol & Dhariwal's cosine schedule)."""
    def f(t: float) -> float:
        return math.cos((t / steps + s) / (1 + s) * math.pi / 2) ** 2

    betas = [min(1 - f(i + 1) / f(i), max_beta) for i in range(steps)]
    return torch.cumprod(1 - torch.tensor(betas, dtype=torch.float32), dim=0)


class DiffusionSchedule:
    def __init__(self, train_steps: int, inference_steps: int):
        self.train_steps = train_steps
        self.inference_steps = inference_steps
        self.alpha_bars = squared_cosine_alpha_bars(train_steps)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = self.alpha_bars.to(x0.device)[t].view(-1, *([1] * (x0.dim() - 1)))
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    @torch.no_grad()
    def sample(self, predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], shape: tuple[int, ...],
               prediction: str = "epsilon", generator: torch.Generator | None = None) -> torch.Tensor:
        """DDIM from pure noise; `predict` returns eps or x0 according to `prediction`."""
        x = torch.randn(shape, generator=generator)
        timesteps = torch.linspace(self.train_steps - 1, 0, self.inference_steps).round().long()
        for i, t in enumerate(timesteps):
            abar = self.alpha_bars[t]
            abar_prev = self.alpha_bars[timesteps[i + 1]] if i + 1 < len(timesteps) else torch.tensor(1.0)
            out = predict(x, t.expand(shape[0]))
            if prediction == "sample":
                x0 = out.clamp(-1.0, 1.0)
            else:
                x0 = ((x - (1 - abar).sqrt() * out) / abar.sqrt()).clamp(-1.0, 1.0)
            # Re-derive eps from the clipped x0 so the trajectory stays consistent with it.
            eps = (x - abar.sqrt() * x0) / (1 - abar).sqrt()
            x = abar_prev.sqrt() * x0 + (1 - abar_prev).sqrt() * eps
        return x
