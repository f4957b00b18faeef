"""Policy families chosen by name (`fleet learner --policy vla`), and what a family must provide.

The trainer, the robot's runner and the checkpoint format see a policy only through `Policy`
below. A new family (an ACT or a flow-matching VLA, say) is one module with a class that
satisfies it plus one registration:

    @POLICIES.register("act", ActConfig)
    class ActPolicy(nn.Module): ...

and `fleet learner --policy act --policy.chunk-size 50` trains it. A named variant of a family
is a registration of the same class with a config subclass holding other defaults ("ptp" below
is the VLA with long context, past-token prediction and self-verification).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch

from core.registry import Registry, build_config
from policy.config import PolicyConfig
from policy.normalize import Normalizer
from policy.vla import VLAPolicy

POLICIES = Registry("policy")


@runtime_checkable
class Policy(Protocol):
    """What the fleet needs of a policy family.

    Embodiment and every number: `config`, a dataclass with `cameras`, `image_size`, `state_dim`,
    `action_dim`, `horizon`, `n_action_steps`, `obs_steps`, `to_dict()` and `from_dict()`; it
    travels inside each checkpoint.
    Normalisation: `state_norm` and `action_norm` (policy.normalize.Normalizer), fitted by the
    trainer on demonstrations and saved with the weights; the policy works in normalised units.
    Training: `compute_loss(batch)` -> (scalar loss, per-sample loss) on a batch of windows.
    Acting: `predict_action_chunk(batch, generator)` -> (horizon, action_dim) raw actions; the
    runner calls `embed_frames`, `tokenize`/`embed_text` and `sample_normalized` for receding-
    horizon execution over cached frame embeddings.
    Checkpoint round trip: `state_dict()`/`load_state_dict()` of safetensors-friendly tensors, the
    constructor `Family(config, state_norm=..., action_norm=...)`, and `family` (its registered
    name, written into the checkpoint so a loader builds the same class).
    Optional encoder/head split, for training on cached embeddings: `freeze_encoder()`,
    `encoder_frozen`, `encoder_id()`, `load_encoder(other)`, `batch_frames(batch)`.
    """

    family: ClassVar[str]
    config: Any
    state_norm: Normalizer
    action_norm: Normalizer

    def compute_loss(self, batch: dict[str, torch.Tensor], *args, **kwargs): ...

    def predict_action_chunk(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None
                             ) -> np.ndarray: ...

    def state_dict(self, *args, **kwargs): ...

    def load_state_dict(self, state, strict: bool = True): ...


@dataclasses.dataclass
class LongContextConfig(PolicyConfig):
    """The long-context diffusion policy of ALGORITHMS.md section 2, scaled for a CPU: 16 frames of
    context (15 past action tokens), 9 current and future tokens, PTP on every past token and
    self-verification with 10 candidates. It trains in three stages (learner/trainer.py)."""

    obs_steps: int = 16
    horizon: int = 24
    n_action_steps: int = 2
    past_token_prediction: bool = True
    verify_candidates: int = 10


POLICIES.register("vla", PolicyConfig, help="keypoint CNN per camera + instruction + proprioception, diffusion "
                  "transformer head over an action chunk")(VLAPolicy)
POLICIES.register("ptp", LongContextConfig, help="the VLA with long context, past-token prediction and "
                  "self-verification")(VLAPolicy)
ALIASES = {"default": "vla"}  # the name earlier releases used for the plain VLA


def policy_class(name: str) -> type:
    return POLICIES.get(ALIASES.get(name, name)).factory


def family_config(name: str) -> type:
    """The config dataclass of `name`'s family (a variant's fields are overrides of it)."""
    return POLICIES.get(policy_class(name).family).config


def policy_overrides(name: str, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """The config fields a named policy sets over its family's defaults: the variant's own
    defaults, then `settings` (dotted flags or a config file, converted and checked by type)."""
    entry = POLICIES.get(ALIASES.get(name, name))
    family_defaults = POLICIES.get(entry.factory.family).config()
    config = build_config(entry.config, settings or {}, f"policy {name!r}")
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
            if f.init and getattr(config, f.name) != getattr(family_defaults, f.name)}
