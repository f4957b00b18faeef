"""Where a policy runs: the trainer's `--device` setting (the robot runner's is still to come).

"auto" is the first CUDA device when torch sees one, else the CPU; "cuda" and "cuda:N" insist on
a GPU (a clear error when there is none). A policy makes every tensor on `policy.device`, batches
are moved there with `to_device` (from pinned host memory on CUDA, without blocking), and
checkpoints are always written from CPU copies, so a version trained on a GPU loads anywhere.
"""

from __future__ import annotations

import contextlib

import torch

DEVICE_CHOICES = "auto|cpu|cuda|cuda:N"


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """The torch device a `--device` value names."""
    if isinstance(spec, torch.device):
        return spec
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {spec!r}: torch sees no CUDA device here (use --device cpu or auto)")
        device = torch.device(spec)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {spec!r}: only {torch.cuda.device_count()} CUDA device(s) present")
        return device
    raise ValueError(f"unknown device {spec!r}; choose {DEVICE_CHOICES}")


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """A policy batch on `device` (a tensor already there is passed through as it is)."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def pin(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Page-locked copies for an asynchronous host-to-GPU transfer."""
    return {k: v.pin_memory() for k, v in batch.items()}


def autocast(device: torch.device):
    """bf16 autocast on CUDA (weights and optimizer stay fp32); nothing on the CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
