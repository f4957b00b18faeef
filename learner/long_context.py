"""Training a long-context policy in three stages (ALGORITHMS.md section 2, PTP's recipe), as
the trainer does when `policy_overrides` ask for obs_steps > 1:

  1. encoder + head end to end with a short context (`TrainerConfig.short_context`), for
     `bootstrap_updates`;
  2. the encoder is frozen and every frame is embedded once into the store's embedding cache
     (learner/embeddings.py); fleet episodes are embedded as they arrive, and their images are
     then dropped from memory;
  3. a long-context head, warm-started from stage 1's, trains alone on windows of cached
     embeddings (with PTP when the config says so): `head_updates` for version 0, then on
     fleet data as for any policy.

`LongContextStages` holds the trainer's steps between the stages; learner/trainer.py's Trainer
is built on it and gives it `config`, `target` (the long-context PolicyConfig),
`policy_overrides`, `index`, `policy`, `cache` and `_reset_optimizer`.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from core.episode import EpisodeArrays
from learner.embeddings import EmbeddingCache
from learner.samplers import WindowIndex
from policy import PolicyConfig, VLAPolicy

log = logging.getLogger("fleetlearn.trainer")


class LongContextStages:
    def _stage1_config(self) -> PolicyConfig:
        """Stage 1's policy: the run's, with the short context and no past-token prediction."""
        overrides = {**self.policy_overrides, "past_token_prediction": False, "ptp_past_tokens": 0,
                     "verify_candidates": 1, **self.config.short_context}
        return self.policy_config(**overrides)

    def _embed(self, episode: EpisodeArrays) -> None:
        """Replaces an episode's images by its cached frame embeddings (stage 2)."""
        episode.arrays["frames"] = self.cache.frames(episode)
        for key in [k for k in episode.arrays if k.startswith("image/")]:
            del episode.arrays[key]

    def start_head_training(self, encoder: VLAPolicy, cache: EmbeddingCache | None = None,
                            end_to_end: bool = False) -> EmbeddingCache | None:
        """Stages 2 and 3: a long-context policy on `encoder`'s frozen weights; every indexed
        episode is embedded (through `cache`, or a new one in the store) and re-indexed for the
        long context. From here on training steps touch only the head, on cached embeddings.

        `end_to_end` instead keeps the encoder trainable and the images: long-context training
        without stages 2-3 (what the cache saves is measured against it)."""
        config = dataclasses.replace(self.target, **{f: getattr(encoder.config, f) for f in (
            "cameras", "image_size", "state_dim", "action_dim", "vocab")})
        self.policy = self.policy_class(config, encoder.state_norm, encoder.action_norm)
        self.policy.load_encoder(encoder)
        if self.config.warm_start_head:
            self.policy.head.warm_start(encoder.head, config.past_tokens)
        if end_to_end:
            self.index = self.index.rebuilt(config.horizon, config.past_tokens)
            self._reset_optimizer()
            return None
        self.embed_index(cache)
        self.index = self.index.rebuilt(config.horizon, config.past_tokens)
        self._reset_optimizer()
        return self.cache

    def embed_index(self, cache: EmbeddingCache | None = None) -> None:
        """Freezes the policy's encoder and replaces the images of every indexed episode by their
        frame embeddings (through `cache`, or a new one in the store); episodes indexed later are
        embedded as they arrive. The caller rebuilds its optimizer."""
        self.policy.freeze_encoder()
        self.cache = cache or EmbeddingCache(self.policy, self.config.data_dir)
        if self.cache.encoder_id != self.policy.encoder_id():
            raise ValueError("the embedding cache belongs to another encoder")
        started, computed = time.time(), self.cache.computed
        for item in self.index.episodes:
            self._embed(item.episode)
        log.info("frame embeddings of %d episodes (%d computed now, the rest cached) in %.1f s; encoder %s",
                 len(self.index.episodes), self.cache.computed - computed, time.time() - started,
                 self.cache.encoder_id)

    def _resume_head(self) -> None:
        """A resumed long-context head goes on training on cached embeddings (stage 3)."""
        self.policy.freeze_encoder()
        self.cache = EmbeddingCache(self.policy, self.config.data_dir)
        self.index = WindowIndex(horizon=self.policy.config.horizon, past=self.policy.config.past_tokens)
