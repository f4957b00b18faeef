"""Training windows and the samplers that draw batches from them.

A window is (episode, t): the observation frames t - past .. t and the action tokens of steps
t - past .. t - past + horizon - 1, where `past` = obs_steps - 1 (the action sequence is aligned
with the observation window, so with long context the first `past` tokens are the actions
already taken; with one frame the tokens are t .. t + horizon - 1). Frames before the episode
start repeat its first frame, as a robot's observation buffer does at the start of an episode. Each token carries a label
flag from the algorithm; padding before the episode start or past its end is never a label.
An algorithm can also keep per-step figures in an episode's arrays as "window/NAME": each batch
then carries NAME with the value at every window's current step t (RECAP's advantage indicator
and value target).
Only windows with at least one labelled token are eligible.

Unlabelled tokens are masked out of the loss, and their action values are also replaced by the
nearest labelled action of the window (the same rule that pads past an episode's end), because
a denoising transformer sees every token's noisy value as input: otherwise the autonomous
actions next to a takeover would still steer what the model learns.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from core.episode import EpisodeArrays


@dataclass
class LabelledEpisode:
    episode: EpisodeArrays
    labels: np.ndarray  # bool per step
    online: bool        # collected by the fleet (not an offline demonstration)
    # Which pool its windows join for group samplers: "online" / "offline" by default; RL-Co
    # splits demonstrations into "real" (real-proxy robots) and "sim".
    group: str | None = None

    @property
    def pool(self) -> str:
        return self.group or ("online" if self.online else "offline")


@dataclass
class WindowIndex:
    """All eligible windows of the loaded episodes."""

    horizon: int
    past: int = 0  # action tokens before the current step (obs_steps - 1)
    episodes: list[LabelledEpisode] = field(default_factory=list)
    windows: list[tuple[int, int]] = field(default_factory=list)  # (episode position, t)
    # The same windows split by pool (LabelledEpisode.pool), and by task and pool, kept as they
    # are added so samplers never rescan.
    groups: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    by_task: dict[str, dict[str, list[tuple[int, int]]]] = field(default_factory=dict)

    def add(self, item: LabelledEpisode) -> int:
        position = len(self.episodes)
        self.episodes.append(item)
        labels = item.labels
        n = len(labels)
        # The window at t is eligible when any of labels[t - past : t - past + horizon] is set.
        padded = np.concatenate([np.zeros(self.past, bool), labels, np.zeros(self.horizon, bool)])
        any_label = np.array([padded[t:t + self.horizon].any() for t in range(n)])
        new = [(position, int(t)) for t in np.flatnonzero(any_label)]
        self.windows.extend(new)
        self.groups.setdefault(item.pool, []).extend(new)
        self.by_task.setdefault(item.episode.task, {}).setdefault(item.pool, []).extend(new)
        return len(new)

    def batch(self, picks: list[tuple[int, int]], cameras: tuple[str, ...], tokenize,
              cached: bool = False) -> dict[str, torch.Tensor]:
        """The picked windows as a policy batch: images and states of the observation frames, or
        with `cached` their frame embeddings (every episode must carry arrays["frames"])."""
        frames = self.past + 1
        images = {cam: [] for cam in cameras}
        states, embeddings, actions, masks, instructions = [], [], [], [], []
        for position, t in picks:
            item = self.episodes[position]
            arrays = item.episode.arrays
            n = len(item.labels)
            observed = np.clip(np.arange(t - self.past, t + 1), 0, None)
            if cached:
                embeddings.append(arrays["frames"][observed])
            else:
                for cam in cameras:
                    images[cam].append(arrays[f"image/{cam}"][observed])
                states.append(arrays["state"][observed])
            steps = np.arange(t - self.past, t - self.past + self.horizon)
            idx = np.clip(steps, 0, n - 1)
            valid = (steps >= 0) & (steps < n)
            mask = item.labels[idx] & valid
            actions.append(arrays["action"][idx][_nearest_labelled(mask)])
            masks.append(mask)
            instructions.append(item.episode.instruction)
        if cached:
            batch = {"frames": torch.from_numpy(np.stack(embeddings))}
        else:
            batch = {f"image/{cam}": torch.from_numpy(np.stack(images[cam])) for cam in cameras}
            batch["state"] = torch.from_numpy(np.stack(states))
            if frames == 1:  # one frame: the plain (B, ...) layout
                batch = {k: v[:, 0] for k, v in batch.items()}
        # Per-window figures an algorithm keeps in the episode (arrays "window/NAME"), at step t.
        for key in [k for k in self.episodes[picks[0][0]].episode.arrays if k.startswith("window/")]:
            batch[key.split("/", 1)[1]] = torch.from_numpy(np.stack(
                [self.episodes[position].episode.arrays[key][t] for position, t in picks]))
        batch["action"] = torch.from_numpy(np.stack(actions))
        batch["label_mask"] = torch.from_numpy(np.stack(masks))
        batch["tokens"] = tokenize(instructions)
        return batch

    def rebuilt(self, horizon: int, past: int) -> "WindowIndex":
        """The same episodes indexed for another token layout (e.g. the long context of stage 3)."""
        index = WindowIndex(horizon=horizon, past=past)
        for item in self.episodes:
            index.add(item)
        return index


def _nearest_labelled(mask: np.ndarray) -> np.ndarray:
    """For each token, the index of the nearest labelled token (earlier one on ties)."""
    labelled = np.flatnonzero(mask)
    positions = np.arange(len(mask))
    distance = np.abs(positions[:, None] - labelled[None, :]) * 2 + (labelled[None, :] > positions[:, None])
    return labelled[distance.argmin(axis=1)]


class Sampler:
    def sample(self, index: WindowIndex, batch_size: int, rng: np.random.Generator) -> list[tuple[int, int]]:
        """(episode, start) windows of one batch."""
        raise NotImplementedError

    def observe(self, task: str, success: bool) -> None:
        """A training episode of `task` ended (untouched and successful, or not). No-op unless the
        sampler's mix follows the fleet's results (the adaptive one)."""

    def online_fractions(self, index: WindowIndex) -> dict[str, float] | None:
        """Each task's share of fleet data in a batch now, for the version's record; None for a
        sampler whose shares do not move."""
        return None


class UniformSampler(Sampler):
    """Every eligible window equally likely (the union of demos and interventions)."""

    def sample(self, index: WindowIndex, batch_size: int, rng: np.random.Generator) -> list[tuple[int, int]]:
        picks = rng.integers(0, len(index.windows), batch_size)
        return [index.windows[i] for i in picks]


class GroupMixSampler(Sampler):
    """Fixed fractions of each batch from named pools (e.g. RL-Co's real and sim demonstrations);
    a pool with no windows yet gives its share to the others in proportion."""

    def __init__(self, fractions: dict[str, float]):
        if any(f < 0 for f in fractions.values()) or sum(fractions.values()) <= 0:
            raise ValueError(f"group fractions must be >= 0 with a positive sum, got {fractions}")
        self.fractions = fractions

    def sample(self, index: WindowIndex, batch_size: int, rng: np.random.Generator) -> list[tuple[int, int]]:
        present = {g: f for g, f in self.fractions.items() if f > 0 and index.groups.get(g)}
        if not present:
            raise ValueError(f"no windows in any of the groups {sorted(self.fractions)}")
        total = sum(present.values())
        counts = {g: int(round(batch_size * f / total)) for g, f in present.items()}
        counts[list(counts)[-1]] += batch_size - sum(counts.values())  # rounding left over
        picks = []
        for group, n in counts.items():
            pool = index.groups[group]
            picks += [pool[i] for i in rng.integers(0, len(pool), n)]
        return picks


class OfflineOnlineMixSampler(GroupMixSampler):
    """A fixed fraction of each batch from offline demonstrations, the rest from fleet data.

    SOP samples a mix of a fixed offline buffer and a growing online buffer; the exact formula is
    unpublished, so the fraction is a plain config number. Falls back to whichever side exists.
    """

    def __init__(self, offline_fraction: float = 0.5):
        super().__init__({"offline": offline_fraction, "online": 1.0 - offline_fraction})
        self.offline_fraction = offline_fraction


class AdaptiveTaskSampler(Sampler):
    """Task-balanced online/offline mix whose online share follows each task's need.

    SOP samples "a task-balanced mix of a growing online buffer and a fixed offline buffer" and
    publishes no formula; this is ours. Each batch is split equally between the tasks that have
    windows (so a task the fleet runs often cannot crowd out the others). Within task k, the
    fraction drawn from fleet data (autonomous + intervention windows) is

        f_k = clip(base + gain_fail * (1 - s_k) + gain_shift * d_k,  low, high)

    s_k  the task's recent autonomous success: an exponential average (weight `success_alpha`)
         of its fleet training episodes, where an episode counts as a success only if it
         succeeded with no human step; `prior_success` before any outcome.
    d_k  how much the task's online data is shifting: the share of its online windows that
         arrived in the last `fresh_s` seconds (1.0 when all of it is new).

    Defaults: base 0.2, gain_fail 0.6, gain_shift 0.3, clipped to [0.2, 0.8]. A failing task
    with fresh data draws 80% of its share from the fleet; a mastered one with stale data
    leans on its demonstrations (20% online), which keeps it from forgetting.

    While fleet data is scarce, f_k is also held to at most its share of the task's windows,
    online / (online + offline) (but never below `low`): a first run without that bound drew
    80% of every batch from the first few intervention segments, since at the start all fleet
    data is fresh, and unlearned a task the demonstrations had taught (docs/BENCHMARKS.md). A
    task without online windows draws offline only, and one without demonstrations online only.
    """

    def __init__(self, base: float = 0.2, gain_fail: float = 0.6, gain_shift: float = 0.3,
                 low: float = 0.2, high: float = 0.8, success_alpha: float = 0.1,
                 prior_success: float = 0.5, fresh_s: float = 120.0, clock=time.monotonic):
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"need 0 <= low <= high <= 1, got low={low} high={high}")
        self.base, self.gain_fail, self.gain_shift = base, gain_fail, gain_shift
        self.low, self.high = low, high
        self.success_alpha, self.prior_success = success_alpha, prior_success
        self.fresh_s, self.clock = fresh_s, clock
        self.success: dict[str, float] = {}
        # Per task: (time, online windows) snapshots, one a second at most, for the shift term.
        self._history: dict[str, collections.deque] = collections.defaultdict(collections.deque)

    def observe(self, task: str, success: bool) -> None:
        """One finished fleet training episode of `task` (success: with no human step)."""
        previous = self.success.get(task, self.prior_success)
        self.success[task] = previous + self.success_alpha * (float(success) - previous)

    def shift(self, task: str, online_windows: int) -> float:
        now = self.clock()
        history = self._history[task]
        if not history or now - history[-1][0] >= 1.0:
            history.append((now, online_windows))
        while len(history) > 1 and history[1][0] <= now - self.fresh_s:
            history.popleft()
        before = history[0][1] if history[0][0] <= now - self.fresh_s else 0
        return (online_windows - before) / online_windows if online_windows else 0.0

    def online_fraction(self, task: str, online_windows: int, offline_windows: int) -> float:
        if not online_windows:
            return 0.0
        if not offline_windows:
            return 1.0
        need = (self.base + self.gain_fail * (1.0 - self.success.get(task, self.prior_success))
                + self.gain_shift * self.shift(task, online_windows))
        data_share = online_windows / (online_windows + offline_windows)
        return float(np.clip(min(need, max(data_share, self.low)), self.low, self.high))

    def online_fractions(self, index: WindowIndex) -> dict[str, float]:
        """task -> its current online fraction (what `sample` uses; logged by the trainer)."""
        return {task: self.online_fraction(task, len(pools.get("online", ())), len(pools.get("offline", ())))
                for task, pools in sorted(index.by_task.items()) if pools.get("online") or pools.get("offline")}

    def sample(self, index: WindowIndex, batch_size: int, rng: np.random.Generator) -> list[tuple[int, int]]:
        fractions = self.online_fractions(index)
        if not fractions:
            raise ValueError("no windows to sample")
        tasks = list(fractions)
        per_task = np.bincount(rng.integers(0, len(tasks), batch_size), minlength=len(tasks))
        picks = []
        for task, n in zip(tasks, per_task):
            pools = index.by_task[task]
            online = int(rng.binomial(n, fractions[task]))
            for pool, count in (("online", online), ("offline", n - online)):
                windows = pools.get(pool, ())
                picks += [windows[i] for i in rng.integers(0, len(windows), count)] if count else []
        return picks


SAMPLERS = {"uniform": UniformSampler, "offline_online_mix": OfflineOnlineMixSampler, "adaptive": AdaptiveTaskSampler}


def make_sampler(name: str) -> Sampler:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; known: {sorted(SAMPLERS)}")
    return SAMPLERS[name]()
