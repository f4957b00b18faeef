"""Robot and episode ids: the one rule both the server and `fleet token create` apply.

Ids appear in paths, file names, gRPC trailers and the dashboard's URLs, so they keep to a small
alphabet; a robot id is also not a word the dashboard uses for the whole fleet.
"""

from __future__ import annotations

import re

from core.durable import safe_name

ROBOT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
RESERVED_ROBOT_IDS = frozenset({"all", "fleet"})
# Episode ids are the robot's choice (a UUID's hex by default): printable, path- and header-safe.
EPISODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def robot_id_problem(robot_id: str) -> str | None:
    """Why `robot_id` is not a valid robot id, or None when it is."""
    if ROBOT_ID.fullmatch(robot_id) and robot_id not in RESERVED_ROBOT_IDS:
        return None
    return (f"robot_id {robot_id!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or "
            f"digit, and not one of {sorted(RESERVED_ROBOT_IDS)}")


# An episode id names files (core/durable.safe_name writes ':' as 3 characters); with a robot id
# and a suffix the name must stay under the 255 a file system allows.
MAX_ENCODED_EPISODE_ID = 128


def episode_id_problem(episode_id: str) -> str | None:
    """Why `episode_id` is not a valid episode id, or None when it is."""
    if EPISODE_ID.fullmatch(episode_id) and len(safe_name(episode_id)) <= MAX_ENCODED_EPISODE_ID:
        return None
    return (f"episode_id {episode_id!r} must be 1-128 letters, digits, '.', '_', ':' or '-', starting with a "
            f"letter or digit, and at most {MAX_ENCODED_EPISODE_ID} characters once ':' is written as %3a")
