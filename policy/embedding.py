"""Frame embeddings of a whole recorded episode: the cache of long-context training (learner) and
FLOAT's features (both sides) compute them the same way."""

from __future__ import annotations

import numpy as np
import torch

from policy.vla import VLAPolicy

EMBED_BATCH = 256  # frames per encoder pass


@torch.no_grad()
def embed_episode(policy: VLAPolicy, episode) -> np.ndarray:
    """The encoder over every frame of an episode (`core.episode.EpisodeArrays` or anything with
    `arrays` and `num_steps`), without augmentation, in batches."""
    arrays = episode.arrays
    out = []
    for start in range(0, episode.num_steps, EMBED_BATCH):
        part = slice(start, start + EMBED_BATCH)
        images = {cam: torch.from_numpy(arrays[f"image/{cam}"][part]).to(policy.device) for cam in policy.config.cameras}
        state = torch.from_numpy(arrays["state"][part]).to(policy.device)
        out.append(policy.embed_frames(images, state).float().cpu().numpy())
    return np.concatenate(out).astype(np.float32)
