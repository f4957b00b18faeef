"""Weight watcher: downloads announced versions in the background and stages them for a swap.

Downloads are chunked and resumable (a `.part` file grows until it matches the announced size)
and every file is checked against its announced sha256 before the checkpoint is loaded (which
checks the weights against meta.json once more). Of a weights file only the tensors that changed
since a version the robot holds come over the wire (core/tensor_ranges.py). Loading builds a
complete standby policy off the control thread; the loop only swaps a reference, at an episode
boundary.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.tensor_ranges import Piece, TensorRange, TensorRangeError, load_sidecar, plan, save_sidecar
from fleet.v1 import fleet_pb2 as pb
from policy import Checkpoint, load_checkpoint
from policy.checkpoint import sha256_file

log = logging.getLogger("fleetlearn.weights")


class WeightIntegrityError(RuntimeError):
    pass


@dataclass
class Download:
    directory: Path       # the version's complete, verified files
    fetched_bytes: int    # what came over the wire
    file_bytes: int       # what the version's files hold


def download_version(stub, announcement: pb.PolicyAnnouncement, robot_id: str, cache_dir: Path,
                     metadata, timeout_s: float = 120.0) -> Download:
    """Fetches every file of `announcement` into cache_dir/v<version>/, resuming partial files.
    Of a safetensors file only the tensors that no version in cache_dir holds are fetched; the
    others are copied from disk (delta weight sync), and the whole file is checked all the same."""
    final = Path(cache_dir) / f"v{announcement.version:06d}"
    total = sum(spec.size_bytes for spec in announcement.files)
    if final.exists():
        return Download(final, 0, total)
    staging = Path(cache_dir) / f"v{announcement.version:06d}.download"
    held = held_tensors(Path(cache_dir))
    fetched = 0
    for spec in announcement.files:
        target = staging / spec.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() and sha256_file(target) == spec.sha256:
            continue
        part = target.with_name(target.name + ".part")
        if part.exists() and part.stat().st_size > spec.size_bytes:
            part.unlink()
        ranges = [TensorRange(t.name, t.offset, t.length, t.sha256) for t in spec.tensors]
        try:
            pieces = plan(spec.size_bytes, spec.header_bytes, ranges, held) if ranges else [Piece(0, spec.size_bytes)]
        except TensorRangeError as exc:
            raise WeightIntegrityError(f"version {announcement.version} {spec.name}: {exc}") from None
        fetch = RangeFetcher(stub, robot_id, announcement.version, spec.name, metadata, timeout_s)
        assemble(part, pieces, fetch)
        fetched += fetch.bytes
        digest = sha256_file(part)
        if digest != spec.sha256:
            part.unlink()
            raise WeightIntegrityError(f"version {announcement.version} {spec.name}: sha256 {digest[:12]}... "
                                       f"!= announced {spec.sha256[:12]}...; discarded, will fetch again")
        part.replace(target)
        if ranges:
            save_sidecar(target, ranges)
    staging.replace(final)
    return Download(final, fetched, total)


def held_tensors(cache_dir: Path) -> dict[str, tuple[Path, int]]:
    """sha256 -> (file, offset) of every tensor in the complete versions under cache_dir, the
    newest version's copy first."""
    held: dict[str, tuple[Path, int]] = {}
    for version in sorted(cache_dir.glob("v[0-9]*"), reverse=True):
        if not version.is_dir() or version.suffix:
            continue
        for sidecar in version.rglob("*.ranges.json"):
            path = sidecar.with_name(sidecar.name.removesuffix(".ranges.json"))
            for tensor in load_sidecar(path):
                held.setdefault(tensor.sha256, (path, tensor.offset))
    return held


class RangeFetcher:
    """Byte ranges of one announced file over FetchWeights; counts what it received."""

    def __init__(self, stub, robot_id: str, version: int, name: str, metadata, timeout_s: float):
        self.stub, self.robot_id, self.version, self.name = stub, robot_id, version, name
        self.metadata, self.timeout_s = metadata, timeout_s
        self.bytes = 0

    def __call__(self, offset: int, length: int):
        request = pb.FetchWeightsRequest(robot_id=self.robot_id, version=self.version, file_name=self.name,
                                         offset=offset, length=length)
        position = offset
        for chunk in self.stub.FetchWeights(request, metadata=self.metadata, timeout=self.timeout_s):
            if chunk.offset != position or position + len(chunk.data) > offset + length:
                raise WeightIntegrityError(f"{self.name}: chunk at {chunk.offset} ({len(chunk.data)} bytes), "
                                           f"expected {position} within {offset}+{length}")
            position += len(chunk.data)
            self.bytes += len(chunk.data)
            yield chunk.data
        if position != offset + length:
            raise WeightIntegrityError(f"{self.name}: range {offset}+{length} ended at {position}")


def assemble(part: Path, pieces: list[Piece], fetch: RangeFetcher) -> None:
    """Appends `pieces` to `part` from where it ends (a resumed download sends nothing twice):
    copies are checked against their tensor's sha256 and fetched instead if they differ."""
    done = part.stat().st_size if part.exists() else 0
    with open(part, "ab") as out:
        for piece in pieces:
            if piece.end <= done:
                continue
            start = max(piece.offset, done)
            if piece.source is not None:
                data = _read(piece.source[0], piece.source[1] + start - piece.offset, piece.end - start)
                whole = start == piece.offset
                if data is not None and (not whole or hashlib.sha256(data).hexdigest() == piece.sha256):
                    out.write(data)
                    continue
                log.warning("%s: the held copy of a tensor at %d does not match; fetching it", part.name, piece.offset)
            digest = hashlib.sha256()
            for data in fetch(start, piece.end - start):
                out.write(data)
                digest.update(data)
            if piece.sha256 and start == piece.offset and digest.hexdigest() != piece.sha256:
                out.close()
                part.unlink()
                raise WeightIntegrityError(f"{part.name}: tensor at {piece.offset} does not match its sha256; "
                                           "discarded, will fetch again")


def _read(path: Path, offset: int, length: int) -> bytes | None:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(length)
        return data if len(data) == length else None
    except OSError:
        return None


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
