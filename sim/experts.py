"""Scripted experts: privileged-state controllers used as simulated operators.

An expert must produce a sensible action from *any* state (it takes over a
robot mid-episode, possibly after a policy made a mess), so every expert here
is stateless: `act(env)` looks only at the current simulator state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Push geometry, in metres.
# Extra gap between pusher and cube corner when parking behind the cube.
STANDOFF_MARGIN = 0.008
# The pusher is safely "behind" the cube (free to move low towards the park
# point) if its footprint overlaps the cube's farthest-back corner by at most
# this much along the push line.
BEHIND_TOLERANCE = 0.006
# Push while the pusher is low, within this distance of the push line, and
# between the cube's back face and a little beyond the park point.  (While
# pushing, a rotated cube's face can be closer than its corner, so this zone
# is deliberately separate from the conservative "behind" test.)  The forward
# push slows to zero as the lateral error approaches the tolerance, so the
# pusher re-centres on the face instead of shoving the cube off the line.
PUSH_LATERAL_TOLERANCE = 0.02
PUSH_HEIGHT_TOLERANCE = 0.01
PUSH_ZONE_MIN_DEPTH = 0.005
PUSH_ZONE_BEYOND_PARK = 0.01
# Forward push per control step; slower than free motion so the cube is
# pushed quasi-statically and does not slide past the target.
PUSH_STEP = 0.02
# Fingertip clearance above the cube top when travelling over it.
TRAVEL_CLEARANCE = 0.025
TRAVEL_HEIGHT_TOLERANCE = 0.01

GRIPPER_OPEN = -1.0
GRIPPER_CLOSED = 1.0


def _planar_frame(direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit vector along `direction` and its left normal (2D)."""
    norm = np.linalg.norm(direction)
    along = direction / norm if norm > 1e-9 else np.array([1.0, 0.0])
    return along, np.array([-along[1], along[0]])


def _cube_half_extent_along(direction: np.ndarray, quaternion: np.ndarray, half_size: float) -> float:
    """Half-length of an upright cube's footprint projected on a unit 2D direction."""
    w, x, y, z = quaternion
    # First two columns of the rotation matrix, xy components only.
    axis_x = np.array([1 - 2 * (y * y + z * z), 2 * (x * y + w * z)])
    axis_y = np.array([2 * (x * y - w * z), 1 - 2 * (x * x + z * z)])
    return half_size * (abs(direction @ axis_x) + abs(direction @ axis_y))


@dataclass
class PushCubeExpert:
    """Waypoint pusher for `push_cube`.

    Frame: `along` points from cube to target, `lateral` is its normal; the
    pusher (closed fingers) must be *behind* the cube on that line to push.

    - If the cube sits between the fingers: open and lift clear.
    - If the pusher is behind the cube: descend; once low and on the push
      line, push towards the target while cancelling lateral error;
      otherwise slide (behind the cube) to the park point on the line.
    - If it is not behind: lift to travel height, fly to the park point,
      and descend once behind.
    """

    noise: float = 0.0
    seed: int | None = None
    _rng: np.random.Generator = field(init=False, repr=False)
    # Name of the branch the last `act` call took; for logging only, never read.
    last_phase: str = field(init=False, default="")

    def __post_init__(self):
        self._rng = np.random.default_rng(self.seed)

    def act(self, env) -> np.ndarray:
        env = env.unwrapped
        arm = env.arm
        ee = env.ee_position()
        cube = env.cube_position()
        target_xy = env.target_position()
        half = env.cube_half_size

        push_z = arm.low[2]
        travel_z = 2 * half + TRAVEL_CLEARANCE + arm.fingertip_below_ee
        along, lateral = _planar_frame(target_xy - cube[:2])
        offset = ee[:2] - cube[:2]
        along_offset, lateral_offset = offset @ along, offset @ lateral

        contact_distance = _cube_half_extent_along(along, env.cube_quaternion(), half) + arm.pusher_half_width
        # Far enough that the pusher clears the cube whatever its rotation.
        park_distance = half * np.sqrt(2.0) + arm.pusher_half_width + STANDOFF_MARGIN
        park_xy = np.clip(cube[:2] - park_distance * along, arm.low[:2], arm.high[:2])

        fingers_around_cube = np.linalg.norm(offset) < half and ee[2] < cube[2] + half + arm.fingertip_below_ee
        is_behind = along_offset <= -contact_distance + BEHIND_TOLERANCE
        is_low = ee[2] <= push_z + PUSH_HEIGHT_TOLERANCE
        is_high = ee[2] >= travel_z - TRAVEL_HEIGHT_TOLERANCE
        # Low and on the line means the fingers cannot be inside the cube, so
        # anything closer than half a cube plus a margin is still behind it.
        in_push_zone = (
            is_low
            and abs(lateral_offset) <= PUSH_LATERAL_TOLERANCE
            and -(park_distance + PUSH_ZONE_BEYOND_PARK) <= along_offset <= -(half + PUSH_ZONE_MIN_DEPTH)
        )

        gripper = GRIPPER_CLOSED
        if fingers_around_cube:
            # Let go and lift; closing here would grasp the cube instead.
            phase, delta_xy, target_z, gripper = "release", np.zeros(2), travel_z, GRIPPER_OPEN
        elif in_push_zone:
            remaining = np.linalg.norm(target_xy - cube[:2])
            on_line = 1.0 - abs(lateral_offset) / PUSH_LATERAL_TOLERANCE
            forward = min(PUSH_STEP * on_line, remaining)
            phase, delta_xy, target_z = "push", forward * along - lateral_offset * lateral, push_z
        elif is_behind:
            phase, delta_xy, target_z = "align", park_xy - ee[:2], push_z
        elif not is_high:
            # Beside or in front of the cube: lift straight up before moving
            # so the pusher never sweeps the cube the wrong way.
            phase, delta_xy, target_z = "lift", np.zeros(2), travel_z
        else:
            phase, delta_xy, target_z = "travel", park_xy - ee[:2], travel_z

        self.last_phase = phase
        delta = np.array([*delta_xy, target_z - ee[2]])
        action = np.append(self._limit_step(delta, env.max_ee_step), gripper)
        if self.noise > 0:
            action = action + self._rng.normal(0.0, self.noise, size=action.shape)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    @staticmethod
    def _limit_step(delta: np.ndarray, max_step: float) -> np.ndarray:
        """Displacement -> action units, shrinking (not clipping) to keep direction."""
        scaled = delta / max_step
        largest = np.max(np.abs(scaled))
        return scaled / largest if largest > 1.0 else scaled
