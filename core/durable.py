"""Writing files so that a crash leaves either the old file or the whole new one.

The pattern everywhere: write to a temporary name that no other writer uses, fsync it, rename it
over the target, fsync the directory. Replicas and trainer ranks that share a volume may write
the same file at once, so the temporary name carries the process and the thread.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Makes a rename or a new file inside `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def private_tmp(path: Path) -> Path:
    """A temporary name beside `path` that no other writer uses: replicas (and trainer ranks)
    sharing a volume may write the same file at once, and each must rename its own whole copy."""
    return path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")


def atomic_write_text(path: Path, text: str, durable: bool = False) -> None:
    """Replaces `path` with `text` whole or not at all; `durable` also survives a power cut."""
    path = Path(path)
    tmp = private_tmp(path)
    tmp.write_text(text)
    if durable:
        fsync_file(tmp)
    os.replace(tmp, path)
    if durable:
        fsync_dir(path.parent)


def safe_name(name: str) -> str:
    """Robot and episode ids become path components: keep them to a harmless alphabet."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)[:128] or "_"
