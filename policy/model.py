"""Network modules: a keypoint CNN per camera and a diffusion transformer head.

The head follows Chi et al.'s diffusion-policy transformer (action tokens attend to observation
tokens by cross-attention), scaled down to train on a CPU.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn


class SpatialSoftmax(nn.Module):
    """Expected (x, y) image position of each feature map: a compact, position-aware feature."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        b, k, h, w = features.shape
        attention = features.flatten(2).softmax(dim=-1)
        ys = torch.linspace(-1, 1, h, device=features.device).repeat_interleave(w)
        xs = torch.linspace(-1, 1, w, device=features.device).repeat(h)
        return torch.cat([(attention * xs).sum(-1), (attention * ys).sum(-1)], dim=-1)  # (b, 2k)


class CameraEncoder(nn.Module):
    """uint8 image -> one d_model token. `stride` (2 or 4): the conv stack's total stride, so the
    keypoint maps are image_size / stride on a side (the weights' shapes do not depend on it)."""

    def __init__(self, d_model: int, keypoints: int, stride: int = 4):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.GroupNorm(4, 16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=stride // 2, padding=1), nn.GroupNorm(8, 32), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1), nn.GroupNorm(8, 32), nn.ReLU(),
            nn.Conv2d(32, keypoints, 1),
        )
        self.keypoints = SpatialSoftmax()
        self.pooled = nn.AdaptiveAvgPool2d(1)
        self.project = nn.Linear(3 * keypoints, d_model)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        maps = self.conv(images)
        features = torch.cat([self.keypoints(maps), self.pooled(maps).flatten(1)], dim=-1)
        return self.project(features)


class Attention(nn.Module):
    """Multi-head attention with nn.MultiheadAttention's parameters (one in-projection for query,
    key and value, an out-projection) and its initialisation, written for the head's short
    sequences: the attention itself is two batched matmuls and a softmax, which on a CPU beats
    the fused kernels at 5-8 tokens and keeps bf16 autocast on its fast matmuls."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not a multiple of n_heads {n_heads}")
        self.n_heads = n_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d_model, d_model))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * d_model))
        self.out_proj = nn.Linear(d_model, d_model)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def _heads(self, x: torch.Tensor, parts: int) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, parts, self.n_heads, -1).permute(2, 0, 3, 1, 4)  # (parts, b, heads, n, d_head)

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        """Self-attention over x (B, N, d), or cross-attention from x to memory (B, M, d)."""
        if memory is None:
            q, k, v = self._heads(F.linear(x, self.in_proj_weight, self.in_proj_bias), 3)
        else:
            d = x.shape[-1]
            q = self._heads(F.linear(x, self.in_proj_weight[:d], self.in_proj_bias[:d]), 1)[0]
            k, v = self._heads(F.linear(memory, self.in_proj_weight[d:], self.in_proj_bias[d:]), 2)
        weights = (q @ k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
        out = weights.softmax(-1) @ v  # (b, heads, n, d_head)
        return self.out_proj(out.transpose(1, 2).reshape(x.shape))


class DecoderLayer(nn.Module):
    """Pre-norm transformer decoder layer: self-attention, cross-attention to the observation,
    ReLU feed-forward. Parameters, initialisation and function are nn.TransformerDecoderLayer's
    (norm_first, no dropout), so its checkpoints load; it runs ~25% faster on a CPU."""

    def __init__(self, d_model: int, n_heads: int, dim_feedforward: int):
        super().__init__()
        self.self_attn = Attention(d_model, n_heads)
        self.multihead_attn = Attention(d_model, n_heads)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d_model), nn.LayerNorm(d_model), nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.norm1(x))
        x = x + self.multihead_attn(self.norm2(x), memory)
        return x + self.linear2(F.relu(self.linear1(self.norm3(x))))


class Decoder(nn.Module):
    """`n_layers` decoder layers; like nn.TransformerDecoder, every layer starts as a copy of the first."""

    def __init__(self, layer: DecoderLayer, n_layers: int):
        super().__init__()
        self.layers = nn.ModuleList([copy.deepcopy(layer) for _ in range(n_layers)])

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, memory)
        return x


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class DiffusionTransformerHead(nn.Module):
    """Predicts the noise (or clean chunk) of a normalised action chunk given the observation.

    The observation is a text token plus `frames` x F frame tokens (F per frame: state and one per
    camera); a learned per-frame position tells the frames of a long context apart. The head owns
    everything that is trained on cached frame embeddings (stage 3 of long-context training).
    """

    def __init__(self, action_dim: int, horizon: int, d_model: int, n_heads: int, n_layers: int, ffn_dim: int,
                 frames: int = 1):
        super().__init__()
        self.d_model = d_model
        self.action_in = nn.Linear(action_dim, d_model)
        self.position = nn.Parameter(torch.zeros(1, horizon, d_model))
        self.frame_position = nn.Parameter(torch.zeros(1, frames, 1, d_model))
        self.obs_to_tokens = nn.Linear(d_model, d_model)
        self.time_mlp = nn.Sequential(nn.Linear(d_model, d_model), nn.Mish(), nn.Linear(d_model, d_model))
        self.decoder = Decoder(DecoderLayer(d_model, n_heads, ffn_dim), n_layers)
        self.out = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, action_dim))
        nn.init.normal_(self.position, std=0.02)
        nn.init.normal_(self.frame_position, std=0.02)

    def forward(self, noisy_actions: torch.Tensor, t: torch.Tensor, frames: torch.Tensor,
                text: torch.Tensor) -> torch.Tensor:
        """noisy_actions (B, T, A), t (B,), frames (B, To, F, d), text (B, d) -> (B, T, A)."""
        b = frames.shape[0]
        time_token = self.time_mlp(timestep_embedding(t, self.d_model)).unsqueeze(1)
        frame_tokens = (frames + self.frame_position).reshape(b, -1, self.d_model)
        memory = torch.cat([time_token, text.unsqueeze(1), frame_tokens], dim=1)
        # Every action token also sees the pooled current observation directly (on top of
        # cross-attention): with little data this makes the head condition on it much sooner.
        current = torch.cat([text.unsqueeze(1), frames[:, -1]], dim=1).mean(1, keepdim=True)
        x = self.action_in(noisy_actions) + self.position + self.obs_to_tokens(current)
        return self.out(self.decoder(x, memory))

    @torch.no_grad()
    def warm_start(self, other: "DiffusionTransformerHead", past_tokens: int) -> None:
        """Starts from a trained head of another context length (stage 1's short-context head):
        every weight of matching shape is copied; token positions are aligned at the current step
        (`other` has no past tokens); past tokens start near its current-step position."""
        own = self.state_dict()
        for name, value in other.state_dict().items():
            if name in ("position", "frame_position"):
                continue
            if name in own and own[name].shape == value.shape:
                own[name].copy_(value)
        shared = min(other.position.shape[1], self.position.shape[1] - past_tokens)
        self.position[:, past_tokens:past_tokens + shared] = other.position[:, :shared]
        self.position[:, :past_tokens] += other.position[:, :1]  # plus their own random init
