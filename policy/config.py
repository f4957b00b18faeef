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
    # Action chunk: the head predicts `horizon` actions, the robot executes the first
    # `n_action_steps` before asking again. `obs_steps` is the observation window To
    # (1 = current frame only; long context comes with past-token prediction).
    horizon: int = 8
    n_action_steps: int = 2
    obs_steps: int = 1
    # Diffusion transformer head.
    d_model: int = 128
    n_heads: int = 4
    n_layers: int = 2
    keypoints: int = 32
    # Instruction vocabulary (lower-case words); unknown words map to a shared <unk> embedding.
    vocab: tuple[str, ...] = field(default_factory=tuple)
    # DDPM with a squared-cosine schedule for training, DDIM for sampling.
    train_diffusion_steps: int = 50
    inference_steps: int = 8
    # "sample": the head predicts the clean action chunk (x0); "epsilon": the added noise.
    # x0-prediction fits small datasets in far fewer updates, which is what a CPU can afford.
    prediction: str = "sample"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PolicyConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown policy config fields {sorted(unknown)}")
        values = dict(data)
        for name in ("cameras", "vocab"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)
