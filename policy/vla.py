"""VLAPolicy: cameras + instruction + proprioception -> a chunk of actions by diffusion.

The policy is an encoder (instruction words, proprioception MLP, one CNN per camera) that turns
each observation frame into F = 1 + cameras embedding tokens, and a diffusion head that denoises
`horizon` action tokens given the embeddings of the last `obs_steps` frames. With long context
the encoder is trained first (short context, end to end) and then frozen, and the head trains on
cached frame embeddings (learner/trainer.py); robots keep a rolling buffer of embeddings
(policy/runner.py).

Batch layout shared by training and inference (torch tensors, leading batch axis B, To frames):
    "image/<camera>"  uint8  (B, To, H, W, 3)   or (B, H, W, 3) when To = 1
    "state"           float  (B, To, state_dim) or (B, state_dim); raw units
    "frames"          float  (B, To, F, d_model) cached frame embeddings, instead of images + state
    "tokens"          int64  (B, L)                  from `tokenize`, 0 = padding
    "action"          float  (B, horizon, action_dim) raw units          (training only)
    "label_mask"      bool   (B, horizon)  which action tokens carry a label (training only)
"""

from __future__ import annotations

import hashlib
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
    family = "vla"  # its name in policy.registry.POLICIES, written into checkpoints
    ENCODER_MODULES = ("word_embedding", "camera_encoders", "state_in")

    def __init__(self, config: PolicyConfig, state_norm: Normalizer | None = None,
                 action_norm: Normalizer | None = None):
        super().__init__()
        self.config = config
        c = config
        self.word_index = {w: i + 2 for i, w in enumerate(c.vocab)}
        self.word_embedding = nn.Embedding(len(c.vocab) + 2, c.d_model, padding_idx=_PAD)
        self.camera_encoders = nn.ModuleDict({cam: CameraEncoder(c.d_model, c.keypoints, c.keypoint_stride)
                                              for cam in c.cameras})
        self.state_in = nn.Sequential(nn.Linear(c.state_dim, c.d_model), nn.Mish(), nn.Linear(c.d_model, c.d_model))
        # RECAP: an advantage indicator (0 none, 1 negative, 2 positive) added to the text token.
        # Outside the encoder, so it trains with the head on cached embeddings too.
        self.advantage_embedding = nn.Embedding(3, c.d_model) if c.advantage_conditioned else None
        self.head = DiffusionTransformerHead(c.action_dim, c.horizon, c.d_model, c.n_heads, c.n_layers, c.ffn_dim,
                                             c.obs_steps)
        self.state_norm = state_norm or Normalizer.identity(c.state_dim)
        self.action_norm = action_norm or Normalizer.identity(c.action_dim)
        self.schedule = DiffusionSchedule(c.train_diffusion_steps, c.inference_steps)

    # -- the encoder ---------------------------------------------------------------------------

    def encoder_parameters(self) -> list[nn.Parameter]:
        return [p for name in self.ENCODER_MODULES for p in getattr(self, name).parameters()]

    def freeze_encoder(self) -> None:
        """Stage 3: only the head trains; frame embeddings can then be cached."""
        for p in self.encoder_parameters():
            p.requires_grad_(False)

    @property
    def encoder_frozen(self) -> bool:
        return not any(p.requires_grad for p in self.encoder_parameters())

    def load_encoder(self, other: "VLAPolicy") -> None:
        """Copies another policy's encoder (weights and state normalisation); configs must agree on it."""
        for name in self.ENCODER_MODULES:
            getattr(self, name).load_state_dict(getattr(other, name).state_dict())
        self.state_norm = other.state_norm

    def encoder_id(self) -> str:
        """A digest of everything that determines frame embeddings; cached embeddings carry it."""
        digest = hashlib.sha256()
        c = self.config
        digest.update(repr((c.cameras, c.encoder_image_size, c.d_model, c.keypoints, c.keypoint_stride, c.vocab)).encode())
        for name in self.ENCODER_MODULES:
            for key, tensor in sorted(getattr(self, name).state_dict().items()):
                digest.update(key.encode())
                digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        digest.update(np.asarray(self.state_norm.centre, np.float32).tobytes())
        digest.update(np.asarray(self.state_norm.half_range, np.float32).tobytes())
        return digest.hexdigest()[:16]

    @property
    def device(self) -> torch.device:
        """Where the weights are; every tensor the policy makes is made there."""
        return self.head.position.device

    def tokenize(self, instructions: list[str], device: torch.device | str | None = None) -> torch.Tensor:
        """(B, L) word ids on `device` (the policy's by default), 0 = padding."""
        ids = [[self.word_index.get(w, _UNK) for w in instruction_words(text)] or [_UNK] for text in instructions]
        width = max(len(row) for row in ids)
        return torch.tensor([row + [_PAD] * (width - len(row)) for row in ids], dtype=torch.long,
                            device=self.device if device is None else device)

    def embed_text(self, tokens: torch.Tensor, advantage: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) word ids -> (B, d_model): the mean word embedding, plus for an advantage-
        conditioned policy the indicator's embedding (`advantage` (B,), by default the
        deployment value: robots run the policy conditioned on "positive")."""
        return self.condition(self._words(tokens), advantage)

    def _words(self, tokens: torch.Tensor) -> torch.Tensor:
        words = self.word_embedding(tokens)
        present = (tokens != _PAD).float().unsqueeze(-1)
        return (words * present).sum(1) / present.sum(1).clamp(min=1)

    def condition(self, text: torch.Tensor, advantage: torch.Tensor | None) -> torch.Tensor:
        if self.advantage_embedding is None:
            return text
        if advantage is None:
            advantage = torch.full((text.shape[0],), self.config.deploy_advantage, dtype=torch.long, device=text.device)
        return text + self.advantage_embedding(advantage.long())

    def embed_frames(self, images: dict[str, torch.Tensor], state: torch.Tensor, augment: bool = False) -> torch.Tensor:
        """N frames -> (N, F, d_model): images "camera" -> (N, H, W, 3) uint8, state (N, state_dim)."""
        tokens = [self.state_in(self.state_norm.normalize(state.float()))]
        tokens += [self.camera_encoders[cam](self._images(images[cam], augment)) for cam in self.config.cameras]
        return torch.stack(tokens, dim=1)

    def _images(self, pixels: torch.Tensor, augment: bool) -> torch.Tensor:
        x = downsample_images(pixels, self.config.encoder_image_size).permute(0, 3, 1, 2).float() / 255.0
        if augment and self.config.augment_shift_px > 0:
            x = _random_shift(x, self.config.augment_shift_px)
        return x

    def batch_frames(self, batch: dict[str, torch.Tensor], augment: bool = False) -> torch.Tensor:
        """The batch's observation window as frame embeddings (B, To, F, d): cached ones if it
        carries them, else the encoder over its images and states."""
        if "frames" in batch:
            return batch["frames"].float()
        state = batch["state"]
        if state.dim() == 2:
            state = state.unsqueeze(1)
        b, frames = state.shape[:2]
        images = {}
        for cam in self.config.cameras:
            pixels = batch[f"image/{cam}"]
            images[cam] = pixels.reshape(b * frames, *pixels.shape[-3:])
        return self.embed_frames(images, state.reshape(b * frames, -1), augment).reshape(b, frames, -1, self.config.d_model)

    def _observation(self, batch: dict[str, torch.Tensor], augment: bool) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.encoder_frozen):
            frames = self.batch_frames(batch, augment)
            text = self._words(batch["tokens"])
        text = self.condition(text, batch.get("advantage"))
        if frames.shape[1] != self.config.obs_steps:
            raise ValueError(f"the batch holds {frames.shape[1]} frames per sample; this policy takes "
                             f"obs_steps = {self.config.obs_steps}")
        return frames, text

    # -- training ------------------------------------------------------------------------------

    def compute_loss(self, batch: dict[str, torch.Tensor],
                     observation: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """DDPM denoising MSE (on eps or x0, per config) over the action tokens the loss mask covers
        (PTP setting) that carry a label. `observation`: the batch's (frames, text) when the caller
        has already computed them with `_observation` (so the encoder runs once)."""
        actions = self.action_norm.normalize(batch["action"].float())
        mask = batch["label_mask"].float() * torch.tensor(self.config.loss_token_mask(), dtype=torch.float32,
                                                          device=actions.device)
        frames, text = observation or self._observation(batch, augment=self.training)
        noise = torch.randn_like(actions)
        t = torch.randint(0, self.schedule.train_steps, (actions.shape[0],), device=actions.device)
        predicted = self.head(self.schedule.add_noise(actions, noise, t), t, frames, text)
        target = actions if self.config.prediction == "sample" else noise
        per_token = ((predicted - target) ** 2).mean(-1)
        return (per_token * mask).sum() / mask.sum().clamp(min=1.0)

    # -- inference -----------------------------------------------------------------------------

    @torch.no_grad()
    def sample_normalized(self, frames: torch.Tensor, text: torch.Tensor,
                          generator: torch.Generator | None = None) -> torch.Tensor:
        """Samples (B, horizon, action_dim) chunks in normalised units from frame embeddings."""
        shape = (frames.shape[0], self.config.horizon, self.config.action_dim)
        return self.schedule.sample(lambda x, t: self.head(x, t, frames, text), shape, self.config.prediction, generator,
                                    device=frames.device)

    @torch.no_grad()
    def predict_action_chunk(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> np.ndarray:
        """Samples (B, horizon, action_dim) actions in raw units."""
        frames, text = self._observation(batch, augment=False)
        return self.action_norm.unnormalize(self.sample_normalized(frames, text, generator)).cpu().numpy()

    @torch.no_grad()
    def verified_chunk(self, frames: torch.Tensor, text: torch.Tensor, executed: np.ndarray, candidates: int,
                       generator: torch.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Self-verification: samples `candidates` chunks for one observation window in one batched
        pass and returns (the chunk whose predicted past tokens lie closest to `executed`, the
        distance of every candidate).

        frames (1, To, F, d), text (1, d); executed (k, action_dim) raw actions of the last k steps,
        compared with past tokens To-1-k .. To-2 in normalised units (mean squared error).
        """
        k = len(executed)
        if not 0 < k <= self.config.past_tokens:
            raise ValueError(f"verification compares 1..{self.config.past_tokens} executed actions, got {k}")
        chunks = self.sample_normalized(frames.expand(candidates, -1, -1, -1), text.expand(candidates, -1), generator)
        past = self.config.past_tokens
        target = self.action_norm.normalize(torch.as_tensor(np.asarray(executed, np.float32), device=chunks.device))
        distance = ((chunks[:, past - k:past] - target) ** 2).mean(dim=(1, 2))
        best = int(distance.argmin())
        return self.action_norm.unnormalize(chunks[best]).cpu().numpy(), distance.cpu().numpy()

    def frame_inputs(self, images: dict[str, np.ndarray], state: np.ndarray) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One robot frame as `embed_frames` inputs (a batch of one)."""
        device = self.device
        pixels = {cam: torch.from_numpy(np.ascontiguousarray(images[cam]))[None].to(device) for cam in self.config.cameras}
        return pixels, torch.from_numpy(np.asarray(state, np.float32))[None].to(device)


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
    device = x.device
    rows = torch.randint(0, 2 * pad + 1, (b, 1), device=device) + torch.arange(h, device=device)
    cols = torch.randint(0, 2 * pad + 1, (b, 1), device=device) + torch.arange(w, device=device)
    shifted = padded[torch.arange(b, device=device)[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # (b, h, w, c)
    return shifted.permute(0, 3, 1, 2)
