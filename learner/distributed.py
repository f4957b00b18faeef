"""Data-parallel training with torch.distributed: `torchrun --nproc-per-node K -m fleetlearn.cli train`.

Every rank runs the same Trainer (no fork of the training code); this module is the little it
needs to run as one of K:
- data: demonstrations (the offline anchor, and what version 0's vocabulary, normalisers and
  FLOAT's reference bank come from) are read by every rank; each fleet episode is learned from
  by one rank, chosen by a stable hash of its id (`owns`), so the ranks split the stream;
- model: version 0's architecture and normalisers are rank 0's (broadcast), and its weights are
  broadcast when DistributedDataParallel wraps the loss; gradients are averaged in backward, so
  the ranks' weights stay identical, and so do their moving averages;
- control: every decision that changes which collectives run next (stop, load new data, publish)
  is agreed by one all-reduce, so the ranks never wait on each other in different places;
- rank 0 alone writes checkpoints and publishes; each rank writes DATA/trainer/rank-R.json with
  its updates, episodes and a digest of its weights at every version.

The backend follows the trainer's device: NCCL when the ranks train on GPUs (each on the GPU of
its LOCAL_RANK), gloo on CPUs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from core.durable import atomic_write_text

log = logging.getLogger("fleetlearn.distributed")


class _Loss(torch.nn.Module):
    """The algorithm's loss as a module's forward, which is what DistributedDataParallel wraps."""

    def __init__(self, policy: torch.nn.Module, algorithm):
        super().__init__()
        self.policy = policy
        self.algorithm = algorithm

    def forward(self, batch):
        return self.algorithm.loss(self.policy, batch)


class DataParallel:
    """This process's place among the trainer's ranks (rank 0 of 1 when not under torchrun)."""

    def __init__(self, rank: int = 0, world: int = 1, device: torch.device | None = None):
        self.rank, self.world = rank, world
        # Where collectives' tensors live: NCCL takes GPU tensors only, gloo CPU ones.
        self.device = device or torch.device("cpu")

    @classmethod
    def current(cls) -> "DataParallel":
        if dist.is_available() and dist.is_initialized():
            nccl = dist.get_backend() == "nccl"
            return cls(dist.get_rank(), dist.get_world_size(),
                       torch.device("cuda", torch.cuda.current_device()) if nccl else None)
        return cls()

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def owns(self, robot_id: str, episode_id: str) -> bool:
        """Whether this rank learns from that fleet episode."""
        return not self.active or zlib.crc32(f"{robot_id}/{episode_id}".encode()) % self.world == self.rank

    def agree(self, *flags: bool) -> tuple[bool, ...]:
        """Each flag true on every rank if it is true on any rank (one all-reduce)."""
        if not self.active:
            return tuple(bool(f) for f in flags)
        t = torch.tensor([int(bool(f)) for f in flags], dtype=torch.int32, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return tuple(bool(v) for v in t.tolist())

    def all(self, flag: bool) -> bool:
        """True only if true on every rank."""
        return not self.agree(not flag)[0]

    def broadcast_json(self, value):
        """Rank 0's value on every rank (JSON-serialisable values only)."""
        if not self.active:
            return value
        data = json.dumps(value).encode() if self.leader else b""
        size = torch.tensor([len(data)], dtype=torch.int64, device=self.device)
        dist.broadcast(size, 0)
        buffer = torch.zeros(int(size.item()), dtype=torch.uint8, device=self.device)
        if self.leader:
            buffer[:] = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(self.device)
        dist.broadcast(buffer, 0)
        return json.loads(buffer.cpu().numpy().tobytes().decode())

    def loss_function(self, policy: torch.nn.Module, algorithm, device: torch.device | None = None):
        """batch -> (loss, figures); under torchrun the gradients of backward are averaged over
        the ranks, and building it broadcasts rank 0's weights."""
        if not self.active:
            return lambda batch: algorithm.loss(policy, batch)
        if device is not None and device.type == "cuda":
            return DistributedDataParallel(_Loss(policy, algorithm), device_ids=[device])
        return DistributedDataParallel(_Loss(policy, algorithm))

    def gather_digests(self, module: torch.nn.Module) -> list[str]:
        """Every rank's weights digest, on every rank."""
        mine = weights_digest(module)
        if not self.active:
            return [mine]
        digests: list = [None] * self.world
        dist.all_gather_object(digests, mine)  # hex strings among this job's own ranks
        return digests


def weights_digest(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def policy_spec(policy) -> dict:
    """What rebuilds an untrained policy of the same shape and normalisation on another rank."""
    return {"family": type(policy).family, "config": dataclasses.asdict(policy.config),
            "state": [policy.state_norm.centre.tolist(), policy.state_norm.half_range.tolist()],
            "action": [policy.action_norm.centre.tolist(), policy.action_norm.half_range.tolist()]}


def policy_from_spec(spec: dict):
    from policy.normalize import Normalizer
    from policy.registry import family_config, policy_class

    config_class = family_config(spec["family"])
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    config = config_class(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec["config"].items()
                             if k in fields})

    def normalizer(centre_half):
        centre, half = (np.asarray(x, np.float32) for x in centre_half)
        return Normalizer(centre - half, centre + half)

    return policy_class(spec["family"])(config, normalizer(spec["state"]), normalizer(spec["action"]))


def write_rank_status(data_dir: Path, dp: DataParallel, status: dict) -> None:
    directory = Path(data_dir) / "trainer"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"rank-{dp.rank}.json"
    atomic_write_text(path, json.dumps({"rank": dp.rank, "world": dp.world, **status}, indent=1))
