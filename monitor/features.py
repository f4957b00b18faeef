"""FLOAT's features: the policy's own observation embedding, one per executed action chunk.

A feature is the policy encoder's frame embeddings over its observation window (the last
`obs_steps` frames, the first frame standing in before the episode start), flattened, taken at
the first step of every chunk of `chunk_steps` steps. The same function turns expert
demonstrations into the reference bank (on the learner) and a rollout into its prefix (on the
robot), so both live in one embedding space; a new encoder means a new bank.
"""

from __future__ import annotations

import numpy as np

from core.episode import EpisodeArrays
from monitor.float_detector import ReferenceBank
from policy import VLAPolicy
from policy.embedding import embed_episode

CHUNK_STEPS = 8  # ARMADA's Ta


def window_feature(frames: np.ndarray) -> np.ndarray:
    """(To, F, d) frame embeddings of one observation window -> one flat feature vector."""
    return np.asarray(frames, np.float64).reshape(-1)


def episode_features(policy: VLAPolicy, episode: EpisodeArrays, chunk_steps: int = CHUNK_STEPS) -> np.ndarray:
    """(chunks, To * F * d) features at steps 0, chunk_steps, 2 * chunk_steps, ... of an episode."""
    frames = episode.arrays["frames"] if "frames" in episode.arrays else embed_episode(policy, episode)
    past = policy.config.obs_steps - 1
    starts = range(0, episode.num_steps, chunk_steps)
    return np.stack([window_feature(frames[np.clip(np.arange(t - past, t + 1), 0, None)]) for t in starts])


def build_reference_bank(policy: VLAPolicy, demonstrations: list[EpisodeArrays],
                         chunk_steps: int = CHUNK_STEPS) -> ReferenceBank:
    """The expert demonstrations (successful ones) as FLOAT's reference bank for this policy."""
    kept = [e for e in demonstrations if e.success]
    return ReferenceBank.from_sequences([episode_features(policy, e, chunk_steps) for e in kept], [e.task for e in kept])
