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


def gaussian(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str) -> torch.Tensor:
    """Standard normal noise on `device`, drawn from `generator` (on its own device) when given."""
    if generator is None:
        return torch.randn(shape, device=device)
    return torch.randn(shape, generator=generator, device=generator.device).to(device)


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
               prediction: str = "epsilon", generator: torch.Generator | None = None,
               device: torch.device | str = "cpu") -> torch.Tensor:
        """DDIM from pure noise on `device`; `predict` returns eps or x0 according to `prediction`.
        The noise is drawn on the generator's device (the same seed gives the same chunk on any)."""
        x = gaussian(shape, generator, device)
        timesteps = torch.linspace(self.train_steps - 1, 0, self.inference_steps).round().long()
        alpha_bars = self.alpha_bars.to(device)
        for i, t in enumerate(timesteps):
            abar = alpha_bars[t]
            abar_prev = alpha_bars[timesteps[i + 1]] if i + 1 < len(timesteps) else torch.ones((), device=device)
            out = predict(x, t.to(device).expand(shape[0]))
            if prediction == "sample":
                x0 = out.clamp(-1.0, 1.0)
            else:
                x0 = ((x - (1 - abar).sqrt() * out) / abar.sqrt()).clamp(-1.0, 1.0)
            # Re-derive eps from the clipped x0 so the trajectory stays consistent with it.
            eps = (x - abar.sqrt() * x0) / (1 - abar).sqrt()
            x = abar_prev.sqrt() * x0 + (1 - abar_prev).sqrt() * eps
        return x
