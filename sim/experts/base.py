"""The experts' shared part: every tolerance and margin they use (metres), the geometry helpers,
and `ScriptedExpert`, the stateless base class (sim/experts/__init__.py says how experts work)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

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

# ---- closed-loop tracking (reach, pick_place and the button experts) -------------
# Fraction of the remaining position error commanded per control step (then
# capped at the per-step limit).  Well below 1: with one step of action
# latency the error follows e' = e - g * e_previous, which rings at g = 1 and
# diverges past it; g = 0.5 converges whether the arm moves 20% more or less
# than commanded.
TRACKING_GAIN = 0.5
# Before applying the gain, subtract this fraction of the distance the end
# effector is moving per step: it brakes ahead of the goal, so a full-speed
# approach does not overshoot by the late (latency) step.  It halves the
# overshoot with latency and +20% gain and costs ~2 steps without them.
VELOCITY_DAMPING = 0.5

# ---- reaching --------------------------------------------------------------------
REACH_GRIPPER = 1.0  # keep the fingers closed (the home posture)

# ---- pressing buttons (metres) -----------------------------------------------------
# Fingertip clearance above the caps when flying to a button.
BUTTON_TRAVEL_CLEARANCE = 0.025
# Fingertips lower than this above the cap tops could hit a button moving sideways.
BUTTON_LOW_MARGIN = 0.01
# Start descending onto the cap when centred within BUTTON_ALIGN_TOLERANCE;
# once on the way down (fingertips BUTTON_DESCENT_DEPTH below travel
# height) keep going while within BUTTON_ON_CAP_TOLERANCE (the closed
# fingers, 1.2 cm half-width, still land on the 2.5 cm radius cap).
BUTTON_ALIGN_TOLERANCE = 0.006
BUTTON_ON_CAP_TOLERANCE = 0.01
BUTTON_DESCENT_DEPTH = 0.005
# Aim the fingertips this far below the cap's bottom stop: the press goes all
# the way down quickly whatever the arm's gain, with ~12 N on the stop.
BUTTON_PRESS_OVERSHOOT = 0.002
# Lift straight up, rather than fly sideways, when low within this distance
# (beyond the base radius plus the fingers' footprint) of any button.
BUTTON_AVOID_MARGIN = 0.015
# Press only with the fingers (nearly) closed: open ones straddle the cap.
BUTTON_MAX_PRESS_GAP = 0.01

# ---- pick and place (metres) -------------------------------------------------------
# Fingertip clearance above the block top when hovering over it.
GRASP_HOVER_CLEARANCE = 0.02
# Open the fingers this much wider than the block on each side...
GRASP_GAP_MARGIN = 0.012
# ...and descend only once the gap is at least this much wider than the block.
GRASP_GAP_CLEARANCE = 0.01
# Start descending when centred over the block within GRASP_ALIGN_TOLERANCE;
# once on the way down (fingertips GRASP_DESCENT_DEPTH below hover height)
# keep going while within GRASP_DESCENT_TOLERANCE (less than
# GRASP_GAP_MARGIN, so the fingers still pass beside the block), and once
# the fingertips are below the block top while within
# GRASP_CENTRED_TOLERANCE (the closing fingers re-centre it along y).
GRASP_ALIGN_TOLERANCE = 0.006
GRASP_DESCENT_TOLERANCE = 0.009
GRASP_DESCENT_DEPTH = 0.005
GRASP_CENTRED_TOLERANCE = 0.015
# Close once the grasp centre is within this distance above the block centre.
GRASP_HEIGHT_TOLERANCE = 0.006
# Near the +-y rim an open finger hangs over the rim: grasp higher, with the
# fingertips this far above the rim top.
RIM_FINGER_CLEARANCE = 0.005
# Carry the block with its bottom this high; move sideways only once it is
# LIFT_CLEARANCE off the table so it is not dragged.
CARRY_HEIGHT = 0.04
LIFT_CLEARANCE = 0.015
# Lower the block once its centre is within PLACE_ALIGN_TOLERANCE of the zone
# centre and keep lowering while within PLACE_CENTRED_TOLERANCE; aim its
# bottom this far into the table so it surely lands, then let go.
PLACE_ALIGN_TOLERANCE = 0.01
PLACE_CENTRED_TOLERANCE = 0.025
PLACE_DEPTH = 0.003

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


def _gripper_command(arm, gap: float) -> float:
    """Gripper command that opens the fingers to `gap` (metres)."""
    return float(np.clip(1.0 - 2.0 * gap / arm.max_finger_gap, GRIPPER_OPEN, GRIPPER_CLOSED))


def _fingertips_z(env) -> float:
    return float(env.ee_position()[2] - env.arm.fingertip_below_ee)


def _limit_norm(vector: np.ndarray, max_norm: float) -> np.ndarray:
    norm = np.linalg.norm(vector)
    return vector * (max_norm / norm) if norm > max_norm else vector


@dataclass
class ScriptedExpert:
    """Base of the stateless experts: subclasses implement `_decide`.

    `_decide(env)` returns (phase, end-effector xy displacement, target
    height, gripper command).  `act` scales the displacement and the height
    error by `gain`, shrinks the result to the per-step limit (keeping its
    direction) and adds the optional Gaussian `noise` (std, action units).
    """

    noise: float = 0.0
    seed: int | None = None
    _rng: np.random.Generator = field(init=False, repr=False)
    # Name of the branch the last `act` call took; for logging only, never read.
    last_phase: str = field(init=False, default="")
    # Fraction of the remaining error commanded per step (see TRACKING_GAIN).
    gain: ClassVar[float] = 1.0
    # Fraction of the end effector's current velocity (as a displacement per
    # control step) subtracted from the error first (see VELOCITY_DAMPING).
    damping: ClassVar[float] = 0.0

    def __post_init__(self):
        self._rng = np.random.default_rng(self.seed)

    def act(self, env) -> np.ndarray:
        env = env.unwrapped
        phase, delta_xy, target_z, gripper = self._decide(env)
        self.last_phase = phase
        error = np.array([*delta_xy, target_z - env.ee_position()[2]])
        delta = self.gain * (error - self.damping * env.ee_velocity() / env.control_hz)
        action = np.append(_limit_step(delta, env.max_ee_step), gripper)
        if self.noise > 0:
            action = action + self._rng.normal(0.0, self.noise, size=action.shape)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def _decide(self, env) -> tuple[str, np.ndarray, float, float]:
        """(phase, end-effector xy displacement, target height, gripper command)."""
        raise NotImplementedError
