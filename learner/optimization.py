"""One policy's optimiser step and the moving average of its weights that robots run.

`Optimization` is built for a policy as it is (which parameters train, on which device) and is
rebuilt whenever that changes (version 0, the encoder frozen, a long-context head): AdamW, fused
where torch has the kernel for the device, with the encoder in a group of its own when it trains;
gradients clipped to norm 1; then the exponential moving average of the trainable weights moved
in one call (the frozen ones never move). A step whose loss or gradients are not finite changes
nothing (it is counted in `skipped`): one bad batch cannot turn the weights to NaN. The average's
lag is decay / (1 - decay) updates, and in seconds at the update rate of the last few hundred steps.
"""

from __future__ import annotations

import collections
import copy
import logging
import time

import torch
from torch import nn

log = logging.getLogger("fleetlearn.trainer")


class UpdateRate:
    """Updates per second over the last `window` updates."""

    def __init__(self, window: int = 200):
        self.times: collections.deque[float] = collections.deque(maxlen=window)

    def tick(self) -> None:
        self.times.append(time.perf_counter())

    def per_s(self) -> float | None:
        if len(self.times) < 2:
            return None
        return (len(self.times) - 1) / max(self.times[-1] - self.times[0], 1e-9)


def fused_adamw(device: torch.device) -> dict:
    """AdamW's fused kernel (one pass over all tensors) where torch has it for the device."""
    return {"fused": True} if device.type in ("cpu", "cuda") else {}


class Optimization:
    def __init__(self, policy, extra: list[nn.Parameter], lr: float, weight_decay: float, ema_decay: float,
                 device: torch.device):
        self.ema = copy.deepcopy(policy).eval()
        self.ema_decay, self.device = ema_decay, device
        encoder = {id(p) for p in policy.encoder_parameters()}
        head = [p for p in policy.parameters() if p.requires_grad and id(p) not in encoder] + list(extra)
        groups = [{"params": head, "name": "head"}]
        trained_encoder = [p for p in policy.encoder_parameters() if p.requires_grad]
        if trained_encoder:
            groups.append({"params": trained_encoder, "name": "encoder"})
        self.optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), weight_decay=weight_decay,
                                           **fused_adamw(device))
        self.trainable = [p for group in groups for p in group["params"]]
        pairs = [(e, p) for e, p in zip(self.ema.parameters(), policy.parameters()) if p.requires_grad]
        self.ema_pairs = ([e for e, _ in pairs], [p for _, p in pairs])
        self.rate = UpdateRate()
        self.skipped = 0

    def set_learning_rates(self, lr: float, encoder_lr: float | None = None) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = encoder_lr if group["name"] == "encoder" and encoder_lr is not None else lr

    def step(self, loss: torch.Tensor) -> dict[str, float]:
        """Backward, clip, update, move the average; returns the seconds of "backward" and "optimizer"."""
        started = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        backward = time.perf_counter()
        norm = torch.nn.utils.clip_grad_norm_(self.trainable, 1.0, foreach=True)
        if bool(torch.isfinite(norm)):  # (under DDP every rank sees the same all-reduced gradients)
            self.optimizer.step()
            with torch.no_grad():
                torch._foreach_lerp_(self.ema_pairs[0], self.ema_pairs[1], 1.0 - self.ema_decay)
        else:
            self.skipped += 1
            self.optimizer.zero_grad(set_to_none=True)
            if self.skipped == 1 or self.skipped % 100 == 0:
                log.warning("an update skipped: non-finite loss or gradients (%d skipped so far)", self.skipped)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # honest phase times
        self.rate.tick()
        return {"backward": backward - started, "optimizer": time.perf_counter() - backward}

    def ema_lag(self) -> dict[str, float | None]:
        """How far behind the trained weights the averaged ones (what robots run) are: the
        average's mean age, in updates and in seconds at the recent update rate."""
        d = self.ema_decay
        updates = d / (1.0 - d) if d < 1 else float("inf")
        rate = self.rate.per_s()
        return {"ema_lag_updates": round(updates, 1), "updates_per_s": round(rate, 2) if rate else None,
                "ema_lag_s": round(updates / rate, 1) if rate else None}
