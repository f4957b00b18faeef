"""Training algorithms, one module each, chosen by name.

An algorithm decides which action tokens of an episode are training labels and how a batch
becomes a loss. The trainer, the sampler and the store do not know which algorithm they serve.
"""

from __future__ import annotations

from learner.algorithms.base import Algorithm
from learner.algorithms.hg_dagger import HGDagger, HGDaggerConfig
from learner.algorithms.recap import Recap, RecapConfig

ALGORITHMS: dict[str, type] = {"hg_dagger": HGDagger, "recap": Recap}


def make_algorithm(name: str, **overrides) -> Algorithm:
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; known: {sorted(ALGORITHMS)}")
    if name == "hg_dagger":
        return HGDagger(HGDaggerConfig(**overrides))
    if name == "recap":
        return Recap(RecapConfig(**overrides))
    return ALGORITHMS[name](**overrides)


__all__ = ["Algorithm", "ALGORITHMS", "make_algorithm", "HGDagger", "HGDaggerConfig", "Recap", "RecapConfig"]
