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


# -- clients that never read, vanish or behave: the caps hold and what was acked is stored -----

FRAME = {"front": (64, 64, 3)}


@pytest.fixture(scope="module")
def capped_learner(tmp_path_factory):
    """One learner for every example: small caps, a short ack-stall bound, and robots named
    deaf-* whose acks are never read (the ack write blocks, as for a client that never reads)."""
    import asyncio

    from conftest import TOKEN, LearnerThread
    from learner import episode_stream
    from learner.limits import RobotLimits

    root = tmp_path_factory.mktemp("capped")
    (root / "tokens").write_text(f"{TOKEN}\n")
    saved = episode_stream.ACK_STALL_S, episode_stream.PENDING_WAIT_S
    episode_stream.ACK_STALL_S, episode_stream.PENDING_WAIT_S = 0.5, 0.5
    learner = LearnerThread(root / "learner", root / "tokens", train=False,
                            limits=RobotLimits(stream_pending_mb=0.1, pending_mb=0.25)).start()
    servicer = learner.learner.servicer
    acknowledge = servicer.acknowledge

    async def maybe_deaf(context, chunk, status):
        if chunk.robot_id.startswith("deaf"):
            await asyncio.sleep(3600)
        await acknowledge(context, chunk, status)

    servicer.acknowledge = maybe_deaf
    import grpc

    from fleet.v1 import fleet_pb2_grpc as pb_grpc

    channel = grpc.insecure_channel(learner.address)
    stub = pb_grpc.FleetLearnerStub(channel)
    metadata = (("authorization", f"Bearer {TOKEN}"),)
    for kind in ("reads", "deaf", "gone"):
        for i in range(4):
            stub.Register(pb.RegisterRequest(robot_id=f"{kind}-{i}", embodiment=wire.embodiment_to_proto(
                f"{kind}-{i}", FRAME, 7, 4, 10)), metadata=metadata, timeout=10)
    yield learner, stub, metadata
    channel.close()
    learner.stop()
    episode_stream.ACK_STALL_S, episode_stream.PENDING_WAIT_S = saved


def frames_chunk(robot_id: str, episode_id: str, sequence: int, steps: int = 3) -> pb.EpisodeChunk:
    return pb.EpisodeChunk(robot_id=robot_id, episode_id=episode_id, sequence=sequence, kind=pb.EPISODE_KIND_TRAINING,
                           steps=[wire.step_to_proto(sequence * steps + i, 0.0,
                                                     {"front": np.full((64, 64, 3), i, np.uint8)},
                                                     np.zeros(7, np.float32), np.zeros(4, np.float32), None,
                                                     "autonomous", 0.0, False) for i in range(steps)])


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(clients=st.lists(st.tuples(st.sampled_from(["reads", "deaf", "gone"]), st.integers(1, 6)),
                        min_size=1, max_size=4))
def test_whatever_clients_do_the_caps_hold_and_every_ack_means_stored(capped_learner, clients):
    import threading
    import uuid

    import grpc

    from conftest import wait_for

    learner, stub, metadata = capped_learner
    pending = learner.learner.servicer.limits.pending
    pending.peak = 0
    outcomes: dict[int, tuple] = {}

    def run(index: int, kind: str, count: int) -> None:
        robot, episode = f"{kind}-{index}", uuid.uuid4().hex
        call = stub.StreamEpisodes(iter([frames_chunk(robot, episode, s) for s in range(count)]), metadata=metadata,
                                   timeout=30)
        acked, code, trailers = [], None, {}
        try:
            for ack in call:
                acked.append(ack.sequence)
                if kind == "gone":  # goes away after its first ack
                    call.cancel()
        except grpc.RpcError as exc:
            code, trailers = exc.code(), dict(exc.trailing_metadata() or ())
        outcomes[index] = (robot, episode, kind, count, acked, code, trailers)

    threads = [threading.Thread(target=run, args=(i, kind, count)) for i, (kind, count) in enumerate(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    wait_for(lambda: pending.held == 0, 10, "every stream's bytes handed back")
    chunk_bytes = frames_chunk("reads-0", "e", 0).ByteSize()
    assert pending.peak <= 0.25e6 + chunk_bytes  # the learner-wide cap held (one message may pass alone)
    store = learner.learner.store
    for robot, episode, kind, count, acked, code, trailers in outcomes.values():
        assert "fleet-rejected-episode" not in trailers  # nothing here is the chunk's fault: no set-aside
        if kind == "reads":
            assert code in (None, grpc.StatusCode.RESOURCE_EXHAUSTED), code  # done, or told to retry
            assert code is not None or acked == list(range(count))
        elif kind == "deaf":
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and not acked
        stored = set(store.episode_spans(robot, episode).spans)
        assert set(acked) <= stored  # an ack means the chunk is durable
