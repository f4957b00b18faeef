"""Files the learner cannot use: moved aside, logged, counted, never read again.

A truncated chunk, a checkpoint whose metadata or weights do not check out, a version folder
cut short by a crash: whichever process finds it (the learner at start, its trainer while
training) moves it to DATA/quarantine/<kind>/ under its path relative to DATA, and appends one
line to DATA/quarantine/quarantine.jsonl (when, kind, path, reason). The dashboard counts the
lines. The learner then goes on without the file: the last good version, the other episodes.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from policy.checkpoint import CheckpointError, verify_checkpoint

log = logging.getLogger("fleetlearn.quarantine")

LOG_NAME = "quarantine.jsonl"


class Quarantine:
    def __init__(self, data_dir: Path):
        self.data_dir = Path(data_dir)
        self.root = self.data_dir / "quarantine"

    def put(self, path: Path, kind: str, reason: str) -> Path | None:
        """Moves `path` (a file or folder under DATA) aside and records why; returns where it went
        (None when it was gone already: another process moved it first)."""
        path = Path(path)
        rel = path.resolve().relative_to(self.data_dir.resolve())
        target = self.root / kind / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            target = target.with_name(f"{target.name}.{time.time_ns()}")
        try:
            os.replace(path, target)
        except FileNotFoundError:
            return None
        with open(self.root / LOG_NAME, "a") as out:  # one short append: whole lines, whichever process writes
            out.write(json.dumps({"at": time.time(), "kind": kind, "path": str(rel), "reason": reason}) + "\n")
        log.error("quarantined %s %s: %s (moved to %s)", kind, rel, reason, target)
        return target

    def entries(self) -> list[dict]:
        try:
            lines = (self.root / LOG_NAME).read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a crash
                continue
        return out

    def count(self) -> int:
        return len(self.entries())


def newest_sound(registry, quarantine: Quarantine | None, load, before: int | None = None):
    """What `load` (policy/checkpoint.py's load_checkpoint or verify_checkpoint) makes of the
    newest version below `before` whose checkpoint it accepts; one it refuses on the way is
    quarantined when its files fail their hashes. None when no version is sound."""
    for version in sorted(registry.all(), reverse=True):
        directory = registry.checkpoint_dir(version)
        if (before is not None and version >= before) or not directory.exists():  # (gone: quarantined before)
            continue
        try:
            return load(directory)
        except CheckpointError as exc:
            try:
                verify_checkpoint(directory)
            except CheckpointError:  # its files are damaged: set aside
                if quarantine is not None:
                    quarantine.put(directory, "checkpoints", str(exc))
            else:  # intact files this code cannot use (another policy family, a non-finite weight): left in place
                log.error("version %d is not usable (%s); skipped", version, exc)
    return None
