"""Scripted experts: privileged-state controllers used as simulated operators.

An expert must produce a sensible action from *any* state (it takes over a
robot mid-episode, possibly after a policy made a mess), so every expert here
is stateless: `act(env)` looks only at the current simulator state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# ---- pushing (metres) ----------------------------------------------------------
# Extra gap between pusher and cube when parking behind the cube.
STANDOFF_MARGIN = 0.008
# The pusher is "behind" the cube (free to move low towards the park point)
# if its footprint reaches at most BEHIND_TOLERANCE past the cube's back
# surface along the push line (it is in contact while pushing).  While the
# fingertips are still above the cube top it must instead keep
# DESCENT_CLEARANCE away, or descending would land on the cube's edge.
BEHIND_TOLERANCE = 0.006
DESCENT_CLEARANCE = 0.004
# Push while behind, low, within this distance of the push line and not much
# farther back than the park point.  The forward push slows to zero as the
# lateral error approaches the tolerance, so the pusher re-centres on the
# face instead of shoving the cube off the line.
PUSH_LATERAL_TOLERANCE = 0.02
PUSH_HEIGHT_TOLERANCE = 0.01
PUSH_ZONE_BEYOND_PARK = 0.01
# Forward push per control step; slower than free motion so the cube is
# pushed quasi-statically and does not slide past the target.
PUSH_STEP = 0.02
# Fingertip clearance above the cube top when travelling over it.
TRAVEL_CLEARANCE = 0.025
TRAVEL_HEIGHT_TOLERANCE = 0.01

# ---- dragging a cube the arm cannot get behind ----------------------------------
# A park point counts as reachable if it lies this far inside the workspace.
PARK_REACH_MARGIN = 0.005
# Near the rim the arm cannot get behind the cube, so it presses the closed
# fingers on the cube top and drags it (finger friction beats table
# friction) towards the target until the park point is reachable with
# DRAG_RELEASE_MARGIN to spare.  That extra room is the hysteresis that
# stops it from starting another drag right after lifting off.
DRAG_RELEASE_MARGIN = 0.03
DRAG_STEP = 0.02
# Fingertip target this far below the cube top: ~25 N of pressing force.
PRESS_DEPTH = 0.004
# Fingertips this close above the cube top (and centred on it) count as pressing.
PRESS_CONTACT_TOLERANCE = 0.005
# Hover above the cube centre within this distance before descending on it;
# once below travel height keep descending within the looser tolerance.
PRESS_HOVER_TOLERANCE = 0.005
PRESS_CENTRED_TOLERANCE = 0.012

# ---- gripper ------------------------------------------------------------------
# Fingertips this far below the cube top, around its centre, mean the cube is
# between the (open) fingers: let go before doing anything else.
STRADDLE_DEPTH = 0.01
GRIPPER_OPEN = -1.0
GRIPPER_CLOSED = 1.0

_CUBE_CORNER_SIGNS = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])


def _planar_frame(direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit vector along `direction` and its left normal (2D)."""
    norm = np.linalg.norm(direction)
    along = direction / norm if norm > 1e-9 else np.array([1.0, 0.0])
    return along, np.array([-along[1], along[0]])


def _rotation_matrix(quaternion: np.ndarray) -> np.ndarray:
    w, x, y, z = quaternion / np.linalg.norm(quaternion)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def _cube_corners(quaternion: np.ndarray, half_size: float) -> np.ndarray:
    """(8, 3) corner offsets from the cube centre, in world axes (any orientation)."""
    return half_size * _CUBE_CORNER_SIGNS @ _rotation_matrix(quaternion).T


def _rectangle_corners_xy(half_x: float, half_y: float) -> np.ndarray:
    return np.array([[half_x, half_y], [half_x, -half_y], [-half_x, -half_y], [-half_x, half_y]])


def _hull_back_boundary(points_al: np.ndarray, lateral: float) -> float | None:
    """Smallest `along` coordinate of the convex hull of `points_al` at `lateral`.

    Points are (along, lateral).  Returns None if the line lateral = const
    misses the hull.  The minimum over a convex hull's slice lies on a
    segment between two of the points, so checking all pairs is exact.
    """
    along, lat = points_al[:, 0], points_al[:, 1]
    i, j = np.triu_indices(len(points_al))
    low, high = np.minimum(lat[i], lat[j]), np.maximum(lat[i], lat[j])
    spans = (low <= lateral) & (lateral <= high)
    if not spans.any():
        return None
    i, j = i[spans], j[spans]
    width = lat[j] - lat[i]
    t = np.divide(lateral - lat[i], width, out=np.zeros_like(width), where=np.abs(width) > 1e-12)
    return float(np.min(along[i] + t * (along[j] - along[i])))


def _inside(point_xy: np.ndarray, arm, margin: float) -> bool:
    """Whether an xy point lies at least `margin` inside the arm's workspace."""
    return bool(np.all(point_xy >= arm.low[:2] + margin) and np.all(point_xy <= arm.high[:2] - margin))


def _limit_step(delta: np.ndarray, max_step: float) -> np.ndarray:
    """Displacement -> action units, shrinking (not clipping) to keep direction."""
    scaled = delta / max_step
    largest = np.max(np.abs(scaled))
    return scaled / largest if largest > 1.0 else scaled


def _limit_norm(vector: np.ndarray, max_norm: float) -> np.ndarray:
    norm = np.linalg.norm(vector)
    return vector * (max_norm / norm) if norm > max_norm else vector


@dataclass
class PushCubeExpert:
    """Waypoint pusher for `push_cube`.

    Frame: `along` points from the cube to the target and `lateral` is its
    normal.  The pusher (closed fingers) has to be *behind* the cube on that
    line to push:

    - behind, low and on the line: push along it while cancelling the
      lateral error ("push");
    - behind otherwise: descend and slide to the park point just behind the
      cube on the line ("align");
    - not behind and low: lift straight up ("lift");
    - not behind and high: fly to above the park point ("travel").

    If the park point is out of the arm's reach (cube against the rim), the
    expert hovers over the cube ("hover"), presses down on its top
    ("press") and drags it towards the target ("drag").  If the cube is
    between open fingers it lets go first ("release").
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
        phase, delta_xy, target_z, gripper = self._decide(env)
        self.last_phase = phase
        delta = np.array([*delta_xy, target_z - env.ee_position()[2]])
        action = np.append(_limit_step(delta, env.max_ee_step), gripper)
        if self.noise > 0:
            action = action + self._rng.normal(0.0, self.noise, size=action.shape)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def _decide(self, env) -> tuple[str, np.ndarray, float, float]:
        """(phase, end-effector xy displacement, target height, gripper command)."""
        arm = env.arm
        ee = env.ee_position()
        cube = env.cube_position()
        target_xy = env.target_position()
        half = env.cube_half_size
        corners = _cube_corners(env.cube_quaternion(), half)
        cube_top = cube[2] + corners[:, 2].max()
        fingertips_z = ee[2] - arm.fingertip_below_ee
        travel_z = cube_top + TRAVEL_CLEARANCE + arm.fingertip_below_ee
        centre_offset = np.linalg.norm(ee[:2] - cube[:2])

        if centre_offset < half and fingertips_z < cube_top - STRADDLE_DEPTH:
            # Closing here would grasp the cube; open, and lift once the
            # fingers are wide enough to clear it.
            clear = env.finger_gap() > 2 * half * np.sqrt(2.0)
            return "release", np.zeros(2), travel_z if clear else ee[2], GRIPPER_OPEN

        # Farthest the park point can be from the cube centre (closed fingers).
        footprint_radius = np.linalg.norm(corners[:, :2], axis=1).max()
        park_distance = footprint_radius + np.hypot(*arm.finger_footprint_half_extents(0.0)) + STANDOFF_MARGIN
        along, _ = _planar_frame(target_xy - cube[:2])
        park_xy = cube[:2] - park_distance * along
        pressing = centre_offset <= PRESS_CENTRED_TOLERANCE and fingertips_z <= cube_top + PRESS_CONTACT_TOLERANCE
        reach_margin = PARK_REACH_MARGIN + (DRAG_RELEASE_MARGIN if pressing else 0.0)
        if not _inside(park_xy, arm, reach_margin):
            return self._drag(env, ee, cube, target_xy, cube_top, travel_z, pressing)
        return self._push(env, ee, cube, corners, target_xy, cube_top, travel_z)

    @staticmethod
    def _drag(env, ee, cube, target_xy, cube_top, travel_z, pressing) -> tuple[str, np.ndarray, float, float]:
        """Press the closed fingers on the cube top and drag it towards the target."""
        press_z = cube_top + env.arm.fingertip_below_ee - PRESS_DEPTH
        to_cube = cube[:2] - ee[:2]
        if pressing:
            # Keep re-centring on the cube while dragging it.
            return "drag", _limit_norm(target_xy - cube[:2], DRAG_STEP) + to_cube, press_z, GRIPPER_CLOSED
        is_high = ee[2] >= travel_z - TRAVEL_HEIGHT_TOLERANCE
        distance = np.linalg.norm(to_cube)
        if distance <= PRESS_HOVER_TOLERANCE or (not is_high and distance <= PRESS_CENTRED_TOLERANCE):
            return "press", to_cube, press_z, GRIPPER_CLOSED
        if not is_high:
            return "lift", np.zeros(2), travel_z, GRIPPER_CLOSED
        return "hover", to_cube, travel_z, GRIPPER_CLOSED

    @staticmethod
    def _push(env, ee, cube, corners, target_xy, cube_top, travel_z) -> tuple[str, np.ndarray, float, float]:
        arm = env.arm
        push_z = arm.low[2]
        along, lateral = _planar_frame(target_xy - cube[:2])
        offset = ee[:2] - cube[:2]
        along_offset, lateral_offset = offset @ along, offset @ lateral

        # Positions of the pusher centre (relative to the cube centre) at which
        # the fingers would overlap the cube: the cube's footprint grown by the
        # fingers' footprint (a Minkowski sum), in the push-line frame.  The
        # actual finger gap is used: open fingers need more room.
        finger_corners = _rectangle_corners_xy(*arm.finger_footprint_half_extents(env.finger_gap()))
        obstacle = (corners[:, None, :2] + finger_corners[None, :, :]).reshape(-1, 2)
        obstacle_al = np.stack([obstacle @ along, obstacle @ lateral], axis=1)
        # Where the obstacle starts along the line through the pusher (the
        # pusher touches the cube there); if the pusher is off to the side,
        # only "behind the whole obstacle" counts as behind.
        back = _hull_back_boundary(obstacle_al, lateral_offset)
        if back is None:
            back = float(obstacle_al[:, 0].min())
        # Parking this far back clears the obstacle at the cube's rotation.
        park_distance = -float(obstacle_al[:, 0].min()) + STANDOFF_MARGIN
        park_xy = np.clip(cube[:2] - park_distance * along, arm.low[:2], arm.high[:2])

        fingertips_below_cube_top = ee[2] - arm.fingertip_below_ee < cube_top
        is_behind = along_offset <= back + (BEHIND_TOLERANCE if fingertips_below_cube_top else -DESCENT_CLEARANCE)
        is_low = ee[2] <= push_z + PUSH_HEIGHT_TOLERANCE
        is_high = ee[2] >= travel_z - TRAVEL_HEIGHT_TOLERANCE
        in_push_zone = (
            is_behind
            and is_low
            and abs(lateral_offset) <= PUSH_LATERAL_TOLERANCE
            and along_offset >= -(park_distance + PUSH_ZONE_BEYOND_PARK)
        )
        if in_push_zone:
            remaining = np.linalg.norm(target_xy - cube[:2])
            on_line = 1.0 - abs(lateral_offset) / PUSH_LATERAL_TOLERANCE
            forward = min(PUSH_STEP * on_line, remaining)
            return "push", forward * along - lateral_offset * lateral, push_z, GRIPPER_CLOSED
        if is_behind:
            return "align", park_xy - ee[:2], push_z, GRIPPER_CLOSED
        if not is_high:
            # Beside, in front of or on top of the cube: lift straight up
            # before moving so the pusher never sweeps the cube the wrong way.
            return "lift", np.zeros(2), travel_z, GRIPPER_CLOSED
        return "travel", park_xy - ee[:2], travel_z, GRIPPER_CLOSED
