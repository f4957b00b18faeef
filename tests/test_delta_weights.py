"""Delta weight sync (core/tensor_ranges.py, robot_client/weights.py): a robot fetches over real
gRPC only the tensors that changed since a version it holds, copies the rest from disk, resumes
a cut download without re-sending what arrived, and never assembles a file that differs from
the learner's."""

from __future__ import annotations

import grpc
import pytest
import torch
from safetensors.numpy import load_file

from conftest import TOKEN
from core import wire
from core.tensor_ranges import Piece, TensorRangeError, file_ranges, header_ranges, plan
from fleet.v1 import fleet_pb2 as pb
from fleet.v1 import fleet_pb2_grpc as pb_grpc
from learner.versions import VersionRegistry
from policy import PolicyConfig, VLAPolicy, load_checkpoint, save_checkpoint
from policy.checkpoint import WEIGHTS_FILE, sha256_file
from robot_client.weights import download_version
from test_pretrained import SMALL

AUTH = (("authorization", f"Bearer {TOKEN}"),)


def test_the_ranges_are_where_safetensors_keeps_each_tensor(tmp_path):
    policy = VLAPolicy(PolicyConfig(vocab=("reach",), **SMALL))
    directory = save_checkpoint(tmp_path / "v0", policy, 0)
    path = directory / WEIGHTS_FILE
    header_bytes, ranges = file_ranges(path)
    tensors = load_file(str(path))
    raw = path.read_bytes()
    assert {r.name for r in ranges} == set(tensors) and header_bytes < ranges[0].offset + 1
    for r in ranges:
        assert raw[r.offset:r.offset + r.length] == tensors[r.name].tobytes()
    assert ranges[-1].offset + ranges[-1].length == len(raw)
    with pytest.raises(TensorRangeError):
        header_ranges(raw[:8] + b"{not json" + raw[17:], len(raw))
    with pytest.raises(TensorRangeError):
        header_ranges((10 ** 12).to_bytes(8, "little") + raw[8:], len(raw))


def test_the_plan_copies_what_is_held_and_merges_what_it_fetches(tmp_path):
    policy = VLAPolicy(PolicyConfig(vocab=("reach",), **SMALL))
    path = save_checkpoint(tmp_path / "v0", policy, 0) / WEIGHTS_FILE
    header_bytes, ranges = file_ranges(path)
    size = path.stat().st_size
    held = {r.sha256: (path, r.offset) for r in ranges[1::2]}  # every other tensor
    pieces = plan(size, header_bytes, ranges, held)
    assert pieces[0].offset == 0 and pieces[-1].end == size
    assert all(a.end == b.offset for a, b in zip(pieces, pieces[1:]))  # contiguous, in order
    fetched = [p for p in pieces if p.source is None]
    assert all(a.end < b.offset for a, b in zip(fetched, fetched[1:]))  # neighbours merged
    # content-addressed: a tensor equal to a held one (a zero bias) is copied too
    assert sum(p.length for p in pieces if p.source) == sum(r.length for r in ranges if r.sha256 in held and r.length)
    assert all(p.sha256 in held for p in pieces if p.source)
    assert plan(size, header_bytes, ranges, {}) == [Piece(0, size)]  # nothing held: one range


@pytest.fixture
def fleet(learner_thread, tmp_path):
    """A learner without a trainer, a registry to publish into, and a robot's stub."""
    learner = learner_thread(train=False)
    channel = grpc.insecure_channel(learner.address)
    stub = pb_grpc.FleetLearnerStub(channel)
    stub.Register(pb.RegisterRequest(robot_id="arm", embodiment=wire.embodiment_to_proto(
        "arm", {"front": (32, 32, 3)}, 7, 4, 10)), metadata=AUTH, timeout=10)
    yield learner, VersionRegistry(learner.config.data_dir), stub
    channel.close()


def publish(registry: VersionRegistry, policy: VLAPolicy, version: int):
    directory = save_checkpoint(registry.checkpoint_dir(version), policy, version)
    registry.add(version, {})
    registry.publish(version, note="test")
    return directory


def announced(stub, version: int) -> pb.PolicyAnnouncement:
    for announcement in stub.WatchPolicy(pb.WatchPolicyRequest(robot_id="arm", current_version=-1), metadata=AUTH,
                                         timeout=10):
        if announcement.version == version:
            return announcement
    raise AssertionError(f"version {version} was not announced")


def retrain(policy: VLAPolicy, prefix: str) -> int:
    """Changes the tensors whose names start with `prefix` (what training the head would do);
    returns their bytes."""
    changed = 0
    with torch.no_grad():
        for name, tensor in policy.state_dict().items():
            if name.startswith(prefix) and tensor.is_floating_point():
                tensor.add_(0.01)
                changed += tensor.numel() * tensor.element_size()
    assert changed
    return changed


def test_a_robot_fetches_only_the_changed_tensors_and_holds_the_learners_file(fleet, tmp_path):
    learner, registry, stub = fleet
    policy = VLAPolicy(PolicyConfig(vocab=("reach",), **SMALL)).eval()
    publish(registry, policy, 0)
    weights = tmp_path / "weights"
    first = download_version(stub, announced(stub, 0), "arm", weights, AUTH)
    assert first.fetched_bytes == first.file_bytes  # nothing held yet: the whole version

    changed = retrain(policy, "head.")
    source = publish(registry, policy, 1)
    second = download_version(stub, announced(stub, 1), "arm", weights, AUTH)
    own = second.directory / WEIGHTS_FILE
    assert sha256_file(own) == sha256_file(source / WEIGHTS_FILE)
    meta_bytes = (source / "meta.json").stat().st_size
    header_bytes, _ = file_ranges(own)
    assert changed <= second.fetched_bytes <= changed + header_bytes + meta_bytes + 4096
    assert second.fetched_bytes < second.file_bytes - 40_000  # the unchanged encoder stayed home
    loaded = load_checkpoint(second.directory).policy
    for name, tensor in policy.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name

    # Two versions on, with another part changed too: the union of both changes comes.
    changed_again = retrain(policy, "camera_encoders.")
    publish(registry, policy, 2)
    third = download_version(stub, announced(stub, 2), "arm", weights, AUTH)
    assert changed_again <= third.fetched_bytes < third.file_bytes
    assert sha256_file(third.directory / WEIGHTS_FILE) == sha256_file(registry.checkpoint_dir(2) / WEIGHTS_FILE)


def test_a_cut_download_resumes_without_the_bytes_that_arrived(fleet, tmp_path):
    learner, registry, stub = fleet
    source = publish(registry, VLAPolicy(PolicyConfig(vocab=("reach",), **SMALL)), 0) / WEIGHTS_FILE
    raw = source.read_bytes()
    staging = tmp_path / "weights" / "v000000.download"
    staging.mkdir(parents=True)
    (staging / (WEIGHTS_FILE + ".part")).write_bytes(raw[:len(raw) // 2])  # the link dropped halfway
    download = download_version(stub, announced(stub, 0), "arm", tmp_path / "weights", AUTH)
    meta_bytes = (source.parent / "meta.json").stat().st_size
    assert download.fetched_bytes == len(raw) - len(raw) // 2 + meta_bytes
    assert (download.directory / WEIGHTS_FILE).read_bytes() == raw


def test_a_held_copy_damaged_on_disk_is_fetched_instead(fleet, tmp_path):
    learner, registry, stub = fleet
    policy = VLAPolicy(PolicyConfig(vocab=("reach",), **SMALL)).eval()
    publish(registry, policy, 0)
    weights = tmp_path / "weights"
    held = download_version(stub, announced(stub, 0), "arm", weights, AUTH).directory / WEIGHTS_FILE
    _, ranges = file_ranges(held)
    biggest = max((r for r in ranges if not r.name.startswith("head.")), key=lambda r: r.length)  # unchanged in v1
    damaged = bytearray(held.read_bytes())
    damaged[biggest.offset] ^= 0xFF
    held.write_bytes(bytes(damaged))
    retrain(policy, "head.")
    source = publish(registry, policy, 1)
    download = download_version(stub, announced(stub, 1), "arm", weights, AUTH)
    assert sha256_file(download.directory / WEIGHTS_FILE) == sha256_file(source / WEIGHTS_FILE)
    assert download.fetched_bytes >= biggest.length


def test_a_range_outside_the_file_is_refused(fleet):
    learner, registry, stub = fleet
    publish(registry, VLAPolicy(PolicyConfig(vocab=("reach",), **SMALL)), 0)
    size = next(f.size_bytes for f in announced(stub, 0).files if f.name == WEIGHTS_FILE)
    for offset, length in ((0, size + 1), (size - 4, 8), (-1, 4)):
        request = pb.FetchWeightsRequest(robot_id="arm", version=0, file_name=WEIGHTS_FILE, offset=offset,
                                         length=length)
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.FetchWeights(request, metadata=AUTH, timeout=10))
        assert caught.value.code() == grpc.StatusCode.OUT_OF_RANGE
    request = pb.FetchWeightsRequest(robot_id="arm", version=0, file_name=WEIGHTS_FILE, offset=8, length=100)
    assert sum(len(c.data) for c in stub.FetchWeights(request, metadata=AUTH, timeout=10)) == 100


def test_the_weights_bench_measures_delta_against_whole_versions():
    """`fleet bench weights --trainable-fraction`: real robot processes over gRPC; the version that
    changes a tenth of the policy costs each robot a fraction of the bytes of one that changes all."""
    from bench.weights import run_delta_arm

    figures = run_delta_arm(robots=2, model_mb=4.0, fraction=0.1)
    assert figures["full_bytes_per_robot"] >= figures["model_mb"] * 1e6 * 0.8  # equal tensors (biases) are shared
    assert figures["delta_bytes_per_robot"] < figures["full_bytes_per_robot"] / 3
    assert figures["delta_propagation_s"] > 0 and figures["full_propagation_s"] > 0
