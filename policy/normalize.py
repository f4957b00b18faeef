"""Explicit min-max normalisation of states and actions to [-1, 1].

Statistics are computed once from the training data of version 0 and stored in every
checkpoint, so a robot always normalises with the numbers its weights were trained with.
"""

from __future__ import annotations

import numpy as np
import torch

# Ranges narrower than this are widened so a constant dimension does not divide by zero.
_MIN_RANGE = 1e-2


class Normalizer(torch.nn.Module):
    def __init__(self, low: np.ndarray, high: np.ndarray):
        super().__init__()
        low = np.asarray(low, np.float32)
        high = np.asarray(high, np.float32)
        centre = (low + high) / 2
        half = np.maximum((high - low) / 2, _MIN_RANGE / 2)
        self.register_buffer("centre", torch.from_numpy(centre))
        self.register_buffer("half_range", torch.from_numpy(half))

    @classmethod
    def fit(cls, data: np.ndarray) -> "Normalizer":
        data = np.asarray(data, np.float32).reshape(-1, data.shape[-1])
        return cls(data.min(axis=0), data.max(axis=0))

    @classmethod
    def identity(cls, dim: int) -> "Normalizer":
        return cls(-np.ones(dim, np.float32), np.ones(dim, np.float32))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.centre) / self.half_range

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.half_range + self.centre
