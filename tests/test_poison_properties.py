"""Property tests for issue 24: whole classes of bad input, not only the listed examples. A
non-finite number anywhere in a chunk is refused; every kind of file the learner or a robot
reads back (chunk files, checkpoint metadata and weights, spool entries), cut at any offset, is
refused as corrupt rather than read as something else."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file

from core import wire
from fleet.v1 import fleet_pb2 as pb
from learner.store.base import CorruptChunk, load_episode_arrays
from policy import CheckpointError, PolicyConfig, VLAPolicy, load_checkpoint, save_checkpoint
from policy.checkpoint import META_FILE, WEIGHTS_FILE
from robot_client.spool import CorruptChunk as CorruptSpoolEntry
from robot_client.spool import Spool
from test_pretrained import SMALL

EMBODIMENT = wire.embodiment_to_proto("arm", {"front": (8, 8, 3)}, 7, 4, 10)
FIELDS = ("state", "action", "policy_action", "reward", "timestamp", "extra", "total_reward")
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def sound_chunk(steps: int) -> pb.EpisodeChunk:
    rng = np.random.default_rng(steps)
    return pb.EpisodeChunk(
        robot_id="arm", episode_id="e", sequence=0, kind=pb.EPISODE_KIND_TRAINING, episode_end=True,
        outcome=pb.EpisodeOutcome(num_steps=steps, total_reward=1.0),
        steps=[wire.step_to_proto(i, 0.1 * i, {"front": rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)},
                                  rng.normal(size=7).astype(np.float32), rng.normal(size=4).astype(np.float32),
                                  rng.normal(size=4).astype(np.float32), "autonomous", 0.5, i == steps - 1,
                                  {"float_index": np.float32(0.3), "rl/distance": np.array([0.2, 0.1], np.float32)})
               for i in range(steps)])


def poison(chunk: pb.EpisodeChunk, field: str, step: int, position: int, value: float) -> None:
    s = chunk.steps[step % len(chunk.steps)]
    if field in ("state", "action", "policy_action"):
        array = wire.tensor_from_proto(getattr(s, field)).copy()
        array[position % array.size] = value
        getattr(s, field).CopyFrom(wire.tensor_to_proto(array))
    elif field == "extra":
        s.extras["float_index"].CopyFrom(wire.tensor_to_proto(np.float32(value)))
    elif field == "total_reward":
        chunk.outcome.total_reward = value
    else:
        setattr(s, field, value)


@PROPERTY
@given(field=st.sampled_from(FIELDS), steps=st.integers(1, 4), step=st.integers(0, 3), position=st.integers(0, 6),
       value=st.sampled_from([float("nan"), float("inf"), float("-inf")]))
def test_a_non_finite_number_anywhere_in_a_chunk_is_refused(field, steps, step, position, value):
    chunk = sound_chunk(steps)
    assert len(wire.decode_chunk_steps(chunk, EMBODIMENT)["state"]) == steps  # sound as made
    poison(chunk, field, step, position, value)
    with pytest.raises(wire.WireError, match="non-finite"):
        wire.decode_chunk_steps(chunk, EMBODIMENT)


# -- files cut short -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    """One sound file of each kind, written as the learner and the robots write them."""
    root = tmp_path_factory.mktemp("originals")
    chunk = sound_chunk(3)
    save_file(wire.decode_chunk_steps(chunk, EMBODIMENT), str(root / "chunk.safetensors"))
    torch.manual_seed(0)
    save_checkpoint(root / "checkpoint", VLAPolicy(PolicyConfig(vocab=("reach",), **SMALL)), 4)
    spool = Spool(root / "spool")
    spool.put(chunk)
    return root, spool.pending()[0].name


def cut(source: Path, target: Path, fraction: float) -> None:
    data = source.read_bytes()
    target.write_bytes(data[:int(fraction * len(data))])


@PROPERTY
@given(kind=st.sampled_from(["chunk", "meta", "weights", "spool"]), fraction=st.floats(0.0, 0.999))
def test_a_file_cut_short_anywhere_is_refused_as_corrupt(originals, kind, fraction):
    root, spooled = originals
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        if kind == "chunk":
            cut(root / "chunk.safetensors", scratch / "chunk.safetensors", fraction)
            with pytest.raises(CorruptChunk, match="chunk.safetensors"):
                load_episode_arrays(scratch, ["chunk.safetensors"])
        elif kind in ("meta", "weights"):
            shutil.copytree(root / "checkpoint", scratch / "checkpoint")
            name = META_FILE if kind == "meta" else WEIGHTS_FILE
            cut(root / "checkpoint" / name, scratch / "checkpoint" / name, fraction)
            with pytest.raises(CheckpointError):
                load_checkpoint(scratch / "checkpoint")
        else:
            spool = Spool(scratch / "spool")
            cut(root / "spool" / spooled, spool.dir / spooled, fraction)
            with pytest.raises(CorruptSpoolEntry):
                spool.read(spool.dir / spooled)
            assert (spool.dir / "rejected" / spooled).exists()  # set aside with its reason, never sent
