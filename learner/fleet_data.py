"""What the trainer learns from: the store's completed episodes, as the algorithm labels them.

`FleetData` is the trainer's data side (learner/trainer.py's Trainer is built on it, as on
learner/long_context.py's stages): it follows the store's completion order, skips what it has
seen, what another rank owns and what the algorithm does not want, keeps the frames at encoder
size (or, once the encoder is frozen, as cached embeddings) and indexes every labelled window.
It also assembles the batches (on the prefetch thread) and lets the algorithm relabel. The
Trainer gives it `config`, `reader`, `algorithm`, `sampler`, `dp`, `index`, `cache`, `seen`,
`float_calibration`, `last_completed_at`, `image_size` and `policy`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time

import numpy as np
import torch

from core.episode import EpisodeArrays
from learner.quarantine import Quarantine
from learner.samplers import LabelledEpisode
from learner.store.base import CorruptChunk
from policy.vla import downsample_images

log = logging.getLogger("fleetlearn.trainer")


class FleetData:
    def refresh(self) -> int:
        """Loads newly completed episodes the algorithm wants; returns how many windows it added."""
        added = 0
        for row in self.reader.complete_episodes(self.last_completed_at):
            self.last_completed_at = max(self.last_completed_at, row["completed_at"])
            key = (row["robot_id"], row["episode_id"])
            if key in self.seen:
                continue
            self.seen.add(key)
            if self.config.tasks is not None and row["task"] not in self.config.tasks:
                continue
            self.float_calibration.observe(row)
            if row["kind"] == "training":  # the adaptive sampler's success term
                self.sampler.observe(row["task"], bool(row["success"]) and not row["human_steps"])
            if row["kind"] != "demonstration" and not self.dp.owns(*key):
                continue  # another rank learns from it
            if not self.algorithm.wants_episode(row["kind"], bool(row["success"]), row["human_steps"] or 0):
                continue
            try:
                episode = self.reader.load_episode(row)
            except CorruptChunk as exc:  # quarantined and skipped: the trainer goes on with the rest
                if self.config.data_dir is not None:
                    Quarantine(self.config.data_dir).put(self.config.data_dir / exc.path, "episodes", str(exc))
                continue
            added += self.add_episode(episode, online=row["kind"] != "demonstration")
        return added

    def add_episode(self, episode: EpisodeArrays, online: bool) -> int:
        """Labels one episode with the algorithm and indexes its windows; returns how many."""
        episode = dataclasses.replace(episode, arrays=dict(episode.arrays))  # the caller's stays as it was
        for key in [k for k in episode.arrays if k.startswith("image/")]:
            self.camera_image_size = episode.arrays[key].shape[1]
            # Cache frames at encoder size: a quarter of the memory, and no resize per batch.
            episode.arrays[key] = downsample_images(torch.from_numpy(episode.arrays[key]), self.image_size).numpy()
        if self.cache is not None:
            self._embed(episode)
        return self.index.add(LabelledEpisode(episode, self.algorithm.step_labels(episode), online=online))

    def relabel(self) -> dict[str, float]:
        """Lets the algorithm recompute its labels (RECAP's advantages)."""
        if self.policy is None or not self.index.episodes:
            return {}
        return self.algorithm.relabel(self.index, self.policy, cached=self.cache is not None)

    def make_batch(self, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """One batch of the current index, on the host (the prefetch thread calls this)."""
        index, policy = self.index, self.policy
        picks = self.sampler.sample(index, self.config.batch_size, rng)
        return index.batch(picks, policy.config.cameras, functools.partial(policy.tokenize, device="cpu"),
                           cached=self.cache is not None)

    def demonstrations(self) -> int:
        counts = self.reader.demonstration_counts()
        return sum(n for task, n in counts.items() if self.config.tasks is None or task in self.config.tasks)

    def wait_for_demonstrations(self, should_stop) -> bool:
        """Waits until every rank sees `min_demos` demonstrations; False if told to stop first."""
        while not self.dp.all(self.demonstrations() >= self.config.min_demos):
            if self.dp.agree(should_stop())[0]:
                return False
            log.info("waiting for demonstrations: %d of %d", self.demonstrations(), self.config.min_demos)
            time.sleep(2.0)
        return True
