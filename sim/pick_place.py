"""Task "pick_place": pick up the yellow block and put it in the blue square.

A 4.5 cm yellow block and a blue square zone (10 cm wide, drawn on the
table, visual only) are placed at random in [-0.15, 0.15]^2 m, at least
MIN_BLOCK_ZONE_DISTANCE apart.  The gripper has no wrist rotation and its
fingers close along world y, so the block's yaw is limited to +-30 degrees
(its width across the fingers stays below 6.2 cm; they open to 9 cm).
Success when the block rests on the table (its lowest corner within
RESTING_TOLERANCE of the table top) with its centre inside the square and
no finger touches it: it has been set down and let go.
"""

from __future__ import annotations

from typing import Any

import mujoco
import numpy as np

from sim.experts import PickPlaceExpert
from sim.objects import FreeBody, Marker
from sim.tabletop_env import TabletopArmEnv

BLOCK_HALF_SIZE = 0.0225  # 4.5 cm cube
BLOCK_MASS = 0.1
BLOCK_RGBA = "0.95 0.8 0.1 1"
# Same as the push_cube cube: slides on the table, while the grippier
# fingers (MuJoCo uses the larger friction of two geoms) hold it firmly.
BLOCK_FRICTION = "0.4 0.005 0.0001"
BLOCK_YAW_RANGE = np.pi / 6.0

ZONE_HALF_SIZE = 0.05
ZONE_RGBA = "0.15 0.3 0.9 1"
ZONE_HALF_THICKNESS = 0.0005

# Block and zone centres are sampled in this square (metres); far enough
# apart that the block never starts in or touching the zone.
SPAWN_HALF_EXTENT = 0.15
MIN_BLOCK_ZONE_DISTANCE = 0.14

# The block rests on the table when its lowest corner is this close to it.
RESTING_TOLERANCE = 0.005


class PickPlaceEnv(TabletopArmEnv):
    task_name = "pick_place"
    instruction = "pick up the yellow block and put it in the blue square"
    default_max_steps = 100

    block_half_size = BLOCK_HALF_SIZE
    zone_half_size = ZONE_HALF_SIZE

    def __init__(self, **kwargs):
        """Keyword arguments as for `TabletopArmEnv` (image_size, max_steps, variant, render_mode)."""
        super().__init__(**kwargs)
        self._block = FreeBody(self.model, self.data, "block", BLOCK_HALF_SIZE)
        self._block_geom = self._element_id(mujoco.mjtObj.mjOBJ_GEOM, "block")
        self._zone = Marker(self.model, self.data, "zone")
        self._finger_bodies = [int(self.model.jnt_bodyid[self._joint_id(name)]) for name in self.arm.finger_joints]

    def _objects_xml(self) -> str:
        h = BLOCK_HALF_SIZE
        return f"""
    <body name="block" pos="0 0 {h}">
      <freejoint name="block"/>
      <geom name="block" type="box" size="{h} {h} {h}" mass="{BLOCK_MASS}"
            rgba="{BLOCK_RGBA}" friction="{BLOCK_FRICTION}"/>
    </body>
    <!-- Mocap body so the zone can be moved per episode; visual only. -->
    <body name="zone" mocap="true" pos="0 0 0">
      <geom name="zone" type="box" pos="0 0 {ZONE_HALF_THICKNESS + 0.0005}"
            size="{ZONE_HALF_SIZE} {ZONE_HALF_SIZE} {ZONE_HALF_THICKNESS}" rgba="{ZONE_RGBA}"
            contype="0" conaffinity="0"/>
    </body>"""

    def _randomise_objects(self) -> None:
        rng = self.np_random
        block_xy = rng.uniform(-SPAWN_HALF_EXTENT, SPAWN_HALF_EXTENT, size=2)
        # Rejection sampling; a couple of draws on average.
        while True:
            zone_xy = rng.uniform(-SPAWN_HALF_EXTENT, SPAWN_HALF_EXTENT, size=2)
            if np.linalg.norm(zone_xy - block_xy) >= MIN_BLOCK_ZONE_DISTANCE:
                break
        self.place_block(block_xy, yaw=rng.uniform(-BLOCK_YAW_RANGE, BLOCK_YAW_RANGE))
        self.place_zone(zone_xy)

    # ---- scene editing -------------------------------------------------------------

    def place_block(self, xy, yaw: float = 0.0, height: float = 0.0) -> None:
        """Put the block at `xy` (metres) turned by `yaw` (radians), its bottom `height` above the table.

        Keep it clear of the rim (|x|, |y| <= 0.25 at yaw 0).
        """
        self._block.place(xy, yaw, height)

    def place_zone(self, xy) -> None:
        """Move the zone centre to `xy` (metres)."""
        self._zone.place([*xy, 0.0])

    # ---- privileged state --------------------------------------------------

    def block_position(self) -> np.ndarray:
        return self._block.position()

    def block_quaternion(self) -> np.ndarray:
        """Block orientation as a unit quaternion (w, x, y, z)."""
        return self._block.quaternion()

    def zone_position(self) -> np.ndarray:
        """Zone centre (x, y)."""
        return self._zone.position()[:2]

    def block_bottom(self) -> float:
        """Height of the block's lowest corner above the table (any orientation)."""
        rotation = self.data.geom_xmat[self._block_geom].reshape(3, 3)
        return float(self.data.geom_xpos[self._block_geom, 2] - BLOCK_HALF_SIZE * np.abs(rotation[2]).sum())

    def block_in_zone(self) -> bool:
        """Whether the block centre is inside the square (seen from above)."""
        offset = np.abs(self.block_position()[:2] - self.zone_position())
        return bool(np.all(offset <= ZONE_HALF_SIZE))

    def block_placed(self) -> bool:
        """Block centre in the zone and the block resting on the table (held or not)."""
        return self.block_in_zone() and self.block_bottom() <= RESTING_TOLERANCE

    def fingers_touching_block(self) -> int:
        """How many fingers (0, 1 or 2) touch the block."""
        touching = set()
        contacts = self.data.contact
        for geom_1, geom_2 in zip(contacts.geom1[: self.data.ncon], contacts.geom2[: self.data.ncon]):
            if self._block_geom in (geom_1, geom_2):
                other = geom_2 if geom_1 == self._block_geom else geom_1
                body = int(self.model.geom_bodyid[other])
                if body in self._finger_bodies:
                    touching.add(body)
        return len(touching)

    def block_grasped(self) -> bool:
        """Both fingers touch the block."""
        return self.fingers_touching_block() == 2

    def task_distance(self) -> float:
        """Grasp centre to block (3D) plus block to zone centre (xy), metres."""
        block = self.block_position()
        to_block = np.linalg.norm(self.ee_position() - block)
        return float(to_block + np.linalg.norm(block[:2] - self.zone_position()))

    # ---- task definition ---------------------------------------------------------

    def _is_success(self) -> bool:
        return self.block_placed() and self.fingers_touching_block() == 0

    def _task_info(self) -> dict[str, Any]:
        return {
            "block_to_zone": float(np.linalg.norm(self.block_position()[:2] - self.zone_position())),
            "block_grasped": self.block_grasped(),
        }

    def expert(self, noise: float = 0.0, seed: int | None = None) -> PickPlaceExpert:
        return PickPlaceExpert(noise=noise, seed=seed)
