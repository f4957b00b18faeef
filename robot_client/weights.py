"""Weight watcher: downloads announced versions in the background and stages them for a swap.

Downloads are chunked and resumable (a `.part` file grows until it matches the announced size)
and every file is checked against its announced sha256 before the checkpoint is loaded (which
checks the weights against meta.json once more). Loading builds a complete standby policy off
the control thread; the loop only swaps a reference, at an episode boundary.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from fleet.v1 import fleet_pb2 as pb
from policy import Checkpoint, load_checkpoint
from policy.checkpoint import sha256_file

log = logging.getLogger("fleetlearn.weights")


class WeightIntegrityError(RuntimeError):
    pass


def download_version(stub, announcement: pb.PolicyAnnouncement, robot_id: str, cache_dir: Path,
                     metadata, timeout_s: float = 120.0) -> Path:
    """Fetches every file of `announcement` into cache_dir/v<version>/, resuming partial files."""
    final = Path(cache_dir) / f"v{announcement.version:06d}"
    if final.exists():
        return final
    staging = Path(cache_dir) / f"v{announcement.version:06d}.download"
    for spec in announcement.files:
        target = staging / spec.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() and sha256_file(target) == spec.sha256:
            continue
        part = target.with_name(target.name + ".part")
        offset = part.stat().st_size if part.exists() else 0
        if offset > spec.size_bytes:
            part.unlink()
            offset = 0
        if offset < spec.size_bytes:
            request = pb.FetchWeightsRequest(robot_id=robot_id, version=announcement.version,
                                             file_name=spec.name, offset=offset)
            with open(part, "ab") as f:
                for chunk in stub.FetchWeights(request, metadata=metadata, timeout=timeout_s):
                    if chunk.offset != f.tell():
                        raise WeightIntegrityError(f"{spec.name}: chunk at offset {chunk.offset}, expected {f.tell()}")
                    f.write(chunk.data)
        digest = sha256_file(part)
        if digest != spec.sha256:
            part.unlink()
            raise WeightIntegrityError(f"version {announcement.version} {spec.name}: sha256 {digest[:12]}... "
                                       f"!= announced {spec.sha256[:12]}...; discarded, will fetch again")
        part.replace(target)
    staging.replace(final)
    return final


class StandbySlot:
    """Hand-over point between the weight thread (producer) and the control loop (consumer)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._checkpoint: Checkpoint | None = None

    def offer(self, checkpoint: Checkpoint) -> None:
        with self._lock:
            self._checkpoint = checkpoint

    def take(self, when: Callable[[int], bool] = lambda version: True) -> Checkpoint | None:
        """The staged checkpoint if there is one and `when(its version)` holds, else None (and it
        stays staged). The test and the take happen under one lock, so the checkpoint tested is
        the one taken even if the weight thread stages a newer one meanwhile."""
        with self._lock:
            if self._checkpoint is None or not when(self._checkpoint.version):
                return None
            checkpoint, self._checkpoint = self._checkpoint, None
            return checkpoint

    def peek_version(self) -> int | None:
        with self._lock:
            return self._checkpoint.version if self._checkpoint else None


def load_downloaded(directory: Path, device: str = "cpu") -> Checkpoint:
    """A downloaded version's checkpoint, its policy on `device` (the robot's `--device`)."""
    try:
        return load_checkpoint(directory, device)
    except Exception:
        shutil.rmtree(directory, ignore_errors=True)  # corrupt on disk: fetch it again next time
        raise
