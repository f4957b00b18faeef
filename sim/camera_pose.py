"""Orientation of a camera given where it is and what it looks at."""

from __future__ import annotations

import numpy as np


def camera_xyaxes(position, lookat, image_up_hint=(0.0, 0.0, 1.0)) -> str:
    """MJCF `xyaxes` string for a camera at `position` looking at `lookat`.

    MuJoCo cameras look along their local -z with local +y as image up;
    `image_up_hint` is the frame direction that should appear "up" in the
    image (it must not be parallel to the viewing direction).
    """
    position, lookat, hint = (np.asarray(v, dtype=np.float64) for v in (position, lookat, image_up_hint))
    forward = lookat - position
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, hint)
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    return " ".join(f"{v:.6f}" for v in (*right, *up))
