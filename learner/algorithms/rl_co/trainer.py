"""RL-Co's trainer: both stages in the fleet loop (learner/algorithms/rl_co/__init__.py has the
settings, loss.py the loss).

Stage I, version 0: supervised co-training on demonstrations, a fixed fraction `real_fraction` of
every batch from real-proxy robots' demonstrations, the rest from sim robots' (`real_only`: the
real ones alone, the baseline without simulation).

Stage II, versions 1, 2, ...: PPO. Version 0 and every later version are published as RL versions
(checkpoint info "rl"), so sim robots sample their chunks as a Gaussian chain and stream the chain
with its log-likelihoods and the task's distance to the goal (policy/runner.py), while real-proxy
robots refuse RL rollouts and only run their evaluation seeds. Sim robots run rollouts in groups
of `group` episodes that share a task and seed. Once `episodes_per_iteration` training episodes
of the running version have arrived from sim robots, the trainer scores their chunks (the chunk's
task reward plus distance shaping; advantages against the group's other rollouts, or GAE on a
value head for an episode without a group), runs up to `epochs` passes of PPO minibatches (it
stops early when the policy has moved `target_kl` away), each with one batch of real-proxy
demonstrations under the anchor `beta` (0: RL without the real anchor), and publishes the result:

    per minibatch  L = L_PPO(sim chunks) + c_v * L_value - c_ent * H + beta * L_SFT(real batch)

(loss.py writes each term out). The RL loop is therefore the fleet loop: rollouts and weights travel as they do for HG-DAgger.

The policy stays in eval mode during stage II (no augmentation), so the log-likelihood the
trainer computes for a fresh rollout equals the one the robot recorded: PPO's ratio starts at 1.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np
import torch

from core.episode import EpisodeArrays
from learner.algorithms.rl_co.loss import ValueHead, chunk_rewards, gae, group_advantages, returns_to_go, rl_co_loss
from learner.samplers import GroupMixSampler, LabelledEpisode
from learner.trainer import Trainer, TrainerConfig
from policy.chain import GaussianChain
from policy.vla import downsample_images

log = logging.getLogger("fleetlearn.rl_co")

REAL_ROBOT_TYPES = ("real_proxy_cartesian_arm",)  # robots that stand in for physical ones


class RLCoTrainer(Trainer):
    def __init__(self, config: TrainerConfig):
        super().__init__(config)
        self.settings = self.algorithm.config  # RLCoSettings: stage I, PPO and (.loss) the loss
        s = self.settings
        self.sampler = GroupMixSampler({"real": 1.0} if s.real_only else {"real": s.real_fraction,
                                                                          "sim": 1.0 - s.real_fraction})
        self.anchor_sampler = GroupMixSampler({"real": 1.0})
        self.robot_types: dict[str, str] = {}
        self.rollouts: list[tuple[EpisodeArrays, str, int]] = []  # (episode, termination, seed), running version
        self.value_head: ValueHead | None = None
        self.rl_optimizer: torch.optim.Optimizer | None = None
        self.iterations = 0

    # -- data ----------------------------------------------------------------------------------

    def _robot_type(self, robot_id: str) -> str:
        if robot_id not in self.robot_types:
            embodiment = self.reader.robot_embodiment(robot_id)
            self.robot_types[robot_id] = embodiment.robot_type if embodiment else ""
        return self.robot_types[robot_id]

    def refresh(self) -> int:
        """Demonstrations join the supervised index (group "real" or "sim"); untouched training
        episodes of the running version from sim robots become rollouts."""
        added = 0
        for row in self.reader.complete_episodes(self.last_completed_at):
            self.last_completed_at = max(self.last_completed_at, row["completed_at"])
            key = (row["robot_id"], row["episode_id"])
            if key in self.seen or (self.config.tasks is not None and row["task"] not in self.config.tasks):
                continue
            self.seen.add(key)
            real = self._robot_type(row["robot_id"]) in REAL_ROBOT_TYPES
            if row["kind"] == "demonstration":
                if self.settings.real_only and not real:
                    continue
                added += self.add_demonstration(self.reader.load_episode(row), "real" if real else "sim")
            elif (row["kind"] == "training" and not real and not row["human_steps"]
                  and row["policy_version"] == self.version and self.version >= 0):
                episode = self.reader.load_episode(row)
                if "extra/rl/planned" in episode.arrays:
                    self.rollouts.append((episode, row["termination"], row["seed"]))
        return added

    def add_demonstration(self, episode: EpisodeArrays, group: str) -> int:
        episode = dataclasses.replace(episode, arrays=dict(episode.arrays))
        for key in [k for k in episode.arrays if k.startswith("image/")]:
            self.camera_image_size = episode.arrays[key].shape[1]
            episode.arrays[key] = downsample_images(torch.from_numpy(episode.arrays[key]), self.image_size).numpy()
        labels = self.algorithm.step_labels(episode)
        return self.index.add(LabelledEpisode(episode, labels, online=False, group=group))

    # -- publishing ----------------------------------------------------------------------------

    def publish(self, note: str, figures: dict[str, float]) -> int:
        """Every RL-Co version is an RL version when stage II runs: robots sample it as a chain."""
        if self.settings.rl:
            figures = {**figures, "rl": {"denoise_steps": self.settings.loss.denoise_steps,
                                         "sigma": self.settings.loss.sigma, "group": self.settings.loss.group}}
        if self.value_head is not None:  # stage II publishes the weights PPO trained, not an average
            self.ema.load_state_dict(self.policy.state_dict())
        version = super().publish(note, figures)
        self.rollouts = []  # the next iteration learns from the new version's rollouts only
        return version

    # -- stage II ------------------------------------------------------------------------------

    def start_rl(self) -> None:
        self.policy.load_state_dict(self.ema.state_dict())  # the weights robots run (version 0)
        self.policy.eval()
        self.chain = GaussianChain(self.policy, self.settings.loss.denoise_steps, self.settings.loss.sigma)
        self.value_head = ValueHead(self.policy.config.d_model, self.settings.value_hidden)
        params = [p for p in self.policy.parameters() if p.requires_grad] + list(self.value_head.parameters())
        self.rl_optimizer = torch.optim.AdamW(params, lr=self.settings.lr, betas=(0.9, 0.999), weight_decay=0.0)

    def rollout_chunks(self, episodes: list[tuple[EpisodeArrays, str, int]]
                       ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """Every planned chunk of the rollouts as one batch, with chunk rewards, advantages
        (normalised; against the group's other rollouts where the episode has some, else GAE on
        the value head) and returns (the value head's targets); and two checks: the largest gap
        between the streamed and rescored log-likelihoods, and the share of grouped episodes."""
        cameras = self.policy.config.cameras
        images = {cam: [] for cam in cameras}
        states, chains, logps, instructions, spans = [], [], [], [], []
        rewards, terminal, groups = [], [], []
        cfg = self.settings.loss
        for episode, termination, seed in episodes:
            a = episode.arrays
            planned = np.flatnonzero(a["extra/rl/planned"])
            if len(planned) == 0:
                continue
            ends = np.append(planned[1:], len(a["reward"]))
            rewards.append(chunk_rewards(a["reward"], a.get("extra/rl/distance"), planned, ends, cfg.gamma, cfg.shaping))
            terminal.append(termination in ("success", "failure"))
            groups.append((episode.robot_id, episode.task, seed))
            for cam in cameras:
                images[cam].append(downsample_images(torch.from_numpy(a[f"image/{cam}"][planned]),
                                                     self.policy.config.encoder_image_size))
            states.append(a["state"][planned])
            chains.append(a["extra/rl/chain"][planned])
            logps.append(a["extra/rl/logp"][planned])
            instructions += [episode.instruction] * len(planned)
            spans.append(len(planned))
        batch = {f"image/{cam}": torch.cat(images[cam]) for cam in cameras}
        batch["state"] = torch.from_numpy(np.concatenate(states))
        batch["tokens"] = self.policy.tokenize(instructions)
        batch["chain"] = torch.from_numpy(np.concatenate(chains))
        streamed = np.concatenate(logps)
        # The learner scores the chains itself (the running version's weights are the rollouts'):
        # PPO's old log-likelihoods never come from the wire; the robots' own serve as a check.
        features, old_logp = [], []
        with torch.no_grad():
            for i in range(0, len(batch["state"]), 256):
                rows = _rows(batch, i, i + 256)
                frames, text = self.policy._observation(rows, augment=False)
                features.append((frames, text))
                old_logp.append(self.chain.log_prob(frames, text, rows["chain"]))
        batch["old_logp"] = torch.cat(old_logp)
        frames, text = (torch.cat(parts) for parts in zip(*features))
        if self.iterations == 0:  # a fresh value head: fit it to this batch's discounted returns first
            returns = np.concatenate([returns_to_go(r, cfg.gamma) for r in rewards])
            self.fit_value(frames, text, torch.from_numpy(returns))
        with torch.no_grad():
            values = self.value_head(frames, text).numpy()
        checks = {"logp_gap": float(np.abs(batch["old_logp"].numpy() - streamed).max())
                  if streamed.shape == tuple(batch["old_logp"].shape) else float("nan")}
        advantages, returns, start = [], [], 0
        grouped = group_advantages(rewards, groups, cfg.gamma)
        checks["grouped"] = float(np.mean([g is not None for g in grouped]))
        for episode_rewards, span, done, in_group in zip(rewards, spans, terminal, grouped):
            v = values[start:start + span]
            adv, ret = gae(episode_rewards, v, last_value=float(v[-1]), done=done, gamma=cfg.gamma, lam=cfg.gae_lambda)
            advantages.append(adv if in_group is None else in_group)
            returns.append(ret)
            start += span
        advantage = np.concatenate(advantages)
        batch["advantage"] = torch.from_numpy((advantage - advantage.mean()) / (advantage.std() + 1e-8))
        batch["return"] = torch.from_numpy(np.concatenate(returns))
        batch["reward"] = torch.from_numpy(np.concatenate(rewards))
        return batch, checks

    def fit_value(self, frames: torch.Tensor, text: torch.Tensor, returns: torch.Tensor) -> float:
        """Critic warm-up: regresses the value head on fixed observation features (cheap: the
        policy is not run again), so that the first PPO iteration's advantages are not noise."""
        optimiser = torch.optim.Adam(self.value_head.parameters(), lr=self.settings.value_warmup_lr)
        g = torch.Generator().manual_seed(self.config.seed)
        for _ in range(self.settings.value_warmup_steps):
            picks = torch.randint(0, len(returns), (min(len(returns), 128),), generator=g)
            loss = ((self.value_head(frames[picks], text[picks]) - returns[picks]) ** 2).mean()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        mse = loss.item()
        log.info("value head warmed up on %d chunks: mse %.4f (return variance %.4f)", len(returns), mse,
                 returns.var().item())
        return mse

    def ppo_iteration(self, episodes: list[tuple[EpisodeArrays, str, int]]) -> dict[str, float]:
        s = self.settings
        batch, checks = self.rollout_chunks(episodes)
        n = len(batch["state"])
        figures: dict[str, list[float]] = {}
        anchor = s.loss.beta > 0 and self.index.groups.get("real")
        stopped_early = False
        for epoch in range(s.loss.epochs):
            if stopped_early:
                break
            order = torch.from_numpy(self.rng.permutation(n))
            for i in range(0, n, s.minibatch):
                rollout = _rows(batch, order[i:i + s.minibatch])
                real = None
                if anchor:
                    picks = self.anchor_sampler.sample(self.index, s.real_batch, self.rng)
                    real = self.index.batch(picks, self.policy.config.cameras, self.policy.tokenize)
                loss, step = rl_co_loss(self.policy, self.value_head, self.chain, rollout, real, s.loss)
                self.rl_optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_([p for g in self.rl_optimizer.param_groups for p in g["params"]], 1.0)
                self.rl_optimizer.step()
                self.updates += 1
                if epoch == 0 and i == 0:
                    step["first_ratio"] = step["ratio_mean"]
                for key, value in step.items():
                    figures.setdefault(key, []).append(value)
                if step["approx_kl"] > 1.5 * s.loss.target_kl:  # the policy moved far enough from the rollouts'
                    stopped_early = True
                    break
        self.iterations += 1
        out = {key: float(np.mean(values)) for key, values in figures.items()}
        out.update(rl_iteration=self.iterations, rollout_episodes=len(episodes), rollout_chunks=n,
                   minibatches=len(figures["ppo_loss"]), stopped_early=stopped_early,
                   rollout_success=float(np.mean([e.success for e, _, _ in episodes])),
                   rollout_reward=float(batch["reward"].sum() / len(episodes)), **checks)
        return out

    def run(self, should_stop=lambda: False) -> None:
        c = self.config
        if not self.resume_or_wait_for_demos(should_stop):  # after a restart the value head starts afresh
            return
        if self.policy is None:
            real, sim = len(self.index.groups.get("real", [])), len(self.index.groups.get("sim", []))
            log.info("stage I: co-training on %d real-proxy and %d sim demonstration windows", real, sim)
            loss = self.train_version_zero(should_stop)
            if loss is None:
                return
            self.publish("stage I: SFT co-training" if not self.settings.real_only else "stage I: real data only",
                         {"denoise_loss": loss})
        if not self.settings.rl:
            log.info("stage I only: trainer idle")
            while not should_stop():
                time.sleep(0.5)
            return
        self.start_rl()
        while not should_stop():
            if c.publish_until is not None and time.time() > c.publish_until:
                log.info("publishing window closed; trainer idle")
                while not should_stop():
                    time.sleep(0.5)
                return
            self.refresh()
            if len(self.rollouts) < self.settings.episodes_per_iteration:
                time.sleep(0.5)
                continue
            figures = self.ppo_iteration(self.rollouts)  # all of them: groups are not cut
            log.info("PPO iteration %d: %d chunks of %d episodes (success %.0f%%, return %.2f), ratio %.3f, "
                     "clip %.2f, kl %.4f, anchor %.4f, logp gap %.3f, grouped %.2f", self.iterations, figures["rollout_chunks"],
                     figures["rollout_episodes"], 100 * figures["rollout_success"], figures["rollout_reward"],
                     figures["ratio_mean"], figures["clip_fraction"], figures["approx_kl"],
                     figures.get("anchor_loss", float("nan")), figures["logp_gap"], figures["grouped"])
            self.publish(f"RL-Co iteration {self.iterations}", figures)


def _rows(batch: dict[str, torch.Tensor], start, end=None) -> dict[str, torch.Tensor]:
    """Rows of every tensor of a batch: a slice [start:end], or an index tensor."""
    if end is not None:
        return {k: v[start:end] for k, v in batch.items()}
    return {k: v[start] for k, v in batch.items()}
