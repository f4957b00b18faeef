"""Unit-level behaviour: wire decoding, the episode store, HG-DAgger labels, checkpoints, takeover."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch

from fleet.v1 import fleet_pb2 as pb
from core import wire
from learner.algorithms import make_algorithm
from learner.samplers import LabelledEpisode, WindowIndex
from core.episode import EpisodeArrays
from learner.store import EpisodeStore, StoreReader
from policy import CheckpointError, PolicyConfig, VLAPolicy, load_checkpoint, save_checkpoint
from robot_client.takeover import Mode, TakeoverController

EMBODIMENT = wire.embodiment_to_proto("test_arm", {"front": (8, 8, 3)}, state_dim=3, action_dim=2, control_hz=10)


def make_chunk(episode="ep-1", sequence=0, sources=("autonomous",) * 3, first_index=0, end=False, robot="r1"):
    steps = [wire.step_to_proto(first_index + i, 0.0, {"front": np.full((8, 8, 3), i, np.uint8)},
                                np.arange(3, dtype=np.float32) + i, np.array([i, -i], np.float32),
                                np.zeros(2, np.float32), source, 0.0, False)
             for i, source in enumerate(sources)]
    chunk = pb.EpisodeChunk(robot_id=robot, episode_id=episode, sequence=sequence, policy_version=0, task="t",
                            instruction="do it", kind=pb.EPISODE_KIND_TRAINING, steps=steps)
    if end:
        chunk.episode_end = True
        chunk.outcome.CopyFrom(pb.EpisodeOutcome(success=True, num_steps=first_index + len(sources)))
    return chunk


def test_tensor_round_trip_and_bad_bytes():
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert np.array_equal(wire.tensor_from_proto(wire.tensor_to_proto(array)), array)
    broken = wire.tensor_to_proto(array)
    broken.data = broken.data[:-4]
    with pytest.raises(wire.WireError, match="bytes do not match"):
        wire.tensor_from_proto(broken)
    with pytest.raises(wire.WireError, match="unknown dtype"):
        wire.tensor_from_proto(pb.Tensor(dtype="object", shape=[1], data=b"x"))


def test_decode_rejects_wrong_state_shape_and_unknown_camera():
    chunk = make_chunk()
    chunk.steps[1].state.CopyFrom(wire.tensor_to_proto(np.zeros(5, np.float32)))
    with pytest.raises(wire.WireError, match="state shape"):
        wire.decode_chunk_steps(chunk, EMBODIMENT)
    chunk = make_chunk()
    chunk.steps[0].images[0].camera = "side"
    with pytest.raises(wire.WireError, match="not in the registered embodiment"):
        wire.decode_chunk_steps(chunk, EMBODIMENT)


def test_store_deduplicates_and_counts_takeovers_across_chunks(tmp_path):
    store = EpisodeStore(tmp_path)
    store.register_robot("r1", EMBODIMENT, [])
    first = make_chunk(sequence=0, sources=("autonomous", "intervention", "intervention"))
    second = make_chunk(sequence=1, first_index=3, sources=("intervention", "autonomous", "intervention"), end=True)
    for chunk in (first, second):
        assert store.put_chunk_sync(chunk, wire.decode_chunk_steps(chunk, EMBODIMENT)) == "stored"
    assert store.put_chunk_sync(first, wire.decode_chunk_steps(first, EMBODIMENT)) == "duplicate"
    store.close()

    reader = StoreReader(tmp_path)  # a fresh connection sees only what was committed
    (row,) = reader.complete_episodes()
    assert row["human_steps"] == 4
    assert row["takeovers"] == 2  # the takeover spanning the chunk boundary counts once
    episode = reader.load_episode(row)
    assert episode.arrays["step_index"].tolist() == list(range(6))
    assert reader.db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0] == 2


def test_store_async_path_acks_after_commit(tmp_path):
    store = EpisodeStore(tmp_path)
    store.register_robot("r1", EMBODIMENT, [])
    chunks = [make_chunk(episode=f"e{i}", end=True) for i in range(5)]

    async def put_all():
        return await asyncio.gather(*(store.put_chunk(c, wire.decode_chunk_steps(c, EMBODIMENT)) for c in chunks))

    assert asyncio.run(put_all()) == ["stored"] * 5
    assert len(StoreReader(tmp_path).complete_episodes()) == 5
    store.close()


def _episode(sources, success=False):
    n = len(sources)
    codes = np.array([wire.SOURCE_TO_PROTO[s] for s in sources], np.int8)
    arrays = {"image/front": np.zeros((n, 8, 8, 3), np.uint8), "state": np.zeros((n, 3), np.float32),
              "action": np.arange(2 * n, dtype=np.float32).reshape(n, 2), "source": codes}
    return EpisodeArrays("r1", "e", "t", "do it", "training", 0, success, arrays)


def test_hg_dagger_labels_only_human_steps_and_masks_straddling_windows():
    algorithm = make_algorithm("hg_dagger")
    episode = _episode(["autonomous"] * 4 + ["intervention"] * 3 + ["autonomous"] * 3)
    labels = algorithm.step_labels(episode)
    assert labels.tolist() == [False] * 4 + [True] * 3 + [False] * 3
    index = WindowIndex(horizon=4)
    index.add(LabelledEpisode(episode, labels, online=True))
    # Windows [t, t+4) touching steps 4..6: t = 1..6.
    assert [t for _, t in index.windows] == [1, 2, 3, 4, 5, 6]
    batch = index.batch([(0, 2)], ("front",), lambda texts: torch.zeros(len(texts), 1, dtype=torch.long))
    assert batch["label_mask"][0].tolist() == [False, False, True, True]
    assert not algorithm.wants_episode("evaluation", True, 10)
    assert not algorithm.wants_episode("training", True, 0)
    with_successes = make_algorithm("hg_dagger", {"use_autonomous_successes": True})
    assert with_successes.step_labels(_episode(["autonomous"] * 3, success=True)).all()


def test_autonomous_actions_never_reach_the_loss():
    """Two episodes that differ only in autonomous actions train identically; a human action counts."""
    config = PolicyConfig(cameras=("front",), image_size=8, encoder_image_size=8, state_dim=3, action_dim=2,
                          horizon=4, d_model=32, n_heads=2, n_layers=1, keypoints=4, vocab=("do", "it"))
    policy = VLAPolicy(config).train()
    algorithm = make_algorithm("hg_dagger")
    sources = ["autonomous"] * 4 + ["intervention"] * 3 + ["autonomous"] * 3

    def loss_for(episode):
        index = WindowIndex(horizon=4)
        index.add(LabelledEpisode(episode, algorithm.step_labels(episode), online=True))
        batch = index.batch([(0, 2), (0, 5)], ("front",), policy.tokenize)
        torch.manual_seed(0)
        return policy.compute_loss(batch).item()

    original = _episode(sources)
    autonomous_changed = _episode(sources)
    autonomous_changed.arrays["action"][[0, 1, 2, 3, 7, 8, 9]] = 0.77
    human_changed = _episode(sources)
    human_changed.arrays["action"][5] = 0.77
    assert loss_for(original) == pytest.approx(loss_for(autonomous_changed), abs=0)
    assert loss_for(original) != pytest.approx(loss_for(human_changed))


def test_checkpoint_round_trip_and_corruption(tmp_path):
    config = PolicyConfig(cameras=("front",), image_size=8, encoder_image_size=8, state_dim=3, action_dim=2,
                          d_model=32, n_heads=2, n_layers=1, keypoints=4, vocab=("go",))
    policy = VLAPolicy(config).eval()
    directory = save_checkpoint(tmp_path / "v000003", policy, 3, info={"updates": 7},
                                artifacts={"bank": {"embeddings": np.ones((2, 4), np.float32)}})
    loaded = load_checkpoint(directory)
    assert loaded.version == 3 and loaded.meta["info"]["updates"] == 7
    assert np.array_equal(loaded.artifacts["bank"]["embeddings"], np.ones((2, 4)))
    for key, value in policy.state_dict().items():
        assert torch.equal(loaded.policy.state_dict()[key], value)
    weights = directory / "policy.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(directory)


def test_takeover_state_machine_labels_steps():
    controller = TakeoverController()
    assert controller.source_label() == "autonomous"
    assert controller.take_over("alice")
    assert not controller.take_over("bob")  # one operator at a time
    controller.record_step()
    controller.record_step()
    assert controller.source_label() == "intervention"
    controller.pause()
    assert controller.mode is Mode.PAUSED
    controller.resume()
    assert controller.hand_back() == ("alice", 2)
    assert controller.source_label() == "autonomous" and controller.hand_back() is None


def test_version_table_reports_success_per_task(tmp_path):
    from learner.metrics import format_table, version_table
    from learner.store import SqliteIndex, StoreReader

    index = SqliteIndex(tmp_path)
    db = index.db
    rows = [  # (version, task, kind, success)
        (0, "reach", "evaluation", 1), (0, "reach", "evaluation", 0), (0, "push_cube", "evaluation", 0),
        (1, "reach", "evaluation", 1), (1, "reach", "evaluation", 1), (1, "push_cube", "evaluation", 1),
        (1, "push_cube", "training", 0),
    ]
    for i, (version, task, kind, success) in enumerate(rows):
        db.execute("INSERT INTO episodes (robot_id, episode_id, task, instruction, kind, seed, policy_version, "
                   "first_stored_at, complete, success, total_reward, human_steps, takeovers) "
                   "VALUES ('r', ?, ?, '', ?, 0, ?, 0, 1, ?, ?, 0, 0)", (f"e{i}", task, kind, version, success, success))
    db.commit()
    table = version_table(StoreReader(tmp_path), robots=1, operators=1, eval_seeds=3)
    assert [r["task_success"] for r in table] == [{"push_cube": 0.0, "reach": 0.5}, {"push_cube": 1.0, "reach": 1.0}]
    assert table[0]["success_rate"] == pytest.approx(1 / 3)
    assert table[1]["task_eval_episodes"] == {"push_cube": 1, "reach": 2}
    header = format_table(table).splitlines()[0]
    assert "push_cube" in header and "reach" in header
    # The dashboard lists every registered version, one that no robot ran yet too.
    records = [{"version": v, "info": {"updates_per_s": 10.0 * v}} for v in (0, 1, 2)]
    assert [r["version"] for r in version_table(StoreReader(tmp_path), 1, 1, 3, records)] == [0, 1]
    listed = version_table(StoreReader(tmp_path), 1, 1, 3, records, unrun=True)
    assert [r["version"] for r in listed] == [0, 1, 2]
    assert listed[2]["episodes"] == 0 and listed[2]["success_rate"] is None and listed[2]["updates_per_s"] == 20.0


def test_spool_index_survives_a_restart_and_follows_acks(tmp_path):
    from robot_client.spool import Spool

    spool = Spool(tmp_path / "spool")
    for sequence in range(3):
        spool.put(pb.EpisodeChunk(robot_id="r", episode_id="e", sequence=sequence))
    spool.ack("e", 1)
    assert [p.name for p in spool.pending()] == ["e__000000.chunk", "e__000002.chunk"]
    reopened = Spool(tmp_path / "spool")  # a restarted robot finds what it left, oldest first
    assert [p.name for p in reopened.pending()] == ["e__000000.chunk", "e__000002.chunk"]
    reopened.reject("e", 0, "bad chunk")
    assert len(reopened) == 1 and (tmp_path / "spool" / "rejected" / "e__000000.chunk").exists()
    assert reopened.read(reopened.pending()[0]).sequence == 2


def test_spool_quarantines_damaged_files_and_reads_old_bare_ones(tmp_path):
    import pytest

    from robot_client.spool import CorruptChunk, Spool

    spool = Spool(tmp_path / "spool")
    steps = [pb.Step(index=i, reward=0.5) for i in range(20)]
    for sequence in range(3):
        spool.put(pb.EpisodeChunk(robot_id="r", episode_id="e", sequence=sequence, steps=steps))
    first, second, third = spool.pending()
    raw = bytearray(first.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # one flipped bit
    first.write_bytes(bytes(raw))
    second.write_bytes(second.read_bytes()[:-7])  # cut short at any byte, even a field boundary
    for damaged in (first, second):
        with pytest.raises(CorruptChunk, match="CRC"):
            spool.read(damaged)
        assert (tmp_path / "spool" / "rejected" / damaged.name).exists()
    assert len(spool.read(third).steps) == 20 and len(spool) == 1
    # A chunk spooled by an older robot (bare protobuf, no header) is still read.
    bare = pb.EpisodeChunk(robot_id="r", episode_id="old", sequence=0)
    (tmp_path / "spool" / "old__000000.chunk").write_bytes(bare.SerializeToString())
    assert Spool(tmp_path / "spool").read(tmp_path / "spool" / "old__000000.chunk").episode_id == "old"


def test_ptp_loss_mask_covers_exactly_the_configured_tokens():
    def mask(**overrides):
        return PolicyConfig(horizon=8, obs_steps=3, n_action_steps=2, **overrides).loss_token_mask()

    past, future = [False, False], [True] * 6
    assert mask() == past + future  # without PTP: current and future tokens only
    assert mask(past_token_prediction=True) == [True, True] + future  # every past token
    assert mask(past_token_prediction=True, ptp_past_tokens=1) == [False, True] + future  # the last k = 1
    assert PolicyConfig().loss_token_mask() == [True] * 8  # one frame: no past tokens at all
    with pytest.raises(ValueError, match="past tokens"):
        PolicyConfig(horizon=3, obs_steps=3, n_action_steps=2)


def test_windows_align_past_action_tokens_with_the_observation_window():
    steps = 6
    episode = EpisodeArrays("r", "e", "t", "do it", "demonstration", -1, True, {
        "image/front": np.zeros((steps, 8, 8, 3), np.uint8), "state": np.zeros((steps, 3), np.float32),
        "action": np.arange(steps, dtype=np.float32)[:, None].repeat(2, 1),
        "source": np.full(steps, pb.ACTION_SOURCE_OFFLINE_DEMO, np.int8)})
    index = WindowIndex(horizon=4, past=2)
    index.add(LabelledEpisode(episode, np.ones(steps, bool), online=False))
    batch = index.batch([(0, 0), (0, 3)], ("front",), lambda texts: torch.zeros(len(texts), 1, dtype=torch.long))
    # At t = 0 the two past tokens lie before the episode: no labels, filled with the first action.
    assert batch["label_mask"][0].tolist() == [False, False, True, True]
    assert batch["action"][0, :, 0].tolist() == [0, 0, 0, 1]
    # At t = 3 the tokens are the actions of steps 1, 2 (past), 3 (current) and 4.
    assert batch["label_mask"][1].tolist() == [True] * 4
    assert batch["action"][1, :, 0].tolist() == [1, 2, 3, 4]


def test_runner_executes_from_the_current_token_on():
    from policy import PolicyRunner, VLAPolicy

    # A real long-context policy whose sampler returns token i = the action [i / 10].
    policy = VLAPolicy(PolicyConfig(horizon=8, obs_steps=3, n_action_steps=2, cameras=("front",), state_dim=1,
                                    action_dim=1, d_model=16, n_heads=2, n_layers=1, keypoints=4)).eval()
    policy.sample_normalized = lambda frames, text, generator=None: torch.arange(8.0)[None, :, None] / 10
    runner = PolicyRunner(policy)
    frame = {"front": np.zeros((96, 96, 3), np.uint8)}
    executed = [float(runner.act(frame, np.zeros(1), "")[0]) for _ in range(2)]
    assert executed == pytest.approx([0.2, 0.3])  # tokens 2 and 3: the current step and the next


def test_success_intervals_are_wilson_intervals():
    from learner.metrics import wilson_interval

    low, high = wilson_interval(15, 30)
    assert abs(low - 0.3315) < 1e-3 and abs(high - 0.6685) < 1e-3
    assert wilson_interval(0, 30)[0] == 0.0 and 0.10 < wilson_interval(0, 30)[1] < 0.12  # 0/30 is not "surely 0"
    assert wilson_interval(30, 30)[1] == 1.0 and wilson_interval(30, 30)[0] < 0.9
    assert wilson_interval(0, 0) is None


def test_standby_slot_takes_only_the_version_it_tested():
    from types import SimpleNamespace

    from robot_client.weights import StandbySlot

    slot = StandbySlot()
    assert slot.take() is None
    slot.offer(SimpleNamespace(version=3))
    assert slot.take(when=lambda version: version < 2) is None and slot.peek_version() == 3  # stays staged
    slot.offer(SimpleNamespace(version=1))  # a rollback staged over it
    assert slot.take(when=lambda version: version < 2).version == 1 and slot.peek_version() is None
