"""The episode store's interface and its rules, whatever the backend.

An `EpisodeIndex` is what the store's writer needs of an index (register robots, tell which chunks
are stored, index written chunks); an `EpisodeReader` is what the trainer, the dashboard, the
metrics and the benchmarks read. The SQLite backend (learner/store/sqlite.py) is the embedded
default; the Redis backend (learner/store/redis.py) serves several ingest replicas. Both follow
one completion rule, `episode_totals` below: the Redis index script is its Lua twin, and
tests/test_scaleout.py holds the two to the same answers on the same chunks.
"""

from __future__ import annotations

from typing import Iterable, Protocol

import numpy as np

from core.episode import EpisodeArrays
from fleet.v1 import fleet_pb2 as pb

INTERVENTION = pb.ACTION_SOURCE_INTERVENTION


def chunk_summary(arrays: dict[str, np.ndarray]) -> dict[str, int]:
    """What an episode's totals need of one chunk: its human steps and where takeovers start."""
    source = arrays["source"]
    human = source == INTERVENTION
    return {"human_steps": int(human.sum()), "takeover_starts": int(np.sum(human[1:] & ~human[:-1])),
            "first_source": int(source[0]), "last_source": int(source[-1])}


def episode_totals(chunks: Iterable[dict], final_sequence: int | None) -> dict | None:
    """The completion rule: an episode is complete once its final chunk (the one marked
    episode_end) and every chunk before it are stored. Then its human steps are the sum over its
    chunks, and its takeovers are the autonomous-to-intervention switches, counting one where a
    chunk starts under intervention after a chunk that did not end under it. `chunks` are the
    stored chunk summaries (`chunk_summary`) in sequence order. None while incomplete."""
    chunks = list(chunks)
    if final_sequence is None or len(chunks) != final_sequence + 1:
        return None
    takeovers, previous_last = 0, None
    for c in chunks:
        takeovers += c["takeover_starts"]
        if c["first_source"] == INTERVENTION and previous_last != INTERVENTION:
            takeovers += 1
        previous_last = c["last_source"]
    return {"human_steps": sum(c["human_steps"] for c in chunks), "takeovers": takeovers}


class EpisodeIndex(Protocol):
    """What EpisodeStore's writer thread needs of an index."""

    def register_robot(self, robot_id: str, embodiment: pb.Embodiment, tasks: list[dict]) -> None: ...

    def robot_embodiment(self, robot_id: str) -> pb.Embodiment | None: ...

    def stored(self, keys: list[tuple[str, str, int]]) -> set[tuple[str, str, int]]: ...

    def add(self, fresh: list[tuple[pb.EpisodeChunk, dict[str, np.ndarray], tuple[str, int]]]) -> set: ...

    def close(self) -> None: ...


class EpisodeReader(Protocol):
    """What readers of a store use: complete episodes (new ones on each call for the trainer),
    their arrays, registered robots and demonstration counts."""

    def complete_episodes(self, after_completed_at: float = 0.0) -> list: ...

    def load_episode(self, row) -> EpisodeArrays: ...

    def robot_embodiment(self, robot_id: str) -> pb.Embodiment | None: ...

    def demonstration_counts(self) -> dict[str, int]: ...

    def close(self) -> None: ...
