"""Nothing poisons the fleet (issue 24): non-finite values are refused at ingest, never trained
into weights, never published and never loaded by a robot; a version that fails to load is
retried on a growing, jittered delay; ids name files one to one and follow one rule everywhere;
huge shapes and sequence numbers are refused as permanent before anything is allocated; a
revoked credential is UNAUTHENTICATED, mid-stream too."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from conftest import TOKEN, LearnerThread, wait_for
from core import wire
from core.durable import safe_name
from core.ids import episode_id_problem, robot_id_problem
from fleet.v1 import fleet_pb2 as pb
from fleet.v1 import fleet_pb2_grpc as pb_grpc
from learner import episode_stream as stream_module
from learner.credentials import REFRESH_S, CredentialStore
from learner.limits import RobotLimits
from learner.optimization import Optimization
from learner.store import SqliteIndex, StoreReader
from learner.store.base import EpisodeContinuity, StoredEpisode
from learner.trainer import Trainer, TrainerConfig
from policy import CheckpointError, PolicyConfig, VLAPolicy, load_checkpoint, save_checkpoint
from policy.checkpoint import WEIGHTS_FILE, sha256_file
from robot_client.uplink import VersionRetries
from test_pretrained import SMALL, episode

AUTH = (("authorization", f"Bearer {TOKEN}"),)
CAMERAS = {"front": (16, 16, 3)}


def chunk(episode_id, state=None, action=None, reward=0.0, extras=None, policy_action=None):
    step = wire.step_to_proto(0, 0.0, {"front": np.zeros((16, 16, 3), np.uint8)},
                              np.zeros(7, np.float32) if state is None else state,
                              np.zeros(4, np.float32) if action is None else action, policy_action, "autonomous",
                              reward, True, extras)
    return pb.EpisodeChunk(robot_id="arm", episode_id=episode_id, sequence=0, kind=pb.EPISODE_KIND_TRAINING,
                           steps=[step], episode_end=True, outcome=pb.EpisodeOutcome(num_steps=1))


@pytest.fixture
def stub(learner_thread):
    learner = learner_thread(train=False)
    channel = grpc.insecure_channel(learner.address)
    stub = pb_grpc.FleetLearnerStub(channel)
    stub.Register(pb.RegisterRequest(robot_id="arm", embodiment=wire.embodiment_to_proto("arm", CAMERAS, 7, 4, 10)),
                  metadata=AUTH, timeout=10)
    yield stub, learner
    channel.close()


def stored_episodes(data_dir) -> set[str]:
    reader = StoreReader(data_dir)
    try:
        return {row["episode_id"] for row in reader.db.execute("SELECT episode_id FROM episodes")}
    finally:
        reader.close()


NAN, INF = np.float32(np.nan), np.float32(np.inf)
BAD = {
    "nan-action": dict(action=np.array([0, NAN, 0, 0], np.float32)),
    "inf-state": dict(state=np.array([0, 0, 0, INF, 0, 0, 0], np.float32)),
    "nan-reward": dict(reward=float("nan")),
    "inf-policy-action": dict(policy_action=np.array([-INF, 0, 0, 0], np.float32)),
    "nan-extra": dict(extras={"float_index": NAN}),
    "inf-sentinel-extra": dict(extras={"rl/distance": np.array([INF, 0.1], np.float32)}),
}


def test_non_finite_values_are_refused_at_ingest_and_nothing_of_them_is_stored(stub):
    stub, learner = stub
    for name, fields in BAD.items():
        with pytest.raises(grpc.RpcError) as info:
            list(stub.StreamEpisodes(iter([chunk(name, **fields)]), metadata=AUTH, timeout=20))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
        assert "non-finite" in info.value.details(), (name, info.value.details())
        # The trailers name the chunk, so the robot sets it aside as refused instead of retrying it.
        assert dict(info.value.trailing_metadata())["fleet-rejected-episode"] == name
    # NaN where it means "none" (no task distance) is a value, and finite data are stored.
    fine = chunk("nan-sentinel", extras={"rl/distance": np.array([NAN, 0.1], np.float32)})
    acks = list(stub.StreamEpisodes(iter([fine]), metadata=AUTH, timeout=20))
    assert [a.status for a in acks] == [pb.ACK_STATUS_STORED]
    assert stored_episodes(learner.config.data_dir) == {"nan-sentinel"}


def small_policy() -> VLAPolicy:
    torch.manual_seed(0)
    return VLAPolicy(PolicyConfig(vocab=("reach",), **SMALL))


def test_a_checkpoint_with_a_non_finite_weight_is_never_written_nor_loaded(tmp_path):
    policy = small_policy()
    with torch.no_grad():
        policy.head.out[1].weight[0, 0] = float("nan")
    with pytest.raises(CheckpointError, match="non-finite"):
        save_checkpoint(tmp_path / "v1", policy, 1)
    assert not (tmp_path / "v1").exists() and not (tmp_path / "v1.partial").exists()

    # A file that matches its hash is intact, not sound: a NaN written behind the writer's back
    # (and the hash in meta.json made to match) is still refused by the loader robots use.
    directory = save_checkpoint(tmp_path / "v2", small_policy(), 2)
    weights = load_file(str(directory / WEIGHTS_FILE))
    weights["head.out.1.weight"][0, 0] = float("inf")
    save_file(weights, str(directory / WEIGHTS_FILE), metadata={"format": "fleetlearn-checkpoint/1"})
    meta = json.loads((directory / "meta.json").read_text())
    meta["files"][WEIGHTS_FILE] = sha256_file(directory / WEIGHTS_FILE)
    (directory / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="non-finite values in 1 tensor"):
        load_checkpoint(directory)


def test_a_non_finite_loss_changes_neither_the_weights_nor_their_average():
    policy = small_policy().train()
    opt = Optimization(policy, [], lr=1e-3, weight_decay=0.0, ema_decay=0.9, device=torch.device("cpu"))
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    averaged = {k: v.clone() for k, v in opt.ema.state_dict().items()}
    loss = sum(p.sum() for p in policy.parameters() if p.requires_grad) * float("nan")
    opt.step(loss)
    assert opt.skipped == 1
    assert all(torch.equal(before[k], v) for k, v in policy.state_dict().items())
    assert all(torch.equal(averaged[k], v) for k, v in opt.ema.state_dict().items())
    opt.step(sum(p.square().sum() for p in policy.parameters() if p.requires_grad))  # a sound step still moves
    assert opt.skipped == 1 and not torch.equal(before["head.out.1.weight"], policy.state_dict()["head.out.1.weight"])


def test_the_trainer_never_publishes_non_finite_weights_and_goes_back_to_the_last_version(tmp_path):
    (tmp_path / "learner").mkdir()
    SqliteIndex(tmp_path / "learner").close()  # an empty store, as the learner makes it
    trainer = Trainer(TrainerConfig(data_dir=tmp_path / "learner", bootstrap_updates=3, batch_size=4, base="none",
                                    policy_overrides=dict(SMALL), prefetch=0, min_demos=1))
    trainer.add_episode(episode("reach", "reach the ball"), online=False)
    trainer.train_version_zero()
    assert trainer.publish("version 0", {}) == 0
    trainer.start_fleet_training()  # the encoder frozen, the head on cached embeddings, as after every version 0
    windows = len(trainer.index.windows)
    with torch.no_grad():
        next(trainer.ema.parameters()).fill_(float("nan"))
    assert trainer.publish("poisoned", {}) == 0  # refused: the version number does not move
    assert len(trainer.index.windows) == windows and trainer.policy.encoder_frozen  # what it learns from stays
    assert trainer.registry.latest() == 0 and not trainer.registry.checkpoint_dir(1).exists()
    assert all(torch.isfinite(t).all() for t in trainer.ema.state_dict().values() if t.is_floating_point())
    trainer.train_step()  # and training goes on from version 0's weights
    assert trainer.publish("sound again", {}) == 1
    assert load_checkpoint(trainer.registry.checkpoint_dir(1)).version == 1
    trainer.batches.close()


def test_a_refused_version_is_retried_later_and_later_with_jitter():
    retries = VersionRetries(initial=1.0, maximum=60.0, rng=random.Random(0))
    delays = [retries.failed(7) for _ in range(8)]
    for n, delay in enumerate(delays):
        nominal = min(60.0, 2.0 ** n)
        assert 0.5 * nominal <= delay <= 1.5 * nominal
    assert delays[-1] > 10 * delays[0]  # growing, not reset by the announcements in between
    assert retries.failed(8) <= 1.5  # a new version starts afresh
    assert len({round(d, 6) for d in delays[6:]}) == 2  # capped, yet jittered
    assert not retries.due(7) and not retries.due(8) and retries.due(9)  # an unrefused version is due at once
    assert 0 < retries.wait_s() <= 1.5  # version 8 comes first


# -- names: ids map to files one to one; one validator for the server and `fleet token create` --

@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=20), st.text(min_size=1, max_size=20))  # (20 characters fit a file name encoded)
def test_distinct_ids_never_share_a_file_name(a, b):
    name_a, name_b = safe_name(a), safe_name(b)
    assert (name_a == name_b) == (a == b)
    for name in (name_a, name_b):
        assert name not in (".", "..") and not name.startswith(".") and not set(name) & set("/\\+\0")


def test_episodes_whose_ids_differ_only_in_unsafe_characters_keep_their_own_data(stub):
    stub, learner = stub
    ids = ["col:1", "col_1", "col.1", "col-1"]
    for n, episode_id in enumerate(ids):
        acks = list(stub.StreamEpisodes(iter([chunk(episode_id, action=np.full(4, n, np.float32))]), metadata=AUTH,
                                        timeout=20))
        assert [a.status for a in acks] == [pb.ACK_STATUS_STORED]
    reader = StoreReader(learner.config.data_dir)
    try:
        actions = {row["episode_id"]: float(reader.load_episode(row).arrays["action"][0, 0])
                   for row in reader.complete_episodes()}
    finally:
        reader.close()
    assert actions == {episode_id: float(n) for n, episode_id in enumerate(ids)}


def test_robot_ids_follow_one_rule_at_registration_on_the_stream_and_for_new_tokens(stub, tmp_path):
    stub, _ = stub
    embodiment = wire.embodiment_to_proto("arm", CAMERAS, 7, 4, 10)
    for bad in ("col:1", "../arm", "all", ".hidden", "x" * 65):
        assert robot_id_problem(bad) is not None, bad
        with pytest.raises(grpc.RpcError) as info:
            stub.Register(pb.RegisterRequest(robot_id=bad, embodiment=embodiment), metadata=AUTH, timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
        bad_chunk = chunk("e1")
        bad_chunk.robot_id = bad
        with pytest.raises(grpc.RpcError) as info:
            list(stub.StreamEpisodes(iter([bad_chunk]), metadata=AUTH, timeout=20))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "robot_id" in info.value.details(), bad
        made = subprocess.run([sys.executable, "-m", "fleetlearn.cli", "token", "create", "--data",
                               str(tmp_path / "creds"), "--robot", bad], capture_output=True, text=True)
        assert made.returncode != 0 and "robot_id" in made.stderr and not made.stdout.strip(), bad
    assert robot_id_problem("col_1") is None and robot_id_problem("arm-1.left") is None


# -- shapes and sequence numbers are range-checked before anything is allocated --------------

def test_a_huge_declared_shape_or_sequence_is_refused_as_permanent_with_the_chunk_named(stub):
    stub, learner = stub
    huge = chunk("huge-shape")
    huge.steps[0].action.CopyFrom(pb.Tensor(dtype="float32", shape=[2 ** 32, 2 ** 32], data=b""))
    late = chunk("huge-seq")
    late.sequence = 2 ** 62
    deep = chunk("deep-shape")
    deep.steps[0].action.CopyFrom(pb.Tensor(dtype="float32", shape=[1] * 9 + [4], data=np.zeros(4, np.float32).tobytes()))
    odd = chunk("odd-encoding")
    odd.steps[0].images[0].encoding = 99  # a number the enum does not name (the fuzz suite found it)
    for bad in (huge, late, deep, odd):
        with pytest.raises(grpc.RpcError) as info:
            list(stub.StreamEpisodes(iter([bad]), metadata=AUTH, timeout=20))
        # INVALID_ARGUMENT with the trailers is what the robot treats as "set aside", not "retry".
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (bad.episode_id, info.value.details())
        trailers = dict(info.value.trailing_metadata())
        assert (trailers["fleet-rejected-episode"], int(trailers["fleet-rejected-sequence"])) == \
            (bad.episode_id, bad.sequence)
    assert stored_episodes(learner.config.data_dir) == set()


def test_a_credential_revoked_mid_stream_is_refused_as_unauthenticated(tmp_path):
    data = tmp_path / "learner"
    credentials = CredentialStore(data)
    credential_id, token = credentials.create("robot", "arm")
    learner = LearnerThread(data, None, train=False).start()
    channel = grpc.insecure_channel(learner.address)
    stub = pb_grpc.FleetLearnerStub(channel)
    as_arm = (("authorization", f"Bearer {token}"),)
    acked = threading.Event()

    def chunks():
        yield chunk("before")
        assert acked.wait(20)
        credentials.revoke(credential_id)
        for n in range(int(REFRESH_S) + 10):  # the running server re-reads its credentials this often
            time.sleep(1.0)
            yield chunk(f"after-{n}")

    try:
        stub.Register(pb.RegisterRequest(robot_id="arm", embodiment=wire.embodiment_to_proto("arm", CAMERAS, 7, 4, 10)),
                      metadata=as_arm, timeout=10)
        stream = stub.StreamEpisodes(chunks(), metadata=as_arm, timeout=30)
        with pytest.raises(grpc.RpcError) as info:
            for ack in stream:
                acked.set()
        # The credential is gone, not another robot's: UNAUTHENTICATED, and the data are kept spooled.
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, info.value.details()
        assert "fleet-rejected-episode" not in dict(info.value.trailing_metadata() or ())
        assert "before" in stored_episodes(data)
    finally:
        channel.close()
        learner.stop()


# -- episode integrity across chunks ------------------------------------------------------------

def steps_chunk(episode_id: str, sequence: int, first: int, count: int, end: bool = False,
                num_steps: int | None = None) -> pb.EpisodeChunk:
    steps = [wire.step_to_proto(first + i, 0.1 * (first + i), {"front": np.zeros((16, 16, 3), np.uint8)},
                                np.zeros(7, np.float32), np.full(4, first + i, np.float32), None, "autonomous", 0.0,
                                end and i == count - 1) for i in range(count)]
    outcome = pb.EpisodeOutcome(num_steps=first + count if num_steps is None else num_steps) if end else None
    return pb.EpisodeChunk(robot_id="arm", episode_id=episode_id, sequence=sequence, kind=pb.EPISODE_KIND_TRAINING,
                           steps=steps, episode_end=end, outcome=outcome)


def refused(stub, chunks) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        list(stub.StreamEpisodes(iter(chunks), metadata=AUTH, timeout=20))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    bad = chunks[-1]
    trailers = dict(info.value.trailing_metadata())
    assert (trailers["fleet-rejected-episode"], trailers["fleet-rejected-sequence"]) == (bad.episode_id,
                                                                                         str(bad.sequence))
    return info.value


def test_chunks_that_break_an_episode_are_refused_and_the_stored_episode_stays_whole(stub):
    stub, learner = stub
    # Steps that skip ahead, on the same stream and on a later one (the index is asked then).
    assert "starts at step 5" in refused(stub, [steps_chunk("skip", 0, 0, 3), steps_chunk("skip", 1, 5, 3)]).details()
    assert "starts at step 4" in refused(stub, [steps_chunk("skip", 1, 4, 3, end=True)]).details()
    list(stub.StreamEpisodes(iter([steps_chunk("skip", 1, 3, 3, end=True)]), metadata=AUTH, timeout=20))
    # Chunks after the end, and a second end.
    list(stub.StreamEpisodes(iter([steps_chunk("ended", 0, 0, 3, end=True)]), metadata=AUTH, timeout=20))
    assert "after the episode's end" in refused(stub, [steps_chunk("ended", 1, 3, 2)]).details()
    # An end chunk sent before a chunk that would precede it is checked against it.
    list(stub.StreamEpisodes(iter([steps_chunk("order", 2, 6, 2)]), metadata=AUTH, timeout=20))
    assert "chunk 2 is stored after it" in refused(stub, [steps_chunk("order", 1, 3, 3, end=True)]).details()
    # Within one chunk: steps out of order, a first chunk not at step 0, num_steps not the steps sent.
    jumbled = steps_chunk("jumbled", 0, 0, 3)
    jumbled.steps[1].index = 7
    assert "contiguous" in refused(stub, [jumbled]).details()
    assert "starts at step 0" in refused(stub, [steps_chunk("late-start", 0, 2, 3)]).details()
    assert "num_steps" in refused(stub, [steps_chunk("short", 0, 0, 3, end=True, num_steps=9)]).details()

    reader = StoreReader(learner.config.data_dir)
    try:
        complete = {row["episode_id"]: reader.load_episode(row).arrays for row in reader.complete_episodes()}
        assert set(complete) == {"skip", "ended"}
        for arrays in complete.values():  # whole: every step once, in order, the actions as sent
            assert arrays["step_index"].tolist() == list(range(len(arrays["step_index"])))
            assert arrays["action"][:, 0].tolist() == arrays["step_index"].tolist()
        assert reader.stored_totals()["chunks"] == 2 + 1 + 1  # skip 0-1, ended 0, order 2
    finally:
        reader.close()


def test_an_episode_that_never_ends_is_closed_as_truncated_and_takes_no_more_chunks(learner_thread):
    """Case 10: past the bound an open episode's new chunks are refused (set aside by the robot)
    and the learner's sweep closes it: its steps up to the first gap kept, not a success."""
    learner = learner_thread(train=False, limits=RobotLimits(episode_open_s=2.0))
    channel = grpc.insecure_channel(learner.address)
    stub = pb_grpc.FleetLearnerStub(channel)
    stub.Register(pb.RegisterRequest(robot_id="arm", embodiment=wire.embodiment_to_proto("arm", CAMERAS, 7, 4, 10)),
                  metadata=AUTH, timeout=10)
    reader = StoreReader(learner.config.data_dir)
    try:
        for chunks in ([steps_chunk("endless", 0, 0, 3), steps_chunk("endless", 1, 3, 3)],
                       [steps_chunk("gap", 0, 0, 3), steps_chunk("gap", 2, 6, 3)],  # chunk 1 never comes
                       [steps_chunk("headless", 1, 3, 3)]):  # nor chunk 0 here
            assert len(list(stub.StreamEpisodes(iter(chunks), metadata=AUTH, timeout=20))) == len(chunks)
        assert reader.complete_episodes() == []
        time.sleep(2.5)
        assert "open longer than the learner's bound" in refused(stub, [steps_chunk("endless", 2, 6, 3)]).details()
        wait_for(lambda: len(reader.complete_episodes()) == 2, 20, "the sweep closing the open episodes")
        rows = {row["episode_id"]: row for row in reader.complete_episodes()}
        assert {name: (row["num_steps"], row["success"], row["termination"]) for name, row in rows.items()} == {
            "endless": (6, 0, "truncated_by_learner"), "gap": (3, 0, "truncated_by_learner")}
        assert reader.load_episode(rows["endless"]).arrays["step_index"].tolist() == list(range(6))
        assert reader.load_episode(rows["gap"]).arrays["step_index"].tolist() == [0, 1, 2]  # chunk 2 left out
        wait_for(lambda: learner.learner.store.episode_spans("arm", "headless").final == -1, 20,
                 "the episode without chunk 0 closed empty")  # and never complete
        assert len(reader.complete_episodes()) == 2
        assert "open longer" in refused(stub, [steps_chunk("headless", 0, 0, 3)]).details()  # a robot back late
        assert "open longer" in refused(stub, [steps_chunk("gap", 1, 3, 3, end=True)]).details()
        assert learner.learner.store.close_stale(time.time()) == []  # closed once
    finally:
        reader.close()
        channel.close()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 12), st.integers(1, 4), st.booleans()), max_size=25))
def test_whatever_chunks_arrive_the_accepted_ones_never_contradict_each_other(submissions):
    """Any chunks in any order: the accepted ones join up step for step, none lies past the end,
    and a complete episode is steps 0..N-1 exactly once."""
    continuity = EpisodeContinuity()
    accepted: dict[int, tuple[int, int]] = {}
    final = None
    for sequence, first, count, end in submissions:
        header = pb.EpisodeChunk(robot_id="arm", episode_id="e", sequence=sequence, episode_end=end)
        if not continuity.known(header):
            continuity.learn(header, StoredEpisode())
        if sequence in accepted or continuity.accept(header, first, count) is not None:
            continue
        accepted[sequence] = (first, count)
        final = sequence if end else final
    for sequence, (first, count) in accepted.items():
        if sequence + 1 in accepted:
            assert accepted[sequence + 1][0] == first + count
        assert final is None or sequence <= final
    if final is not None and set(accepted) == set(range(final + 1)) and accepted[0][0] == 0:
        steps = [s for q in sorted(accepted) for s in range(accepted[q][0], sum(accepted[q]))]
        assert steps == list(range(len(steps)))


# -- bounds: bytes read but not yet acknowledged are capped per stream and per learner -------

BIG_CAMERAS = {"front": (128, 128, 3)}


def big_chunk(robot_id: str, episode_id: str, sequence: int, steps: int = 3) -> pb.EpisodeChunk:
    first = sequence * steps
    return pb.EpisodeChunk(robot_id=robot_id, episode_id=episode_id, sequence=sequence, kind=pb.EPISODE_KIND_TRAINING,
                           steps=[wire.step_to_proto(first + i, 0.0, {"front": np.full((128, 128, 3), i, np.uint8)},
                                                     np.zeros(7, np.float32), np.zeros(4, np.float32), None,
                                                     "autonomous", 0.0, False) for i in range(steps)])


def slow_disk(learner, seconds: float, robots=None) -> None:
    """The learner's store takes `seconds` longer per chunk (of `robots`, or all): a disk slower than the robots."""
    store = learner.learner.store
    put = store.put_chunk

    async def slow(chunk, arrays):
        if robots is None or chunk.robot_id in robots:
            await asyncio.sleep(seconds)
        return await put(chunk, arrays)

    store.put_chunk = slow


def test_clients_that_send_without_waiting_for_acks_are_held_to_the_caps(learner_thread):
    learner = learner_thread(train=False, limits=RobotLimits(stream_pending_mb=1.0, pending_mb=1.5))
    channel = grpc.insecure_channel(learner.address)
    stub = pb_grpc.FleetLearnerStub(channel)
    slow_disk(learner, 0.05)
    try:
        for robot in ("flood-a", "flood-b"):
            stub.Register(pb.RegisterRequest(robot_id=robot, embodiment=wire.embodiment_to_proto(
                robot, BIG_CAMERAS, 7, 4, 10)), metadata=AUTH, timeout=10)
        size = big_chunk("flood-a", "e", 0).ByteSize()
        # Each sends its chunks as fast as gRPC takes them; nobody waits for an ack before the next.
        streams = [stub.StreamEpisodes(iter([big_chunk(robot, "e", s) for s in range(30)]), metadata=AUTH, timeout=60)
                   for robot in ("flood-a", "flood-b")]
        acks = [list(stream) for stream in streams]
        assert [len(a) for a in acks] == [30, 30]  # slowed, not refused: nothing lost
        pending = learner.learner.servicer.limits.pending
        assert size <= pending.peak <= 1.5e6 + size, pending.peak  # the learner's cap held
        assert pending.held == 0  # every byte handed back when the streams ended
    finally:
        channel.close()


def test_a_stream_that_finds_no_room_is_refused_as_retryable_and_its_chunk_stays_spooled(learner_thread,
                                                                                           monkeypatch):
    monkeypatch.setattr(stream_module, "PENDING_WAIT_S", 1.0)
    learner = learner_thread(train=False, limits=RobotLimits(pending_mb=0.1))
    channel = grpc.insecure_channel(learner.address)
    stub = pb_grpc.FleetLearnerStub(channel)
    slow_disk(learner, 4.0, robots={"holder"})
    try:
        for robot in ("holder", "late"):
            stub.Register(pb.RegisterRequest(robot_id=robot, embodiment=wire.embodiment_to_proto(
                robot, BIG_CAMERAS, 7, 4, 10)), metadata=AUTH, timeout=10)
        holding = stub.StreamEpisodes(iter([big_chunk("holder", "e", 0)]), metadata=AUTH, timeout=30)
        wait_for(lambda: learner.learner.servicer.limits.pending.held > 0, 10, "the holder's chunk read")
        with pytest.raises(grpc.RpcError) as info:
            list(stub.StreamEpisodes(iter([big_chunk("late", "e", 0)]), metadata=AUTH, timeout=30))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, info.value.details()
        assert "fleet-rejected-episode" not in dict(info.value.trailing_metadata() or ())  # retry, not set aside
        assert len(list(holding)) == 1
        assert learner.learner.servicer.limits.pending_refusals == 1
    finally:
        channel.close()


def test_a_stream_whose_acks_are_not_read_is_ended_and_its_bytes_handed_back(learner_thread, monkeypatch):
    """A client that never reads its acks blocks the learner's ack writes; past ACK_STALL_S at its
    stream's cap the stream ends (retryable) instead of holding its bytes until its deadline."""
    monkeypatch.setattr(stream_module, "ACK_STALL_S", 1.0)
    learner = learner_thread(train=False, limits=RobotLimits(stream_pending_mb=1.0))
    servicer = learner.learner.servicer
    acknowledge = servicer.acknowledge

    async def deaf(context, chunk, status):  # the ack write a client that never reads would block
        if chunk.robot_id == "deaf":
            await asyncio.sleep(3600)
        await acknowledge(context, chunk, status)

    servicer.acknowledge = deaf
    channel = grpc.insecure_channel(learner.address)
    stub = pb_grpc.FleetLearnerStub(channel)
    try:
        for robot in ("deaf", "other"):
            stub.Register(pb.RegisterRequest(robot_id=robot, embodiment=wire.embodiment_to_proto(
                robot, BIG_CAMERAS, 7, 4, 10)), metadata=AUTH, timeout=10)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            list(stub.StreamEpisodes(iter([big_chunk("deaf", "e", s) for s in range(6)]), metadata=AUTH, timeout=60))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, info.value.details()
        assert "not read" in info.value.details()
        assert "fleet-rejected-episode" not in dict(info.value.trailing_metadata() or ())  # spooled, retried later
        assert time.monotonic() - started < 30  # ended at the stall bound, not at the client's deadline
        wait_for(lambda: servicer.limits.pending.held == 0, 10, "the stalled stream's bytes handed back")
        assert len(list(stub.StreamEpisodes(iter([big_chunk("other", "e", 0)]), metadata=AUTH, timeout=30))) == 1
    finally:
        channel.close()


def test_a_float64_that_overflows_float32_is_refused_like_an_infinity():
    """Stored as float32, 1e39 would be inf: it is checked as it would be stored."""
    embodiment = wire.embodiment_to_proto("arm", CAMERAS, 7, 4, 10)
    bad = chunk("overflow")
    bad.steps[0].action.CopyFrom(wire.tensor_to_proto(np.array([0.0, 1e39, 0.0, 0.0], np.float64)))
    with pytest.raises(wire.WireError, match="non-finite"):
        wire.decode_chunk_steps(bad, embodiment)
    assert episode_id_problem("e" + ":" * 60) is not None  # valid characters, but too long once encoded
    assert episode_id_problem("0123456789abcdef0123456789abcdef") is None
