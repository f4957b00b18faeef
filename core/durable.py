"""Writing files so that a crash leaves either the old file or the whole new one.

The pattern everywhere: write to a temporary name that no other writer uses, fsync it, rename it
over the target, fsync the directory. Replicas and trainer ranks that share a volume may write
the same file at once, so the temporary name carries the process and the thread.
"""

from __future__ import annotations

import os
import string
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


_LITERAL = frozenset(string.ascii_letters + string.digits + "-_.")


def safe_name(name: str) -> str:
    """A robot or episode id as one path component, by an injective encoding: ASCII letters,
    digits, '-', '_' and '.' stay (a valid id is its own name), every other character and a
    leading '.' become %xx per UTF-8 byte. No literal '%' remains, so two ids never share a file,
    and no name is '.', '..' or hidden. A '+' never appears either: it can join two names."""
    if not name:
        raise ValueError("an empty id cannot name a file")
    encoded = "".join(ch if ch in _LITERAL and (i or ch != ".") else "".join(f"%{b:02x}" for b in ch.encode())
                      for i, ch in enumerate(name))
    if len(encoded) > 255:
        raise ValueError(f"id {name[:40]!r}... is too long to name a file ({len(encoded)} characters encoded)")
    return encoded
