"""The one place where Python values become fleet.v1 messages and back.

Tensors travel as raw bytes with dtype and shape; decoding validates both, so a malformed
message surfaces as a `WireError` with a sentence a person can act on, never as a numpy
exception deep inside the learner.
"""

from __future__ import annotations

import math

import numpy as np

from fleet.v1 import fleet_pb2 as pb

# Largest gRPC message either side accepts, and the size robots seal chunks under.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
CHUNK_TARGET_BYTES = 1 * 1024 * 1024
# A chunk's sequence within its episode (chunk files are named by it, six digits): at a chunk a
# second, eleven days of one episode.
MAX_SEQUENCE = 999_999
MAX_STEP = 10 ** 9  # steps of one episode (at 1 kHz, eleven days)

_ALLOWED_DTYPES = {"float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool"}

SOURCE_TO_PROTO = {
    "autonomous": pb.ACTION_SOURCE_AUTONOMOUS,
    "intervention": pb.ACTION_SOURCE_INTERVENTION,
    "offline_demo": pb.ACTION_SOURCE_OFFLINE_DEMO,
}
PROTO_TO_SOURCE = {v: k for k, v in SOURCE_TO_PROTO.items()}

KIND_TO_PROTO = {
    "training": pb.EPISODE_KIND_TRAINING,
    "evaluation": pb.EPISODE_KIND_EVALUATION,
    "demonstration": pb.EPISODE_KIND_DEMONSTRATION,
}
PROTO_TO_KIND = {v: k for k, v in KIND_TO_PROTO.items()}


# Step extras in which NaN is a value ("none", e.g. no task distance); infinities never are.
NAN_MEANS_NONE = frozenset({"rl/distance"})


class WireError(ValueError):
    """A message that does not satisfy the fleet.v1 contract."""


def _finite(value, what: str, nan_allowed: bool = False) -> None:
    """Refuses NaN and infinities in a float value: a robot's bad sensor or bug must never become
    a label, a reward or, through training, a robot's weights."""
    array = np.asarray(value)
    if array.dtype.kind != "f":
        return
    bad = np.isinf(array) if nan_allowed else ~np.isfinite(array)
    if bad.any():
        raise WireError(f"{what}: non-finite value ({array[bad].flat[0]}); refused, nothing stored")


def _as_stored(array: np.ndarray) -> np.ndarray:
    """`array` as the store keeps it (float32); a value too large for it becomes inf, silently."""
    with np.errstate(over="ignore"):
        return array.astype(np.float32)


def tensor_to_proto(array: np.ndarray) -> pb.Tensor:
    array = np.ascontiguousarray(array)
    if array.dtype.name not in _ALLOWED_DTYPES:
        raise WireError(f"dtype {array.dtype.name} cannot travel; use one of {sorted(_ALLOWED_DTYPES)}")
    little = array.astype(array.dtype.newbyteorder("<"), copy=False)
    return pb.Tensor(dtype=array.dtype.name, shape=list(array.shape), data=little.tobytes())


def tensor_from_proto(tensor: pb.Tensor, what: str = "tensor") -> np.ndarray:
    if tensor.dtype not in _ALLOWED_DTYPES:
        raise WireError(f"{what}: unknown dtype {tensor.dtype!r}")
    if len(tensor.shape) > 8 or any(d < 0 for d in tensor.shape):
        raise WireError(f"{what}: shape {list(tensor.shape)} needs at most 8 dimensions, none negative")
    dtype = np.dtype(tensor.dtype).newbyteorder("<")
    expected = math.prod(tensor.shape) * dtype.itemsize  # Python ints: [2**32, 2**32] does not wrap to 0
    if len(tensor.data) != expected:
        raise WireError(
            f"{what}: {len(tensor.data)} bytes do not match dtype {tensor.dtype} and shape "
            f"{list(tensor.shape)} ({expected} bytes expected)"
        )
    return np.frombuffer(tensor.data, dtype=dtype).reshape(tuple(tensor.shape)).astype(tensor.dtype, copy=False)


def image_to_proto(camera: str, pixels: np.ndarray) -> pb.Image:
    if pixels.dtype != np.uint8 or pixels.ndim != 3:
        raise WireError(f"camera {camera}: expected HxWxC uint8, got {pixels.dtype} {pixels.shape}")
    h, w, c = pixels.shape
    return pb.Image(camera=camera, encoding=pb.IMAGE_ENCODING_RAW, height=h, width=w, channels=c,
                    data=np.ascontiguousarray(pixels).tobytes())


def png_image_to_proto(camera: str, pixels: np.ndarray) -> pb.Image:
    """A PNG-encoded picture (live previews: small on the wire, shown by a browser as they are)."""
    import io

    from PIL import Image

    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] not in (1, 3, 4):
        raise WireError(f"camera {camera}: expected HxWx(1|3|4) uint8, got {pixels.dtype} {pixels.shape}")
    h, w, c = pixels.shape
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels if c != 1 else pixels[..., 0])).save(buffer, format="PNG", compress_level=1)
    return pb.Image(camera=camera, encoding=pb.IMAGE_ENCODING_PNG, height=h, width=w, channels=c, data=buffer.getvalue())


def image_from_proto(image: pb.Image) -> np.ndarray:
    if image.encoding != pb.IMAGE_ENCODING_RAW:
        # PNG/JPEG are part of the contract; the embedded learner accepts raw frames only so far.
        known = image.encoding in pb.ImageEncoding.values()  # an unknown number has no name to print
        raise WireError(f"camera {image.camera}: encoding "
                        f"{pb.ImageEncoding.Name(image.encoding) if known else image.encoding} not supported")
    expected = image.height * image.width * image.channels
    if min(image.height, image.width, image.channels) <= 0 or len(image.data) != expected:
        raise WireError(
            f"camera {image.camera}: {len(image.data)} bytes for {image.height}x{image.width}x{image.channels}"
        )
    return np.frombuffer(image.data, dtype=np.uint8).reshape(image.height, image.width, image.channels)


def embodiment_to_proto(robot_type: str, cameras: dict[str, tuple[int, int, int]], state_dim: int,
                        action_dim: int, control_hz: float) -> pb.Embodiment:
    return pb.Embodiment(
        robot_type=robot_type,
        cameras=[pb.CameraSpec(name=n, height=s[0], width=s[1], channels=s[2]) for n, s in cameras.items()],
        state_dim=state_dim, action_dim=action_dim, control_hz=control_hz,
    )


def step_to_proto(index: int, timestamp: float, images: dict[str, np.ndarray], state: np.ndarray,
                  action: np.ndarray, policy_action: np.ndarray | None, source: str, reward: float,
                  done: bool, extras: dict[str, np.ndarray] | None = None) -> pb.Step:
    step = pb.Step(
        index=index, timestamp=timestamp,
        images=[image_to_proto(name, px) for name, px in images.items()],
        state=tensor_to_proto(np.asarray(state, np.float32)),
        action=tensor_to_proto(np.asarray(action, np.float32)),
        source=SOURCE_TO_PROTO[source], reward=float(reward), done=bool(done),
    )
    if policy_action is not None:
        step.policy_action.CopyFrom(tensor_to_proto(np.asarray(policy_action, np.float32)))
    for name, value in (extras or {}).items():
        step.extras[name].CopyFrom(tensor_to_proto(np.asarray(value)))
    return step


def decode_chunk_steps(chunk: pb.EpisodeChunk, embodiment: pb.Embodiment) -> dict[str, np.ndarray]:
    """Validates a chunk against the robot's embodiment and stacks its steps into arrays.

    Returns arrays keyed "image/<camera>", "state", "action", "policy_action", "source",
    "reward", "done", "step_index", "timestamp" and "extra/<name>", each with a leading step axis.
    """
    if not chunk.steps:
        raise WireError("chunk has no steps")
    if chunk.kind not in PROTO_TO_KIND:
        raise WireError(f"chunk kind {chunk.kind} is not one of {sorted(KIND_TO_PROTO)}")
    if chunk.episode_end:  # (FLOAT's threshold may be infinite: "never fire")
        _finite(np.float32(chunk.outcome.total_reward), f"episode {chunk.episode_id} outcome total_reward")
        if np.isnan(chunk.outcome.float_summary.final_index):
            raise WireError(f"episode {chunk.episode_id} outcome: FLOAT final_index is NaN; refused, nothing stored")
    cams = {c.name: (c.height, c.width, c.channels) for c in embodiment.cameras}
    columns: dict[str, list[np.ndarray]] = {f"image/{name}": [] for name in cams}
    for key in ("state", "action", "policy_action", "source", "reward", "done", "step_index", "timestamp"):
        columns[key] = []
    extra_names = set(chunk.steps[0].extras.keys())
    for name in extra_names:
        columns[f"extra/{name}"] = []

    first = chunk.steps[0].index
    for offset, step in enumerate(chunk.steps):
        where = f"episode {chunk.episode_id} chunk {chunk.sequence} step {step.index}"
        if step.index != first + offset:
            raise WireError(f"{where}: step indices must be contiguous (expected {first + offset})")
        seen = set()
        for image in step.images:
            if image.camera not in cams:
                raise WireError(f"{where}: camera {image.camera!r} not in the registered embodiment {sorted(cams)}")
            pixels = image_from_proto(image)
            if pixels.shape != cams[image.camera]:
                raise WireError(f"{where}: camera {image.camera} shape {pixels.shape} != registered {cams[image.camera]}")
            columns[f"image/{image.camera}"].append(pixels)
            seen.add(image.camera)
        if seen != set(cams):
            raise WireError(f"{where}: missing cameras {sorted(set(cams) - seen)}")
        state = tensor_from_proto(step.state, f"{where} state")
        action = tensor_from_proto(step.action, f"{where} action")
        _finite(_as_stored(state), f"{where} state")  # as stored: 1e39 in float64 is inf in float32
        _finite(_as_stored(action), f"{where} action")
        _finite(np.float32(step.reward), f"{where} reward")
        _finite(np.float64(step.timestamp), f"{where} timestamp")
        if state.shape != (embodiment.state_dim,):
            raise WireError(f"{where}: state shape {state.shape} != ({embodiment.state_dim},)")
        if action.shape != (embodiment.action_dim,):
            raise WireError(f"{where}: action shape {action.shape} != ({embodiment.action_dim},)")
        if step.HasField("policy_action"):
            proposed = tensor_from_proto(step.policy_action, f"{where} policy_action")
            if proposed.shape != (embodiment.action_dim,):
                raise WireError(f"{where}: policy_action shape {proposed.shape} != ({embodiment.action_dim},)")
            _finite(_as_stored(proposed), f"{where} policy_action")
        else:
            proposed = np.full(embodiment.action_dim, np.nan, np.float32)
        if step.source not in PROTO_TO_SOURCE:
            raise WireError(f"{where}: action source must be set")
        if set(step.extras.keys()) != extra_names:
            raise WireError(f"{where}: every step of a chunk must carry the same extras")
        for name in extra_names:
            value = tensor_from_proto(step.extras[name], f"{where} extra {name}")
            _finite(value, f"{where} extra {name}", nan_allowed=name in NAN_MEANS_NONE)
            columns[f"extra/{name}"].append(value)
        columns["state"].append(state.astype(np.float32))
        columns["action"].append(action.astype(np.float32))
        columns["policy_action"].append(proposed.astype(np.float32))
        columns["source"].append(np.int8(step.source))
        columns["reward"].append(np.float32(step.reward))
        columns["done"].append(np.bool_(step.done))
        columns["step_index"].append(np.int64(step.index))
        columns["timestamp"].append(np.float64(step.timestamp))
    try:
        arrays = {key: np.stack(values) for key, values in columns.items()}
    except ValueError as exc:  # extras whose shapes vary between steps
        raise WireError(f"episode {chunk.episode_id} chunk {chunk.sequence}: {exc}") from exc
    _check_step_indices(chunk, arrays["step_index"])
    return arrays


def _check_step_indices(chunk: pb.EpisodeChunk, index: np.ndarray) -> None:
    """Beyond the steps of a chunk numbered on by one (checked step by step above): indices in
    range, the first chunk from step 0, and the end chunk's last step the outcome's num_steps - 1
    (across chunks, learner/store/base.py checks)."""
    where = f"episode {chunk.episode_id} chunk {chunk.sequence}"
    if not 0 <= index[0] <= index[-1] <= MAX_STEP:
        raise WireError(f"{where}: step indices {index[0]}..{index[-1]} are outside 0..{MAX_STEP}")
    if chunk.sequence == 0 and index[0] != 0:
        raise WireError(f"{where}: the first chunk of an episode starts at step 0, not {index[0]}")
    if chunk.episode_end and index[-1] + 1 != chunk.outcome.num_steps:
        raise WireError(f"{where}: the outcome says {chunk.outcome.num_steps} steps, but the last step is "
                        f"{index[-1]} (num_steps must be the steps sent)")
