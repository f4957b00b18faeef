"""The one checkpoint format: a directory per version.

    <dir>/policy.safetensors     weights (incl. normalisation buffers); no pickle anywhere
    <dir>/meta.json              version, policy config, normalisation stats, sha256 of every file
    <dir>/artifacts/<name>.safetensors   named extras shipped with the version (e.g. a FLOAT bank)

`load_checkpoint` refuses a directory whose files do not match the hashes in meta.json, and
both ends refuse a tensor holding NaN or an infinity: a hash proves a file intact, not sound.
Writers create the directory under a temporary name and rename it, so a reader never sees a
half-written version.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file as load_numpy, save_file as save_numpy
from safetensors.torch import load_file as load_torch, save_file as save_torch

from core.durable import fsync_dir, fsync_file
from core.registry import ConfigError
from policy.device import resolve_device
from policy.normalize import Normalizer
from policy.registry import POLICIES
from policy.vla import VLAPolicy

WEIGHTS_FILE = "policy.safetensors"
META_FILE = "meta.json"
FORMAT = "fleetlearn-checkpoint/1"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt, or does not match its hashes."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def nonfinite_tensors(tensors: dict) -> list[str]:
    """Names of the floating-point tensors (torch or numpy) that hold a NaN or an infinity."""
    bad = []
    for name, value in tensors.items():
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                bad.append(name)
        elif np.asarray(value).dtype.kind == "f" and not np.isfinite(value).all():
            bad.append(name)
    return bad


def _refuse_nonfinite(tensors: dict, where: str) -> None:
    bad = nonfinite_tensors(tensors)
    if bad:
        raise CheckpointError(f"{where}: non-finite values in {len(bad)} tensor(s) ({', '.join(bad[:3])}"
                              f"{', ...' if len(bad) > 3 else ''}); such weights never reach a robot")


@dataclass
class Checkpoint:
    version: int
    policy: VLAPolicy
    meta: dict
    artifacts: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


def save_checkpoint(directory: Path, policy: VLAPolicy, version: int, info: dict | None = None,
                    artifacts: dict[str, dict[str, np.ndarray]] | None = None) -> Path:
    """Writes version `version` into `directory` atomically and returns it."""
    directory = Path(directory)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in policy.state_dict().items()}  # device-free
    _refuse_nonfinite(state, f"version {version}")
    for name, tensors in (artifacts or {}).items():
        _refuse_nonfinite(tensors, f"version {version} artifact {name}")
    staging = directory.with_name(directory.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "artifacts").mkdir(parents=True)
    save_torch(state, str(staging / WEIGHTS_FILE), metadata={"format": FORMAT, "version": str(version)})
    files = {WEIGHTS_FILE: sha256_file(staging / WEIGHTS_FILE)}
    for name, tensors in (artifacts or {}).items():
        rel = f"artifacts/{name}.safetensors"
        save_numpy({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(staging / rel))
        files[rel] = sha256_file(staging / rel)
    meta = {
        "format": FORMAT,
        "version": version,
        "created_at": time.time(),
        "policy": type(policy).family,
        "config": policy.config.to_dict(),
        "normalization": {
            "state": {"centre": policy.state_norm.centre.cpu().tolist(), "half_range": policy.state_norm.half_range.cpu().tolist()},
            "action": {"centre": policy.action_norm.centre.cpu().tolist(), "half_range": policy.action_norm.half_range.cpu().tolist()},
        },
        "files": files,
        "info": info or {},
    }
    (staging / META_FILE).write_text(json.dumps(meta, indent=2))
    for path in staging.rglob("*"):
        if path.is_file():
            fsync_file(path)
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(staging, directory)
    fsync_dir(directory.parent)
    return directory


def verify_checkpoint(directory: Path) -> dict:
    """The metadata of a checkpoint whose every file is present and matches its hash; raises
    CheckpointError for anything else (no or truncated meta.json, a missing or altered file)."""
    directory = Path(directory)
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        raise CheckpointError(f"{directory}: no {META_FILE}; not a fleetlearn checkpoint")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{meta_path}: unreadable metadata ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("files"), dict):
        raise CheckpointError(f"{meta_path}: not {FORMAT} metadata")
    for rel, expected in meta["files"].items():
        path = directory / rel
        if not path.is_file():
            raise CheckpointError(f"{directory}: missing file {rel}")
        actual = sha256_file(path)
        if actual != expected:
            raise CheckpointError(f"{path}: sha256 {actual[:12]}... does not match metadata {expected[:12]}...; "
                                  "the file is corrupt or was modified")
    return meta


def load_checkpoint(directory: Path, device: torch.device | str | None = None) -> Checkpoint:
    """A verified checkpoint's policy, on `device` (a torch device or a `--device` value; None: the CPU)."""
    directory = Path(directory)
    meta = verify_checkpoint(directory)
    meta_path = directory / META_FILE
    try:
        family = POLICIES.get(meta.get("policy", VLAPolicy.family))  # checkpoints before families were VLAs
    except ConfigError as exc:
        raise CheckpointError(f"{meta_path}: {exc}") from exc
    try:
        norm = meta["normalization"]
        policy = family.factory(family.config.from_dict(meta["config"]), state_norm=_normalizer(norm["state"]),
                                action_norm=_normalizer(norm["action"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{meta_path}: unusable policy settings ({exc!r})") from exc
    try:
        weights = load_torch(str(directory / WEIGHTS_FILE))
        policy.load_state_dict(weights)
    except Exception as exc:  # safetensors header errors, missing keys, shape mismatches
        raise CheckpointError(f"{directory / WEIGHTS_FILE}: cannot load weights ({exc})") from exc
    # A matching hash says the file is the one written, not that it is sound: refuse NaN weights.
    _refuse_nonfinite(weights, str(directory / WEIGHTS_FILE))
    policy.eval()
    if device is not None:
        policy.to(resolve_device(device))
    artifacts = {
        rel[len("artifacts/"):-len(".safetensors")]: load_numpy(str(directory / rel))
        for rel in meta["files"] if rel.startswith("artifacts/")
    }
    for name, tensors in artifacts.items():
        _refuse_nonfinite(tensors, f"{directory} artifact {name}")
    return Checkpoint(version=int(meta["version"]), policy=policy, meta=meta, artifacts=artifacts)


def _normalizer(stats: dict) -> Normalizer:
    centre = np.asarray(stats["centre"], np.float32)
    half = np.asarray(stats["half_range"], np.float32)
    return Normalizer(centre - half, centre + half)
