"""Training algorithms, one module (or folder) each, chosen by name from the registry.

An algorithm decides which action tokens of an episode are training labels and how a batch
becomes a loss (base.py says what the trainer asks of it). The trainer, the sampler and the store
do not know which algorithm they serve. Importing a module registers its algorithm: adding one is
a new module and its import here.
"""

from __future__ import annotations

from learner.algorithms.base import ALGORITHMS, Algorithm, make_algorithm
from learner.algorithms.hg_dagger import HGDagger, HGDaggerConfig
from learner.algorithms.recap import Recap, RecapConfig
from learner.algorithms.rl_co import RLCo, RLCoSettings

__all__ = ["ALGORITHMS", "Algorithm", "make_algorithm", "HGDagger", "HGDaggerConfig", "Recap", "RecapConfig",
           "RLCo", "RLCoSettings"]
