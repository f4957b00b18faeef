"""Training windows and the samplers that draw batches from them.

A window is (episode, t): the observation frames t - past .. t and the action tokens of steps
t - past .. t - past + horizon - 1, where `past` = obs_steps - 1 (the action sequence is aligned
with the observation window, so with long context the first `past` tokens are the actions
already taken; with one frame the tokens are t .. t + horizon - 1). Frames before the episode
start repeat its first frame, as a robot's observation buffer does at the start of an episode. Each token carries a label
flag from the algorithm; padding before the episode start or past its end is never a label.
Only windows with at least one labelled token are eligible.

Unlabelled tokens are masked out of the loss, and their action values are also replaced by the
nearest labelled action of the window (the same rule that pads past an episode's end), because
a denoising transformer sees every token's noisy value as input: otherwise the autonomous
actions next to a takeover would still steer what the model learns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from learner.store import EpisodeArrays


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
    # The same windows split by pool (LabelledEpisode.pool), kept as they are added so samplers
    # never rescan.
    groups: dict[str, list[tuple[int, int]]] = field(default_factory=dict)

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


class Sampler(Protocol):
    def sample(self, index: WindowIndex, batch_size: int, rng: np.random.Generator) -> list[tuple[int, int]]:
        ...


class UniformSampler:
    """Every eligible window equally likely (the union of demos and interventions)."""

    def sample(self, index: WindowIndex, batch_size: int, rng: np.random.Generator) -> list[tuple[int, int]]:
        picks = rng.integers(0, len(index.windows), batch_size)
        return [index.windows[i] for i in picks]


class GroupMixSampler:
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


SAMPLERS = {"uniform": UniformSampler, "offline_online_mix": OfflineOnlineMixSampler}


def make_sampler(name: str) -> Sampler:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; known: {sorted(SAMPLERS)}")
    return SAMPLERS[name]()
