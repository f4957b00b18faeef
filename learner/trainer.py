"""The trainer: its own process, so a training step never stalls the gRPC server.

It follows the store: waits for enough offline demonstrations, trains version 0 on them to
convergence, publishes it, then keeps training on everything the algorithm labels (demos plus
fleet data as it streams in) and publishes a new version every N updates or T seconds.

The algorithm (learner/algorithms/) decides which steps are labels and what a batch's loss is;
the trainer calls its hooks unconditionally (base.py's are no-ops). An algorithm with a loop of
its own names its trainer, a subclass of this one, and learner/train_process.py runs that. A long-context
policy (obs_steps > 1 in `policy_overrides`) trains in three stages: learner/long_context.py.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.episode import EpisodeArrays
from learner.algorithms.base import make_algorithm
from learner.batches import BatchPrefetcher
from learner.distributed import DataParallel, policy_from_spec, policy_spec, write_rank_status
from learner.embeddings import EmbeddingCache
from learner.fleet_data import FleetData
from learner.float_calibration import FloatCalibration
from learner.long_context import LongContextStages
from learner.optimization import Optimization
from learner.quarantine import Quarantine, newest_sound
from learner.samplers import WindowIndex, make_sampler
from learner.store import open_reader
from learner.versions import open_registry
from policy import VLAPolicy, load_checkpoint, save_checkpoint
from policy.checkpoint import nonfinite_tensors
from policy.device import autocast, resolve_device, resolve_precision, to_device
from policy.normalize import Normalizer
from policy.pretrained import start_fleet_policy
from policy.registry import family_config, policy_class
from policy.vla import instruction_words

log = logging.getLogger("fleetlearn.trainer")


@dataclass
class TrainerConfig:
    data_dir: Path | None  # the learner's store; None for offline training (fit_offline)
    # The algorithm's registered name (learner/algorithms/), and its config: its config dataclass,
    # a dict of its fields that becomes one, or None for its defaults (`fleet plugins algorithm`).
    algorithm: str = "hg_dagger"
    algorithm_config: Any = None
    sampler: str = "offline_online_mix"
    # Train one policy on these tasks only (None: every task the fleet sends). The policy is
    # conditioned on each episode's instruction, so one network serves the whole list.
    tasks: tuple[str, ...] | None = None
    # Version 0: wait for this many demonstrations, then train this many updates on them.
    min_demos: int = 20
    bootstrap_updates: int = 1500
    # Later versions: a new one every `publish_every_updates` updates or `publish_every_s` seconds,
    # whichever comes first, and only once new fleet data has been trained on.
    publish_every_updates: int = 800
    publish_every_s: float = 60.0
    batch_size: int = 64
    # After version 0, at most this many updates a second (None: as fast as the core allows).
    # The scaling benchmark holds it equal for every fleet size, so only the data differs.
    max_updates_per_s: float | None = None
    lr: float = 1e-3            # version 0, from scratch
    finetune_lr: float = 1e-3   # later versions, fine-tuning on demos + fleet data
    weight_decay: float = 1e-6
    # Robots run an exponential moving average of the weights. A long average (~1000 updates)
    # keeps consecutive versions from swinging with the last few hundred noisy batches. Its lag,
    # decay / (1 - decay) updates, is recorded with every version in updates and in seconds.
    ema_decay: float = 0.999
    # After version 0: "frozen" trains what the algorithm needs on cached frame embeddings
    # (the encoder is version 0's, every frame is embedded once: learner/embeddings.py);
    # "finetune" goes on training the encoder on images, at `encoder_lr`.
    encoder: str = "frozen"
    encoder_lr: float = 1e-4
    # Where the trainer runs (policy/device.py): auto, cpu, cuda or cuda:N.
    device: str = "auto"
    # Training precision (policy/device.py): auto is bf16 autocast on CUDA and on CPUs with AMX or
    # AVX512-BF16 (weights, optimizer and robots' inference stay fp32), fp32 elsewhere.
    precision: str = "auto"
    # Batches assembled this many ahead on a thread of their own (0: on the training thread).
    prefetch: int = 2
    refresh_every_s: float = 5.0
    # Stop publishing after this Unix time (the demo uses it to leave time for evaluation).
    publish_until: float | None = None
    seed: int = 0
    # The policy family (policy/registry.py) and the fields of its config the run sets.
    policy: str = "vla"
    policy_overrides: dict = field(default_factory=dict)
    # Where version 0 starts (policy/pretrained.py): "default" the shipped multi-task base (if it
    # fits the fleet's embodiment; else from scratch, said in the log), "none" from scratch, or a
    # checkpoint directory written by `fleet pretrain`. Version 0 is the base fine-tuned on the
    # fleet's demonstrations for `bootstrap_updates`.
    base: str = "default"
    # Long context only: stage 1's short context (overrides on top of `policy_overrides`) and
    # the head-only updates of stage 3 that make version 0.
    short_context: dict = field(default_factory=lambda: {"obs_steps": 1, "horizon": 16})
    head_updates: int = 3000
    # Stage 3's head starts from stage 1's trained head (weights of matching shape, token
    # positions aligned at the current step) rather than from scratch.
    warm_start_head: bool = True
    # Scale-out: the Redis that indexes the store (learner/store/redis.py); None: the store's SQLite.
    redis_url: str | None = None


def trainer_reader(config: TrainerConfig, dp: DataParallel):
    """The store as the trainer reads it; with Redis, each rank follows the episode stream
    through its own consumer group."""
    if config.data_dir is None:
        return None
    return open_reader(config.data_dir, config.redis_url, group=f"trainer-{dp.rank}-of-{dp.world}",
                       consumer=f"rank-{dp.rank}")


ENCODER_MODES = ("frozen", "finetune")


class Trainer(FleetData, LongContextStages):
    def __init__(self, config: TrainerConfig):
        if config.encoder not in ENCODER_MODES:
            raise ValueError(f"encoder {config.encoder!r}: choose one of {ENCODER_MODES}")
        self.config = config
        self.device = resolve_device(config.device)
        self.precision = resolve_precision(self.device, config.precision)
        self.dp = DataParallel.current()  # rank 0 of 1 unless under torchrun (learner/distributed.py)
        self.reader = trainer_reader(config, self.dp)
        self.registry = open_registry(config.data_dir, config.redis_url) if config.data_dir else None
        self.algorithm = make_algorithm(config.algorithm, config.algorithm_config)
        self.sampler = make_sampler(config.sampler)
        # Ranks draw different batches and noise; their first weights are rank 0's (broadcast).
        self.rng = np.random.default_rng(config.seed + self.dp.rank)
        torch.manual_seed(config.seed + self.dp.rank)
        # The run's policy settings, with what the algorithm needs (RECAP: advantage conditioning).
        self.policy_overrides = {**config.policy_overrides, **self.algorithm.policy_overrides}
        self.policy_class, self.policy_config = policy_class(config.policy), family_config(config.policy)
        self.target = self.policy_config(**self.policy_overrides)
        self.long_context = self.target.obs_steps > 1
        first = self._stage1_config() if self.long_context else self.target
        self.index = WindowIndex(horizon=first.horizon, past=first.past_tokens)
        self.image_size = self.target.encoder_image_size
        self.cache: EmbeddingCache | None = None  # set once the head trains on cached embeddings
        self.seen: set[tuple[str, str]] = set()
        self.float_calibration = FloatCalibration()  # FLOAT's bank and threshold data per version
        self.last_completed_at = 0.0
        self.policy: VLAPolicy | None = None
        self.base_info: dict = {}  # where version 0 started (recorded with every version)
        self.opt: Optimization | None = None  # the optimizer and the weights' moving average
        self.loss = None  # batch -> (loss, figures), gradients averaged over the ranks
        self.updates, self.version = 0, -1  # no version published yet
        # Batches come from a thread of their own, with its own random stream.
        batch_rng = np.random.default_rng([config.seed, self.dp.rank, 1])
        self.batches = BatchPrefetcher(lambda: self.make_batch(batch_rng), depth=config.prefetch,
                                       pin_memory=self.device.type == "cuda")
        self.step_s = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0}  # time per phase, all steps

    # -- model ---------------------------------------------------------------------------------

    def _build_policy(self) -> None:
        """A fresh policy for what is indexed: the target one, or stage 1's short-context one."""
        demos = [item.episode for item in self.index.episodes]
        first = demos[0].arrays
        cameras = tuple(k.split("/", 1)[1] for k in first if k.startswith("image/"))
        vocab = sorted({w for e in demos for w in instruction_words(e.instruction)})
        base = self._stage1_config() if self.long_context else self.target
        config = dataclasses.replace(base, cameras=cameras, image_size=self.camera_image_size,
                                     state_dim=first["state"].shape[1], action_dim=first["action"].shape[1],
                                     vocab=tuple(vocab))
        self.policy, self.base_info = start_fleet_policy(self.policy_class, config, self.config.base,
                                                         {item.episode.task for item in self.index.episodes})
        if self.policy is None:
            states = np.concatenate([e.arrays["state"] for e in demos])
            actions = np.concatenate([e.arrays["action"] for e in demos])
            self.policy = self.policy_class(config, Normalizer.fit(states), Normalizer.fit(actions))
        if self.dp.active:  # every rank takes rank 0's architecture and normalisers
            spec = self.dp.broadcast_json(policy_spec(self.policy) if self.dp.leader else None)
            if not self.dp.leader:
                self.policy = policy_from_spec(spec)
        self._reset_optimizer()

    def _resume(self) -> bool:
        """Goes on from the newest version that loads, numbering on above all made; False if none loads."""
        checkpoint = newest_sound(self.registry, Quarantine(self.config.data_dir), load_checkpoint)
        if checkpoint is None:
            return False
        self.policy = checkpoint.policy
        self.image_size = self.policy.config.encoder_image_size
        self.version = max(checkpoint.version, self.registry.latest())
        self.updates = int(checkpoint.meta["info"].get("updates", 0))
        if self.policy.config.obs_steps > 1 or checkpoint.meta["info"].get("encoder") == "frozen":
            self._resume_head()  # its encoder was frozen: go on on cached embeddings
        self.algorithm.restore(checkpoint.artifacts, self.policy)
        self._reset_optimizer()
        log.info("resumed from version %d (%d updates)", checkpoint.version, self.updates)
        return True

    @property
    def ema(self) -> VLAPolicy | None:
        """The moving average of the weights: what robots run."""
        return self.opt.ema if self.opt else None

    def _reset_optimizer(self) -> None:
        """A fresh optimizer and moving average for `self.policy` as it is now (moved to the
        trainer's device)."""
        self.policy.to(self.device).train()
        self.loss = self.dp.loss_function(self.policy, self.algorithm, self.device)  # under torchrun: rank 0's weights
        c = self.config
        self.opt = Optimization(self.policy, self.algorithm.extra_parameters(self.policy), c.lr, c.weight_decay,
                                c.ema_decay, self.device)
        self.batches.reset()

    def train_step(self) -> dict[str, float]:
        batch = to_device(self.batches.next(), self.device)
        started = time.perf_counter()
        with autocast(self.device, self.precision):
            loss, figures = self.loss(batch)
        self.step_s["forward"] += time.perf_counter() - started
        skipped = self.opt.skipped
        for phase, seconds in self.opt.step(loss).items():
            self.step_s[phase] += seconds
        if self.opt.skipped == skipped:  # a non-finite step changed nothing and does not count
            self.updates += 1
        return figures

    def freeze_encoder(self) -> None:
        """After version 0 (encoder "frozen"): every indexed frame is embedded once with version
        0's encoder and from here on the steps train the rest on the cached embeddings."""
        self.policy.load_state_dict(self.ema.state_dict())
        self.embed_index()
        self._reset_optimizer()

    def start_fleet_training(self) -> None:
        """After version 0: the encoder frozen on cached embeddings (by default) and the fine-tuning
        learning rates."""
        c = self.config
        if c.encoder == "frozen" and not self.policy.encoder_frozen:
            self.freeze_encoder()
        self.opt.set_learning_rates(c.finetune_lr, c.encoder_lr)

    def bootstrap(self, updates: int, should_stop=lambda: False) -> float | None:
        """Version 0: trains the fresh policy on what is indexed (the demonstrations) to convergence.

        Returns the final mean loss, or None if stopped early. Robots then run the converged
        weights themselves, not a lagging average of them.
        """
        losses = []
        self.relabel()
        for i in range(updates):
            losses.append(self.train_step()["denoise_loss"])
            if (i + 1) % 100 == 0:
                log.info("version 0: update %d/%d, loss %.4f", i + 1, updates, np.mean(losses[-100:]))
            if self.dp.agree(should_stop())[0]:
                return None
        self.ema.load_state_dict(self.policy.state_dict())
        return float(np.mean(losses[-100:]))

    def train_version_zero(self, should_stop=lambda: False) -> float | None:
        """A fresh policy trained on the indexed demonstrations: end to end, or for a long context
        stage 1 end to end, then stages 2 and 3 (frozen encoder, head on cached embeddings)."""
        self._build_policy()
        loss = self.bootstrap(self.config.bootstrap_updates, should_stop)
        if loss is None or not self.long_context:
            return loss
        log.info("stage 1 done (loss %.4f); stage 2: embedding every frame with the frozen encoder", loss)
        self.start_head_training(self.ema)
        return self.bootstrap(self.config.head_updates, should_stop)

    def publish(self, note: str, figures: dict[str, float]) -> int:
        """Rank 0 writes and publishes the version; every rank records its weights' digest. Weights
        not all finite are never published: training goes on from the last sound version's weights."""
        if bad := nonfinite_tensors(self.ema.state_dict()):  # the ranks' weights agree: all see the same
            log.error("non-finite averaged weights (%s): version %d not published", ", ".join(bad[:3]), self.version + 1)
            if (sound := newest_sound(self.registry, Quarantine(self.config.data_dir), load_checkpoint)) is None:
                raise RuntimeError(f"non-finite weights ({', '.join(bad[:3])}) and no version to go back to")
            self.policy.load_state_dict(sound.policy.state_dict())  # the index, the cache and the updates stay
            self._reset_optimizer()
            self.opt.set_learning_rates(self.config.finetune_lr, self.config.encoder_lr)
            return self.version
        self.version += 1
        digests = self.dp.gather_digests(self.ema)
        online = sum(item.online for item in self.index.episodes)
        write_rank_status(self.config.data_dir, self.dp, {
            "version": self.version, "updates": self.updates, "weights_sha256": digests[self.dp.rank],
            "episodes": {"demonstration": len(self.index.episodes) - online, "fleet": online}})
        if not self.dp.leader:
            return self.version
        if len(set(digests)) > 1:
            log.error("the ranks' weights differ at version %d: %s", self.version, digests)
        info = {"updates": self.updates, "skipped_updates": self.opt.skipped, "algorithm": self.config.algorithm,
                "windows": len(self.index.windows), "episodes": len(self.index.episodes), "ranks": self.dp.world,
                "ranks_agree": len(set(digests)) == 1, "encoder": "frozen" if self.policy.encoder_frozen else "trained",
                "device": str(self.device), "precision": self.precision, **self.base_info, **self.opt.ema_lag(), **figures}
        if (fractions := self.sampler.online_fractions(self.index)) is not None:
            info["online_fraction"] = fractions
        demos = [item.episode for item in self.index.episodes if not item.online]
        bank, info["float"] = self.float_calibration.for_version(self.ema, demos, self.reader.load_episode)
        artifacts = {"float_bank": bank.as_arrays(), **self.algorithm.artifacts()}
        save_checkpoint(self.registry.checkpoint_dir(self.version), self.ema, self.version, info=info,
                        artifacts=artifacts)
        self.registry.add(self.version, info)
        self.registry.publish(self.version, note=note)
        log.info("published version %d (%s; %d updates, %d windows)", self.version, note, self.updates,
                 len(self.index.windows))
        return self.version

    # -- main loop -----------------------------------------------------------------------------

    def resume_or_wait_for_demos(self, should_stop) -> bool:
        """Resumes from the newest version that loads, or (none made, or none sound: numbering
        goes on) waits for `min_demos` demonstrations; False if told to stop meanwhile. Then loads
        what the store holds."""
        latest = self.dp.broadcast_json(self.registry.latest() if self.dp.leader else None)  # one answer for all ranks
        if latest is None or not self._resume():
            self.version = -1 if latest is None else latest
            if not self.wait_for_demonstrations(should_stop):
                return False
        self.refresh()
        return True

    def run(self, should_stop=lambda: False) -> None:
        c = self.config
        if not self.resume_or_wait_for_demos(should_stop):
            return
        if self.policy is None:
            loss = self.train_version_zero(should_stop)
            if loss is None:
                return
            # robots run version 0's converged weights themselves, not a lagging average of them
            self.publish("trained on offline demonstrations", {"denoise_loss": loss, "ema_lag_updates": 0.0,
                                                               "ema_lag_s": 0.0})
        self.start_fleet_training()
        last_publish, updates_at_publish, windows_at_publish = time.time(), self.updates, len(self.index.windows)
        last_refresh = 0.0
        losses = []
        while True:
            now = time.time()
            # One agreement per step: under torchrun every rank takes the same branches below.
            stop, refresh_due, closed, closing, time_due, new_data = self.dp.agree(
                should_stop(), now - last_refresh > c.refresh_every_s,
                c.publish_until is not None and now > c.publish_until,
                # the window's last version comes at its close; robots evaluate the one before meanwhile
                c.publish_until is not None and now + c.publish_every_s > c.publish_until,
                now - last_publish >= c.publish_every_s, len(self.index.windows) > windows_at_publish)
            if stop:
                return
            if refresh_due:
                added = self.refresh()
                last_refresh = now
                labels = self.relabel()
                if added:
                    log.info("loaded %d new windows (%d total)%s", added, len(self.index.windows),
                             "".join(f", {k} {v:.3g}" for k, v in labels.items()))
            if closed:
                if self.updates > updates_at_publish:  # the last version carries every update made
                    self.publish("last version of the publishing window", {"denoise_loss": float(np.mean(losses[-100:]))})
                log.info("publishing window closed; trainer idle")
                while not self.dp.agree(should_stop())[0]:
                    time.sleep(0.5)
                return
            due = self.updates - updates_at_publish >= c.publish_every_updates or time_due
            if due and new_data and not closing:
                self.publish("HG-DAgger update", {"denoise_loss": float(np.mean(losses[-100:]))})
                last_publish, updates_at_publish, windows_at_publish = time.time(), self.updates, len(self.index.windows)
            step_started = time.time()
            losses.append(self.train_step()["denoise_loss"])
            if c.max_updates_per_s:  # paced (no catching up after a slow spell): the same rate for any fleet size
                time.sleep(max(0.0, step_started + 1.0 / c.max_updates_per_s - time.time()))


def fit_offline(episodes: list[EpisodeArrays], updates: int, config: TrainerConfig | None = None) -> VLAPolicy:
    """Version 0 without a learner: a fresh policy trained on in-memory demonstrations, exactly
    as the trainer trains it from the store (benchmarks and experiments use this). `updates` is
    stage 1's budget for a long-context policy (its head then trains `config.head_updates`)."""
    config = dataclasses.replace(config or TrainerConfig(data_dir=None), bootstrap_updates=updates)
    trainer = Trainer(config)
    for episode in episodes:
        trainer.add_episode(episode, online=episode.kind != "demonstration")
    trainer.train_version_zero()
    return trainer.ema.eval()
