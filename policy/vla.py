"""VLAPolicy: cameras + instruction + proprioception -> a chunk of future actions by diffusion.

Batch layout shared by training and inference (torch tensors, leading batch axis B):
    "image/<camera>"  uint8  (B, H, W, 3)
    "state"           float  (B, state_dim)          raw units
    "tokens"          int64  (B, L)                  from `tokenize`, 0 = padding
    "action"          float  (B, horizon, action_dim) raw units          (training only)
    "label_mask"      bool   (B, horizon)  which action tokens carry a label (training only)
"""

from __future__ import annotations

import re

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from policy.config import PolicyConfig
from policy.diffusion import DiffusionSchedule
from policy.model import CameraEncoder, DiffusionTransformerHead
from policy.normalize import Normalizer

_PAD, _UNK = 0, 1


def instruction_words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


class VLAPolicy(nn.Module):
    def __init__(self, config: PolicyConfig, state_norm: Normalizer | None = None,
                 action_norm: Normalizer | None = None):
        super().__init__()
        if config.obs_steps > 1:
            raise NotImplementedError("obs_steps > 1 (long context) needs the history encoder, which is not built "
                                      "yet: this policy encodes the current frame only")
        self.config = config
        c = config
        self.word_index = {w: i + 2 for i, w in enumerate(c.vocab)}
        self.word_embedding = nn.Embedding(len(c.vocab) + 2, c.d_model, padding_idx=_PAD)
        self.camera_encoders = nn.ModuleDict({cam: CameraEncoder(c.d_model, c.keypoints) for cam in c.cameras})
        self.state_in = nn.Sequential(nn.Linear(c.state_dim, c.d_model), nn.Mish(), nn.Linear(c.d_model, c.d_model))
        self.head = DiffusionTransformerHead(c.action_dim, c.horizon, c.d_model, c.n_heads, c.n_layers)
        self.state_norm = state_norm or Normalizer.identity(c.state_dim)
        self.action_norm = action_norm or Normalizer.identity(c.action_dim)
        self.schedule = DiffusionSchedule(c.train_diffusion_steps, c.inference_steps)

    # -- inputs --------------------------------------------------------------------------------

    def tokenize(self, instructions: list[str]) -> torch.Tensor:
        ids = [[self.word_index.get(w, _UNK) for w in instruction_words(text)] or [_UNK] for text in instructions]
        width = max(len(row) for row in ids)
        return torch.tensor([row + [_PAD] * (width - len(row)) for row in ids], dtype=torch.long)

    def _images(self, pixels: torch.Tensor, augment: bool) -> torch.Tensor:
        x = downsample_images(pixels, self.config.encoder_image_size).permute(0, 3, 1, 2).float() / 255.0
        if augment and self.config.augment_shift_px > 0:
            x = _random_shift(x, self.config.augment_shift_px)
        return x

    def encode_observation(self, batch: dict[str, torch.Tensor], augment: bool = False) -> torch.Tensor:
        """Observation tokens (B, 2 + cameras, d_model): instruction, state, one per camera."""
        tokens = batch["tokens"]
        words = self.word_embedding(tokens)
        present = (tokens != _PAD).float().unsqueeze(-1)
        text = (words * present).sum(1) / present.sum(1).clamp(min=1)
        state = self.state_in(self.state_norm.normalize(batch["state"].float()))
        cams = [self.camera_encoders[cam](self._images(batch[f"image/{cam}"], augment)) for cam in self.config.cameras]
        return torch.stack([text, state, *cams], dim=1)

    # -- training ------------------------------------------------------------------------------

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """DDPM denoising MSE (on eps or x0, per config) over the action tokens that carry a label."""
        actions = self.action_norm.normalize(batch["action"].float())
        mask = batch["label_mask"].float() * torch.tensor(self.config.loss_token_mask(), dtype=torch.float32)
        obs = self.encode_observation(batch, augment=self.training)
        noise = torch.randn_like(actions)
        t = torch.randint(0, self.schedule.train_steps, (actions.shape[0],))
        predicted = self.head(self.schedule.add_noise(actions, noise, t), t, obs)
        target = actions if self.config.prediction == "sample" else noise
        per_token = ((predicted - target) ** 2).mean(-1)
        return (per_token * mask).sum() / mask.sum().clamp(min=1.0)

    # -- inference -----------------------------------------------------------------------------

    @torch.no_grad()
    def predict_action_chunk(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> np.ndarray:
        """Samples (B, horizon, action_dim) actions in raw units."""
        obs = self.encode_observation(batch, augment=False)
        b = obs.shape[0]
        shape = (b, self.config.horizon, self.config.action_dim)
        normalized = self.schedule.sample(lambda x, t: self.head(x, t, obs), shape, self.config.prediction, generator)
        return self.action_norm.unnormalize(normalized).numpy()

    def observation_batch(self, images: dict[str, np.ndarray], state: np.ndarray, instruction: str) -> dict[str, torch.Tensor]:
        """One robot observation as a batch of size 1."""
        batch = {f"image/{cam}": torch.from_numpy(np.ascontiguousarray(images[cam]))[None] for cam in self.config.cameras}
        batch["state"] = torch.from_numpy(np.asarray(state, np.float32))[None]
        batch["tokens"] = self.tokenize([instruction])
        return batch


def downsample_images(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, size, size, 3) uint8 by area averaging, rounded to uint8.

    The trainer caches frames at encoder size with this function and the policy applies it to
    full-size frames at inference, so both see bit-identical pixels.
    """
    if pixels.shape[1] == size and pixels.shape[2] == size:
        return pixels
    x = F.interpolate(pixels.permute(0, 3, 1, 2).float(), size=(size, size), mode="area")
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def _random_shift(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Pads by edge replication and crops back at a random integer offset per sample."""
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    rows = torch.randint(0, 2 * pad + 1, (b, 1)) + torch.arange(h)
    cols = torch.randint(0, 2 * pad + 1, (b, 1)) + torch.arange(w)
    shifted = padded[torch.arange(b)[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # (b, h, w, c)
    return shifted.permute(0, 3, 1, 2)
