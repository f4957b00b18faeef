"""Where a policy runs: the `--device` setting of the trainer (`fleet learner`, `fleet train`) and
of the robot (`fleet robot`, cpu by default: a robot's computer).

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


PRECISION_CHOICES = ("auto", "bf16", "fp32")


def cpu_has_bf16_matmul() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AMX tiles on Intel, AVX512-BF16 on
    AMD Zen 4 and later): there bf16 autocast makes the default training step ~1.2-1.4x faster;
    on CPUs without either it would be slower than fp32."""
    probes = (getattr(torch.cpu, "_is_amx_tile_supported", None), getattr(torch.cpu, "_is_avx512_bf16_supported", None))
    return any(bool(probe and probe()) for probe in probes)


def resolve_precision(device: torch.device, spec: str = "auto") -> str:
    """The training precision a `--precision` value names on `device`: "auto" is bf16 autocast
    on CUDA and on CPUs with bf16 matrix instructions, fp32 elsewhere."""
    if spec not in PRECISION_CHOICES:
        raise ValueError(f"unknown precision {spec!r}; choose one of {PRECISION_CHOICES}")
    if spec == "auto":
        return "bf16" if device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16_matmul()) else "fp32"
    return spec


def autocast(device: torch.device, precision: str = "bf16"):
    """The forward pass's autocast for a resolved precision: bf16 matmuls with fp32 weights,
    optimizer state and loss reductions; "fp32": none."""
    if precision == "bf16" and device.type in ("cuda", "cpu"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
