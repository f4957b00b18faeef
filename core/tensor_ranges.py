"""Where each tensor lies in a safetensors file, and the plan that rebuilds a new file from the
tensors a robot already holds plus byte ranges fetched from the learner (delta weight sync).

A safetensors file is an 8-byte little-endian header size, a JSON header, then the tensors' bytes
at the header's `data_offsets`. Two versions of one policy differ only in the tensors that
trained: a robot that keeps the ranges of the files it holds (a sidecar written at download) can
copy every unchanged tensor and ask the learner for the rest. The assembled file is checked
against the announced whole-file sha256, so a wrong copy can never load.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path

MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit


class TensorRangeError(ValueError):
    pass


@dataclass(frozen=True)
class TensorRange:
    name: str
    offset: int   # absolute, in the file
    length: int
    sha256: str


def header_ranges(head: bytes, file_size: int) -> tuple[int, list[tuple[str, int, int]]]:
    """(header bytes, [(name, absolute offset, length)] in file order) from a file's first bytes
    (at least its header); TensorRangeError if they are not a well-formed safetensors header."""
    if len(head) < 8:
        raise TensorRangeError("shorter than a safetensors header")
    (size,) = struct.unpack("<Q", head[:8])
    if size > MAX_HEADER_BYTES or 8 + size > min(len(head), file_size):
        raise TensorRangeError(f"header of {size} bytes does not fit")
    try:
        header = json.loads(head[8:8 + size])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TensorRangeError(f"header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise TensorRangeError("header is not a JSON object")
    ranges = []
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        offsets = spec.get("data_offsets") if isinstance(spec, dict) else None
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(o, int) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1] or 8 + size + offsets[1] > file_size):
            raise TensorRangeError(f"tensor {name!r}: bad data_offsets {offsets!r}")
        ranges.append((name, 8 + size + offsets[0], offsets[1] - offsets[0]))
    ranges.sort(key=lambda r: r[1])
    return 8 + size, ranges


def file_ranges(path: Path) -> tuple[int, list[TensorRange]]:
    """(header bytes, every tensor's range with its sha256) of a safetensors file on disk."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        (header_size,) = struct.unpack("<Q", f.read(8).ljust(8, b"\0"))
        f.seek(0)
        head = f.read(8 + min(header_size, MAX_HEADER_BYTES))
        header_bytes, spans = header_ranges(head, size)
        out = []
        for name, offset, length in spans:
            f.seek(offset)
            out.append(TensorRange(name, offset, length, hashlib.sha256(f.read(length)).hexdigest()))
    return header_bytes, out


@dataclass(frozen=True)
class Piece:
    """One stretch of the file to assemble: fetched from the learner, or copied from a local file."""
    offset: int
    length: int
    source: tuple[Path, int] | None = None  # (local file, its offset) to copy from; None: fetch
    sha256: str | None = None               # the tensor's, when the piece is one whole tensor

    @property
    def end(self) -> int:
        return self.offset + self.length


def plan(file_size: int, header_bytes: int, wanted: list[TensorRange],
         held: dict[str, tuple[Path, int]]) -> list[Piece]:
    """Pieces covering [0, file_size) in order: each tensor whose sha256 is in `held` (sha256 ->
    (local file, offset)) is copied, everything else (the header, changed tensors, any gap) is
    fetched, with neighbouring fetches merged into one range."""
    pieces: list[Piece] = []

    def fetch(start: int, end: int, sha256: str | None = None):
        if end <= start:
            return
        if pieces and pieces[-1].source is None:
            last = pieces.pop()
            pieces.append(Piece(last.offset, end - last.offset))  # a merged range: checked by the file's hash
        else:
            pieces.append(Piece(start, end - start, None, sha256))

    fetch(0, header_bytes)
    position = header_bytes
    for tensor in sorted(wanted, key=lambda t: t.offset):
        if tensor.offset < position or tensor.offset + tensor.length > file_size:
            raise TensorRangeError(f"tensor {tensor.name!r} at {tensor.offset} overlaps or overruns the file")
        fetch(position, tensor.offset)
        if tensor.length and tensor.sha256 in held:
            pieces.append(Piece(tensor.offset, tensor.length, held[tensor.sha256], tensor.sha256))
        else:
            fetch(tensor.offset, tensor.offset + tensor.length, tensor.sha256)
        position = tensor.offset + tensor.length
    fetch(position, file_size)
    return pieces


def save_sidecar(path: Path, ranges: list[TensorRange]) -> None:
    """Records a downloaded file's tensor ranges beside it (`<file>.ranges.json`)."""
    Path(str(path) + ".ranges.json").write_text(json.dumps(
        {"tensors": [[r.name, r.offset, r.length, r.sha256] for r in ranges]}))


def load_sidecar(path: Path) -> list[TensorRange]:
    """The ranges `save_sidecar` recorded for `path`; [] if there are none or they do not read."""
    try:
        data = json.loads(Path(str(path) + ".ranges.json").read_text())
        return [TensorRange(str(n), int(o), int(l), str(h)) for n, o, l, h in data["tensors"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []
