"""Frame-embedding cache: stage 2 of long-context training.

Once the encoder is frozen, every stored frame is embedded once and the head trains on the cached
embeddings (no images loaded, no CNN run). The cache lives in the episode store, under
`embeddings/<encoder id>/`, one safetensors file per episode holding "frames" (steps, F, d_model)
float32. The encoder id is a digest of the encoder's weights (VLAPolicy.encoder_id), so a cache
can never be read with another encoder: opening the cache for a new encoder deletes the others.
Without a store directory (offline training, benchmarks) the cache is kept in memory.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from core.episode import EpisodeArrays
from core.durable import private_tmp, safe_name
from policy import VLAPolicy
from policy.embedding import embed_episode

log = logging.getLogger("fleetlearn.embeddings")

class EmbeddingCache:
    def __init__(self, policy: VLAPolicy, store_root: Path | None = None):
        if not policy.encoder_frozen:
            raise ValueError("embeddings are cached for a frozen encoder only (VLAPolicy.freeze_encoder)")
        self.policy = policy
        self.encoder_id = policy.encoder_id()
        self.memory: dict[tuple[str, str], np.ndarray] = {}
        self.directory: Path | None = None
        self.computed = self.loaded = 0
        if store_root is not None:
            base = Path(store_root) / "embeddings"
            base.mkdir(parents=True, exist_ok=True)
            for stale in base.iterdir():
                if stale.name != self.encoder_id:
                    log.info("encoder changed: dropping cached embeddings %s", stale.name)
                    shutil.rmtree(stale, ignore_errors=True)
            self.directory = base / self.encoder_id
            self.directory.mkdir(exist_ok=True)

    def _path(self, episode: EpisodeArrays) -> Path:
        return self.directory / f"{safe_name(episode.robot_id)}+{safe_name(episode.episode_id)}.safetensors"

    def frames(self, episode: EpisodeArrays) -> np.ndarray:
        """(steps, F, d_model) embeddings of the episode's frames: cached, or computed and cached."""
        key = (episode.robot_id, episode.episode_id)
        if key in self.memory:
            return self.memory[key]
        if self.directory is not None and self._path(episode).is_file():
            frames = load_file(str(self._path(episode)))["frames"]
            if len(frames) == episode.num_steps:
                self.loaded += 1
                return frames
            log.warning("cached embeddings of %s/%s have %d steps, the episode %d: recomputing",
                        *key, len(frames), episode.num_steps)
        frames = embed_episode(self.policy, episode)
        self.computed += 1
        if self.directory is None:
            self.memory[key] = frames
        else:
            path = self._path(episode)
            tmp = private_tmp(path)  # ranks of a torchrun trainer may embed the same episode at once
            save_file({"frames": frames}, str(tmp))
            os.replace(tmp, path)  # a cache: a torn write is recomputed, so no fsync
        return frames
