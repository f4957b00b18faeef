"""Every number of the policy in one dataclass; it travels inside each checkpoint."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass
class PolicyConfig:
    # Embodiment: camera names (all HxWx3 uint8 of `image_size`), proprioception and action sizes.
    cameras: tuple[str, ...] = ("front", "wrist")
    image_size: int = 96
    state_dim: int = 7
    action_dim: int = 4
    # Images are area-downsampled to this size before the CNN: 48 px keeps a 4-5 cm cube at
    # ~5 px on a 40 cm workspace while making a training step ~4x cheaper on a CPU.
    encoder_image_size: int = 48
    # Random-shift augmentation in encoder pixels (DrQ-style); the main guard against
    # over-fitting 10-20 demonstrations.
    augment_shift_px: int = 3
    # Action chunk: the head predicts `horizon` (T) action tokens aligned with the observation
    # window of `obs_steps` (To) frames: tokens 0 .. To-2 are the actions already taken, token
    # To-1 is the current one, the rest the future. The robot executes `n_action_steps` tokens
    # from To-1 on before asking again (1 frame = current frame only, no past tokens).
    horizon: int = 8
    n_action_steps: int = 2
    obs_steps: int = 1
    # Past-token prediction (PTP): off, the loss covers tokens To-1 .. T-1 only; on, the past
    # tokens too (all of them, or only the last `ptp_past_tokens` when that is above 0).
    past_token_prediction: bool = False
    ptp_past_tokens: int = 0
    # Test-time self-verification: sample this many candidate chunks in one batched pass and
    # execute the one whose predicted past tokens lie closest to the actions actually executed
    # (1 = off; it needs past tokens, so obs_steps > 1).
    verify_candidates: int = 1
    # Diffusion transformer head. One decoder layer with a 2 x d_model feed-forward: on 10-20
    # demonstrations plus a fleet's corrections it learns as much as two layers with 4 x d_model
    # and trains ~2.3x faster on a CPU (docs/BENCHMARKS.md, "Trainer throughput").
    d_model: int = 128
    n_heads: int = 4
    n_layers: int = 1
    ffn_dim: int = 256
    keypoints: int = 32
    # The CNN's total stride before its keypoint maps: 2 gives 24 x 24 maps at 48 px, where a
    # cube spans ~2 cells; 4 (checkpoints from before this field) gave 12 x 12. On 50 push_cube
    # demonstrations 2 scored 24/60 against 12-14/60 for 4 (docs/BENCHMARKS.md), at ~1.7x the
    # encoder's cost (the fleet's head trains on cached embeddings, so only version 0 pays it).
    keypoint_stride: int = 2
    # Instruction vocabulary (lower-case words); unknown words map to a shared <unk> embedding.
    vocab: tuple[str, ...] = field(default_factory=tuple)
    # DDPM with a squared-cosine schedule for training, DDIM for sampling.
    train_diffusion_steps: int = 50
    inference_steps: int = 8
    # "sample": the head predicts the clean action chunk (x0); "epsilon": the added noise.
    # x0-prediction fits small datasets in far fewer updates, which is what a CPU can afford.
    prediction: str = "sample"
    # RECAP (learner/algorithms/recap.py): the head also sees an advantage indicator (0 none,
    # 1 negative, 2 positive), learned with conditioning dropout; inference uses `deploy_advantage`.
    advantage_conditioned: bool = False
    deploy_advantage: int = 2

    def __post_init__(self):
        if self.keypoint_stride not in (2, 4):
            raise ValueError(f"keypoint_stride must be 2 or 4, got {self.keypoint_stride}")
        if self.obs_steps < 1 or self.horizon < self.obs_steps + self.n_action_steps - 1:
            raise ValueError(f"horizon {self.horizon} must cover obs_steps - 1 = {self.obs_steps - 1} past tokens "
                             f"plus n_action_steps = {self.n_action_steps}")
        if self.verify_candidates < 1:
            raise ValueError(f"verify_candidates must be at least 1, got {self.verify_candidates}")
        if self.verify_candidates > 1 and self.obs_steps < 2:
            raise ValueError("self-verification (verify_candidates > 1) compares predicted past tokens with executed "
                             "actions, so it needs obs_steps >= 2")

    @property
    def frame_tokens(self) -> int:
        """Embedding tokens per observation frame: proprioception plus one per camera."""
        return 1 + len(self.cameras)

    @property
    def past_tokens(self) -> int:
        """Action tokens before the current step (To - 1)."""
        return self.obs_steps - 1

    def loss_token_mask(self) -> list[bool]:
        """Which of the T tokens the denoising loss covers (before per-token labels apply)."""
        past = self.past_tokens
        first = past
        if self.past_token_prediction:
            first = 0 if self.ptp_past_tokens <= 0 else max(0, past - self.ptp_past_tokens)
        return [i >= first for i in range(self.horizon)]

    def verified_past_tokens(self) -> int:
        """How many of the latest past tokens self-verification compares: those the loss trains
        with PTP (all past tokens without it, where none is trained)."""
        return sum(self.loss_token_mask()[:self.past_tokens]) or self.past_tokens

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PolicyConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown policy config fields {sorted(unknown)}")
        values = dict(data)
        # Checkpoints from before `ffn_dim` existed have the 4 x d_model feed-forward.
        values.setdefault("ffn_dim", 4 * values.get("d_model", cls.d_model))
        values.setdefault("keypoint_stride", 4)  # and from before `keypoint_stride`, 12 x 12 keypoint maps
        for name in ("cameras", "vocab"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)
