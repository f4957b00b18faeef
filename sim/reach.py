"""Task "reach": move the gripper to the magenta ball.

A magenta ball (radius 2 cm, visual only: the arm passes through it)
floats on a thin grey post at a random point: x, y in [-0.18, 0.18] m and
height 4-14 cm, at least MIN_START_DISTANCE from the arm's home pose.  The
post shows where the ball is above the table, a depth cue for the front
camera.  Success when the grasp centre (between the finger pads) is within
REACH_TOLERANCE of the ball centre.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sim.experts import ReachExpert
from sim.objects import Marker
from sim.tabletop_env import TabletopArmEnv

MARKER_RADIUS = 0.02
MARKER_RGBA = "0.85 0.15 0.85 1"

# The post hangs from the ball with a fixed length; whatever part of it is
# below the table top is hidden by the (opaque) table, so it always appears
# to stand on the table.  A square post: a box renders much faster than a
# cylinder and looks the same at this width.
POST_HALF_WIDTH = 0.003
POST_RGBA = "0.35 0.35 0.38 1"

# Ball centre sampling (metres).  Heights are grasp-centre heights the arm can
# reach without the fingers touching the table.
SPAWN_HALF_EXTENT = 0.18
MARKER_HEIGHT_RANGE = (0.04, 0.14)
# Resample until the ball is at least this far from the home pose, so an
# episode never starts solved.
MIN_START_DISTANCE = 0.08

# Success when the grasp centre is this close to the ball centre.
REACH_TOLERANCE = 0.025


class ReachEnv(TabletopArmEnv):
    task_name = "reach"
    instruction = "move the gripper to the magenta ball"
    default_max_steps = 40

    reach_tolerance = REACH_TOLERANCE

    def __init__(self, **kwargs):
        """Keyword arguments as for `TabletopArmEnv` (image_size, max_steps, variant, render_mode)."""
        super().__init__(**kwargs)
        self._marker = Marker(self.model, self.data, "marker")

    def _objects_xml(self) -> str:
        post_half_length = MARKER_HEIGHT_RANGE[1] / 2.0
        return f"""
    <!-- Mocap body so the ball can be moved per episode; visual only. -->
    <body name="marker" mocap="true" pos="0 0 {MARKER_HEIGHT_RANGE[1]}">
      <geom name="marker" type="sphere" size="{MARKER_RADIUS}" rgba="{MARKER_RGBA}"
            contype="0" conaffinity="0"/>
      <geom name="marker_post" type="box" pos="0 0 {-post_half_length}"
            size="{POST_HALF_WIDTH} {POST_HALF_WIDTH} {post_half_length}" rgba="{POST_RGBA}"
            contype="0" conaffinity="0"/>
    </body>"""

    def _randomise_objects(self) -> None:
        rng = self.np_random
        low = [-SPAWN_HALF_EXTENT, -SPAWN_HALF_EXTENT, MARKER_HEIGHT_RANGE[0]]
        high = [SPAWN_HALF_EXTENT, SPAWN_HALF_EXTENT, MARKER_HEIGHT_RANGE[1]]
        # Rejection sampling; nearly every draw is accepted.
        while True:
            marker = rng.uniform(low, high)
            if np.linalg.norm(marker - self.ee_position()) >= MIN_START_DISTANCE:
                break
        self.place_marker(marker)

    # ---- scene editing -------------------------------------------------------------

    def place_marker(self, xyz) -> None:
        """Move the ball centre to `xyz` (metres)."""
        self._marker.place(xyz)

    # ---- privileged state --------------------------------------------------

    def marker_position(self) -> np.ndarray:
        return self._marker.position()

    def task_distance(self) -> float:
        """Metres from the grasp centre to the ball centre."""
        return float(np.linalg.norm(self.ee_position() - self.marker_position()))

    # ---- task definition ---------------------------------------------------------

    def _is_success(self) -> bool:
        return self.task_distance() <= REACH_TOLERANCE

    def _task_info(self) -> dict[str, Any]:
        return {"distance_to_marker": self.task_distance()}

    def expert(self, noise: float = 0.0, seed: int | None = None) -> ReachExpert:
        return ReachExpert(noise=noise, seed=seed)
