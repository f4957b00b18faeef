"""Task "push_cube": push the red cube onto the green target disc."""

from __future__ import annotations

from typing import Any

import numpy as np

from sim.experts import PushCubeExpert
from sim.objects import FreeBody, Marker
from sim.tabletop_env import TabletopArmEnv

CUBE_HALF_SIZE = 0.0225  # 4.5 cm cube
CUBE_MASS = 0.1
CUBE_RGBA = "0.9 0.1 0.1 1"
# Low friction so the cube slides under a push instead of tipping.  MuJoCo
# uses the larger friction of two touching geoms, so against the table this
# is what applies, while the grippier fingers can drag the cube by pressing
# on its top.
CUBE_FRICTION = "0.4 0.005 0.0001"

# Success when the cube centre is inside the drawn disc.
TARGET_RADIUS = 0.035
TARGET_RGBA = "0.1 0.75 0.2 1"
TARGET_HALF_THICKNESS = 0.0005

# Cube and target are sampled in this square (metres, centred on the table).
# It is smaller than the arm workspace so the arm can always get behind the
# cube, whichever side the target is on.
SPAWN_HALF_EXTENT = 0.15
MIN_CUBE_TARGET_DISTANCE = 0.12


class PushCubeEnv(TabletopArmEnv):
    task_name = "push_cube"
    instruction = "push the red cube onto the green target"
    default_max_steps = 80

    cube_half_size = CUBE_HALF_SIZE
    target_radius = TARGET_RADIUS

    def __init__(self, **kwargs):
        """Keyword arguments as for `TabletopArmEnv` (image_size, max_steps, variant, render_mode)."""
        super().__init__(**kwargs)
        self._cube = FreeBody(self.model, self.data, "cube", CUBE_HALF_SIZE)
        self._target = Marker(self.model, self.data, "target")

    def _objects_xml(self) -> str:
        h = CUBE_HALF_SIZE
        return f"""
    <body name="cube" pos="0 0 {h}">
      <freejoint name="cube"/>
      <geom name="cube" type="box" size="{h} {h} {h}" mass="{CUBE_MASS}"
            rgba="{CUBE_RGBA}" friction="{CUBE_FRICTION}"/>
    </body>
    <!-- Mocap body so the target can be moved per episode; the disc is
         purely visual (no collisions). -->
    <body name="target" mocap="true" pos="0 0 0">
      <geom name="target" type="cylinder" pos="0 0 {TARGET_HALF_THICKNESS + 0.0005}"
            size="{TARGET_RADIUS} {TARGET_HALF_THICKNESS}" rgba="{TARGET_RGBA}"
            contype="0" conaffinity="0"/>
    </body>"""

    def _randomise_objects(self) -> None:
        rng = self.np_random
        cube_xy = rng.uniform(-SPAWN_HALF_EXTENT, SPAWN_HALF_EXTENT, size=2)
        # Rejection sampling for the target; the acceptance area is large so
        # this terminates after a couple of draws.
        while True:
            target_xy = rng.uniform(-SPAWN_HALF_EXTENT, SPAWN_HALF_EXTENT, size=2)
            if np.linalg.norm(target_xy - cube_xy) >= MIN_CUBE_TARGET_DISTANCE:
                break
        self.place_cube(cube_xy, yaw=rng.uniform(-np.pi, np.pi))
        self.place_target(target_xy)

    # ---- scene editing (tests, curricula, replaying interventions) -----------

    def place_cube(self, xy, yaw: float = 0.0) -> None:
        """Put the cube at rest on the table at `xy` (metres) turned by `yaw` (radians).

        Keep it clear of the rim (|x|, |y| <= 0.25 at yaw 0): an overlapping
        cube is shot out of the rim by the contact solver.
        """
        self._cube.place(xy, yaw)

    def place_target(self, xy) -> None:
        """Move the target disc centre to `xy` (metres)."""
        self._target.place([*xy, 0.0])

    # ---- privileged state --------------------------------------------------

    def cube_position(self) -> np.ndarray:
        return self._cube.position()

    def cube_quaternion(self) -> np.ndarray:
        """Cube orientation as a unit quaternion (w, x, y, z)."""
        return self._cube.quaternion()

    def target_position(self) -> np.ndarray:
        """Target disc centre (x, y)."""
        return self._target.position()[:2]

    def cube_to_target(self) -> float:
        return float(np.linalg.norm(self.cube_position()[:2] - self.target_position()))

    def task_distance(self) -> float:
        """Metres from the cube centre to the target centre (= cube_to_target())."""
        return self.cube_to_target()

    # ---- task definition ---------------------------------------------------------

    def _is_success(self) -> bool:
        return self.cube_to_target() <= TARGET_RADIUS

    def _task_info(self) -> dict[str, Any]:
        return {"cube_to_target": self.cube_to_target()}

    def expert(self, noise: float = 0.0, seed: int | None = None) -> PushCubeExpert:
        return PushCubeExpert(noise=noise, seed=seed)
