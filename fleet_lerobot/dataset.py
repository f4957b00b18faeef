"""The episode store as a LeRobotDataset (v3), and a LeRobotDataset as demonstrations.

Export (`fleet export --format lerobot --out DIR [--episodes FILTER]`): one LeRobot episode per
stored episode, every frame with

    observation.state, action                    float32 vectors (the store's, exactly)
    observation.images.<camera>                  video (LeRobot encodes it; lossy)
    next.reward (float32), next.done (bool)
    intervention (bool)                          a person drove this step
    action_source (int64)                        0 autonomous, 1 intervention, 2 demonstration
    policy_version (int64), robot_index (int64)  robot_index points into meta/fleet.json's robots
    float_index (float32)                        FLOAT's index at the step (NaN where none ran)

and the episode's instruction as its task. meta/fleet.json keeps what LeRobot's schema has no
place for: robot ids, episode ids, kinds, seeds and outcomes, in episode order.

Import (`fleet import --lerobot DIR --data LEARNER_DATA`): every episode of a local LeRobotDataset
becomes a demonstration in the learner's store (written through the same checks as a robot's
stream), under a robot id of its own ("lerobot-import" unless told), so the next version trains
on it.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import uuid
from pathlib import Path

import numpy as np

from fleet.v1 import fleet_pb2 as pb
from fleet_lerobot.shim import LeRobotDataset, video_quality
from core import wire

log = logging.getLogger("fleetlearn.lerobot")

SOURCES = ("autonomous", "intervention", "offline_demo")  # action_source values 0, 1, 2
FILTER_KEYS = {"kind": str, "task": str, "robot": str, "success": int, "version": int}


def parse_filter(text: str | None) -> dict:
    """`kind=demonstration,task=reach,robot=sim-1,success=1,version=3` -> {column: value}."""
    out = {}
    for part in filter(None, (text or "").split(",")):
        key, eq, value = part.partition("=")
        key = key.strip()
        if not eq or key not in FILTER_KEYS:
            raise ValueError(f"episode filter {part!r}: use KEY=VALUE with KEY one of {', '.join(FILTER_KEYS)}")
        out[key] = FILTER_KEYS[key](value.strip())
    return out


def _matches(row, flt: dict) -> bool:
    columns = {"kind": "kind", "task": "task", "robot": "robot_id", "success": "success", "version": "policy_version"}
    return all(row[columns[k]] == v for k, v in flt.items())


def export_store(data_dir: Path, out: Path, episode_filter: str | None = None, repo_id: str = "local/fleet",
                 vcodec: str = "h264", crf: int = 18, pix_fmt: str = "yuv444p", progress=print) -> dict:
    """Writes the matching complete episodes of a learner's store as a LeRobotDataset at `out`.

    Videos: H.264 without chroma subsampling at constant rate factor 18. On the fleet's 96 px
    frames LeRobot's default (AV1, 4:2:0, CRF 30) decodes at 32 dB PSNR in the worst frame
    (the wrist camera's close-ups of a coloured object lose their colour edges); AV1 at CRF 10
    still only reaches 35 dB, and H.264 4:2:0 at CRF 18 34.7 dB; H.264 4:4:4 at CRF 18 reaches
    39.6 dB in smaller files."""
    out = Path(out)
    if not (Path(data_dir) / "index.sqlite").is_file():
        raise FileNotFoundError(f"{data_dir} holds no episode store (no index.sqlite)")
    if out.exists():
        raise FileExistsError(f"{out} exists; LeRobot writes a new dataset into a new directory")
    try:
        with video_quality(crf, pix_fmt):
            return _export(Path(data_dir), out, episode_filter, repo_id, vcodec, progress)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # half a dataset is no dataset: a retry starts clean
        raise


def _export(data_dir: Path, out: Path, episode_filter: str | None, repo_id: str, vcodec: str, progress) -> dict:
    from learner.store import StoreReader

    flt = parse_filter(episode_filter)
    reader = StoreReader(data_dir)
    try:
        rows = [row for row in reader.complete_episodes() if _matches(row, flt)]
        if not rows:
            raise ValueError(f"no complete episode in {data_dir} matches {episode_filter!r}")
        embodiments = {rid: reader.robot_embodiment(rid) for rid in {row["robot_id"] for row in rows}}
        first = reader.load_episode(rows[0])
        features, cameras = _features(first.arrays)
        fps = _fps(embodiments)
        dataset = LeRobotDataset.create(repo_id, fps=fps, features=features, root=out, robot_type="fleetlearn",
                                        use_videos=True, vcodec=vcodec)
        robots = sorted(embodiments)
        episodes = []
        started = time.time()
        for n, row in enumerate(rows):
            episode = reader.load_episode(row) if n else first
            a = episode.arrays
            if [k for k in a if k.startswith("image/")] != [f"image/{c}" for c in cameras]:
                raise ValueError(f"episode {row['episode_id']} has cameras {[k for k in a if k.startswith('image/')]}, "
                                 f"the dataset {cameras}: export robots of one embodiment at a time (--episodes robot=...)")
            float_index = a.get("extra/float_index")
            for t in range(episode.num_steps):
                frame = {"observation.state": a["state"][t], "action": a["action"][t],
                         "next.reward": np.array([a["reward"][t]], np.float32),
                         "next.done": np.array([a["done"][t]], bool),
                         "intervention": np.array([a["source"][t] == pb.ACTION_SOURCE_INTERVENTION], bool),
                         "action_source": np.array([SOURCES.index(wire.PROTO_TO_SOURCE[int(a["source"][t])])], np.int64),
                         "policy_version": np.array([row["policy_version"]], np.int64),
                         "robot_index": np.array([robots.index(row["robot_id"])], np.int64),
                         "float_index": np.array([float_index[t] if float_index is not None else np.nan], np.float32),
                         "task": row["instruction"]}
                for cam in cameras:
                    frame[f"observation.images.{cam}"] = a[f"image/{cam}"][t]
                dataset.add_frame(frame)
            dataset.save_episode(parallel_encoding=False)  # in this process: the quality setting holds
            episodes.append({key: row[key] for key in ("robot_id", "episode_id", "task", "instruction", "kind", "seed",
                                                       "policy_version", "success", "termination", "num_steps")})
            if progress and (n + 1) % 10 == 0:
                progress(f"  exported {n + 1}/{len(rows)} episodes ({time.time() - started:.0f} s)")
        dataset.finalize()
    finally:
        reader.close()
    (out / "meta" / "fleet.json").write_text(json.dumps({"robots": robots, "episodes": episodes,
                                                         "action_source": list(SOURCES)}, indent=1))
    return {"episodes": len(episodes), "frames": int(sum(e["num_steps"] for e in episodes)), "cameras": cameras,
            "out": str(out)}


def _features(arrays: dict[str, np.ndarray]) -> tuple[dict, list[str]]:
    cameras = [k.split("/", 1)[1] for k in arrays if k.startswith("image/")]
    state_dim, action_dim = arrays["state"].shape[1], arrays["action"].shape[1]
    features = {
        "observation.state": {"dtype": "float32", "shape": (state_dim,), "names": [f"state_{i}" for i in range(state_dim)]},
        "action": {"dtype": "float32", "shape": (action_dim,), "names": [f"action_{i}" for i in range(action_dim)]},
        "next.reward": {"dtype": "float32", "shape": (1,), "names": None},
        "next.done": {"dtype": "bool", "shape": (1,), "names": None},
        "intervention": {"dtype": "bool", "shape": (1,), "names": None},
        "action_source": {"dtype": "int64", "shape": (1,), "names": None},
        "policy_version": {"dtype": "int64", "shape": (1,), "names": None},
        "robot_index": {"dtype": "int64", "shape": (1,), "names": None},
        "float_index": {"dtype": "float32", "shape": (1,), "names": None},
    }
    for cam in cameras:
        h, w, c = arrays[f"image/{cam}"].shape[1:]
        features[f"observation.images.{cam}"] = {"dtype": "video", "shape": (h, w, c),
                                                 "names": ["height", "width", "channels"]}
    return features, cameras


def _fps(embodiments: dict) -> int:
    rates = {round(e.control_hz) for e in embodiments.values() if e is not None and e.control_hz}
    return rates.pop() if len(rates) == 1 else 10


def load_dataset(root: Path, repo_id: str = "local/fleet"):
    """A local LeRobotDataset, decoded with PyAV (no system FFmpeg libraries needed)."""
    return LeRobotDataset(repo_id, root=Path(root), video_backend="pyav")


def import_dataset(root: Path, data_dir: Path, robot_id: str = "lerobot-import", progress=print) -> dict:
    """Stores every episode of the LeRobotDataset at `root` as a demonstration in `data_dir`."""
    from learner.store import EpisodeStore
    from robot_client.episode import ChunkBuilder

    if not (Path(root) / "meta" / "info.json").is_file():
        raise FileNotFoundError(f"{root} is not a local LeRobotDataset (no meta/info.json); import reads local "
                                "datasets only, never the Hub")
    dataset = load_dataset(root)
    cameras = [k for k in dataset.meta.video_keys + dataset.meta.image_keys if k.startswith("observation.images.")]
    if "observation.state" not in dataset.features or "action" not in dataset.features:
        raise ValueError(f"{root}: a LeRobotDataset needs observation.state and action features to be demonstrations")
    state_dim = dataset.features["observation.state"]["shape"][0]
    action_dim = dataset.features["action"]["shape"][0]
    shapes = {k.removeprefix("observation.images."): tuple(dataset.features[k]["shape"]) for k in cameras}
    embodiment = wire.embodiment_to_proto(f"lerobot/{dataset.meta.robot_type or 'unknown'}", shapes, state_dim,
                                          action_dim, float(dataset.fps))
    store = EpisodeStore(Path(data_dir))
    tasks = sorted(set(dataset.meta.tasks.index))
    store.register_robot(robot_id, embodiment, [{"name": t, "instruction": t} for t in tasks])
    episodes = frames = 0
    try:
        for ep in range(dataset.num_episodes):
            start = int(dataset.meta.episodes[ep]["dataset_from_index"])
            stop = int(dataset.meta.episodes[ep]["dataset_to_index"])
            first = dataset[start]
            task = first["task"]
            header = dict(robot_id=robot_id, episode_id=f"{robot_id}-{uuid.uuid4().hex[:12]}", policy_version=-1,
                          task=task, instruction=task, kind=pb.EPISODE_KIND_DEMONSTRATION, seed=ep)
            builder = ChunkBuilder(header, max_bytes=wire.CHUNK_TARGET_BYTES, max_steps=max(1, round(dataset.fps)))
            chunks = []
            total_reward = 0.0
            for index in range(start, stop):
                item = dataset[index]
                images = {name: _to_uint8(item[f"observation.images.{name}"]) for name in shapes}
                reward = float(item["next.reward"]) if "next.reward" in item else 0.0
                total_reward += reward
                step = wire.step_to_proto(index - start, time.time(), images, item["observation.state"].numpy(),
                                          item["action"].numpy(), None, "offline_demo", reward, index == stop - 1)
                sealed = builder.add(step)
                if sealed is not None:
                    chunks.append(sealed)
            n = stop - start
            chunks.append(builder.seal(pb.EpisodeOutcome(success=True, total_reward=total_reward, num_steps=n,
                                                         termination="imported")))
            for chunk in chunks:
                store.put_chunk_sync(chunk, wire.decode_chunk_steps(chunk, embodiment))
            episodes += 1
            frames += n
            if progress and episodes % 10 == 0:
                progress(f"  imported {episodes}/{dataset.num_episodes} episodes")
    finally:
        store.close()
    return {"episodes": episodes, "frames": frames, "robot_id": robot_id}


def _to_uint8(image) -> np.ndarray:
    """LeRobot gives frames as float CHW in [0, 1]; the fleet stores HWC uint8."""
    array = image.numpy() if hasattr(image, "numpy") else np.asarray(image)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = array.transpose(1, 2, 0)
    if array.dtype != np.uint8:
        array = np.clip(np.round(array * 255.0), 0, 255).astype(np.uint8)
    return array
