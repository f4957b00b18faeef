"""What the trainer asks of an algorithm, and the registry that names the algorithms.

An algorithm is a subclass of `Algorithm`, registered under a name with the config dataclass that
holds every number it takes:

    @ALGORITHMS.register("hg_dagger", HGDaggerConfig)
    class HGDagger(Algorithm): ...

Three methods make an algorithm: which stored episodes to load, which of their steps are labels,
and the loss of a batch. Everything else the trainer calls is a hook that does nothing here, so
the trainer calls each one unconditionally and an algorithm overrides only the hooks it needs.

The registry fills as the algorithm modules are imported: learner/algorithms/__init__.py imports
every one, and Python runs it before any module of the package, this one included, so whoever
imports ALGORITHMS from here finds them all.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from core.episode import EpisodeArrays
from core.registry import ConfigError, Registry
from policy import VLAPolicy

ALGORITHMS: Registry[type["Algorithm"]] = Registry("algorithm")


class Algorithm:
    # PolicyConfig fields the algorithm's policy must have, merged over the run's own once
    # (RECAP conditions the policy on an advantage token). Read-only: shared by every instance.
    policy_overrides: dict[str, Any] = {}
    # Why the algorithm trains on one rank only under torchrun; None: it is data-parallel.
    single_rank_reason: str | None = None

    def __init__(self, config: Any = None):
        self.config = config

    # -- what every algorithm defines ----------------------------------------------------------

    def wants_episode(self, kind: str, success: bool, human_steps: int) -> bool:
        """Whether the trainer should load this stored episode at all (cheap: the index row only)."""
        raise NotImplementedError

    def step_labels(self, episode: EpisodeArrays) -> np.ndarray:
        """Bool per step: may this step's executed action be a training label? May attach
        per-step arrays to `episode.arrays` ("window/NAME" ones reach the batch as NAME)."""
        raise NotImplementedError

    def loss(self, policy: VLAPolicy, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss to minimise on one sampled batch, plus named figures to log ("denoise_loss" among them)."""
        raise NotImplementedError

    # -- hooks: no-ops unless an algorithm needs them ------------------------------------------

    @classmethod
    def trainer(cls) -> type | None:
        """The trainer class that runs this algorithm; None: learner.trainer.Trainer, the fleet
        loop of supervised updates. An algorithm with a loop of its own (RL-Co's PPO iterations)
        names a subclass of it."""
        return None

    def extra_parameters(self, policy: VLAPolicy) -> list[nn.Parameter]:
        """More trainable parameters for the trainer's optimizer (RECAP's value network), built
        for `policy`'s shape. Called whenever the optimizer is rebuilt."""
        return []

    def relabel(self, index, policy: VLAPolicy, cached: bool = False) -> dict[str, float]:
        """Recomputes labels once the data or the models have moved (after each refresh and
        before version 0), on `index` (a WindowIndex); returns named figures to log."""
        return {}

    def artifacts(self) -> dict[str, dict[str, np.ndarray]]:
        """State saved with each published version (name -> arrays), read back by `restore`."""
        return {}

    def restore(self, artifacts: dict[str, dict[str, np.ndarray]], policy: VLAPolicy) -> None:
        """Takes back the state of `artifacts` when a restarted trainer resumes a version."""


def make_algorithm(name: str, config: Any = None) -> Algorithm:
    """The algorithm registered as `name`, with `config`: its config dataclass, a dict of its
    fields (text converted as from the command line, nested dataclasses as dicts), or None for
    its defaults."""
    entry = ALGORITHMS.get(name)
    if config is None or isinstance(config, dict):
        return ALGORITHMS.build(name, config)
    if entry.config is None or not isinstance(config, entry.config):
        wanted = entry.config.__name__ if entry.config else "no settings"
        raise ConfigError(f"algorithm {name!r} takes {wanted}, got a {type(config).__name__}")
    return ALGORITHMS.make(name, config)
