"""Scripted experts: privileged-state controllers used as simulated operators.

An expert must produce a sensible action from *any* state (it takes over a
robot mid-episode, possibly after a policy made a mess), so every expert here
is stateless: `act(env)` looks only at the current simulator state.

Each expert is a `ScriptedExpert` whose `_decide(env)` picks a phase (a
named branch of a decision list, with hysteresis from looser tolerances once
a motion is under way) and returns where to move; `act` turns that into a
closed-loop action.  The experts for reach, pick_place, press_button and
cued_button re-plan from the measured state every step with a gain below one
(TRACKING_GAIN, VELOCITY_DAMPING), so they also work with action latency,
action noise, and an arm that moves more or less than commanded (the
real-proxy variant).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from sim.buttons import BASE_RADIUS, CAP_TOP_REST_Z, CAP_TRAVEL
from sim.scene import RIM_CLEARANCE, RIM_HEIGHT

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


@dataclass
class PushCubeExpert(ScriptedExpert):
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


@dataclass
class TrackingExpert(ScriptedExpert):
    """`ScriptedExpert` with the latency- and gain-tolerant tracking settings."""

    gain = TRACKING_GAIN
    damping = VELOCITY_DAMPING


@dataclass
class ReachExpert(TrackingExpert):
    """Fly the grasp centre straight to the marker (there is nothing to avoid)."""

    def _decide(self, env) -> tuple[str, np.ndarray, float, float]:
        marker = env.marker_position()
        return "reach", marker[:2] - env.ee_position()[:2], float(marker[2]), REACH_GRIPPER


@dataclass
class PickPlaceExpert(TrackingExpert):
    """Grasp the block from above, carry it over the zone, set it down, let go.

    Not holding the block:

    - fingertips above the block top: fly (with the fingers opening) to
      above the block ("hover"), then descend once centred and open wide
      enough ("descend");
    - fingertips beside the block and centred on it: descend to the grasp
      height and close ("close"), else lift straight up ("lift").

    Holding it (both fingers touch it): lift it clear of the table ("lift"),
    carry it over the zone centre ("carry"), lower it onto the table
    ("lower").  Once it rests in the zone, open without moving while a
    finger still grips it ("release"), then back off upwards ("retreat");
    success is declared as soon as no finger touches it.
    """

    def _decide(self, env) -> tuple[str, np.ndarray, float, float]:
        ee = env.ee_position()
        block = env.block_position()
        corners = _cube_corners(env.block_quaternion(), env.block_half_size)
        block_top = block[2] + corners[:, 2].max()
        block_bottom = block[2] + corners[:, 2].min()
        hover_z = block_top + GRASP_HOVER_CLEARANCE + env.arm.fingertip_below_ee
        grasped = env.block_grasped()
        if env.block_placed():
            if grasped:
                return "release", np.zeros(2), ee[2], GRIPPER_OPEN
            return "retreat", np.zeros(2), hover_z, GRIPPER_OPEN
        if grasped:
            return self._carry(env, ee, block, block_bottom)
        return self._grasp(env, ee, block, corners, block_top, hover_z)

    @staticmethod
    def _carry(env, ee, block, block_bottom) -> tuple[str, np.ndarray, float, float]:
        to_zone = env.zone_position() - block[:2]
        offset = np.linalg.norm(to_zone)
        lowering = block_bottom < CARRY_HEIGHT - LIFT_CLEARANCE
        if offset <= PLACE_ALIGN_TOLERANCE or (lowering and offset <= PLACE_CENTRED_TOLERANCE):
            return "lower", to_zone, ee[2] - block_bottom - PLACE_DEPTH, GRIPPER_CLOSED
        carry_z = ee[2] + CARRY_HEIGHT - block_bottom
        if block_bottom < LIFT_CLEARANCE:
            return "lift", np.zeros(2), carry_z, GRIPPER_CLOSED
        return "carry", to_zone, carry_z, GRIPPER_CLOSED

    @staticmethod
    def _grasp(env, ee, block, corners, block_top, hover_z) -> tuple[str, np.ndarray, float, float]:
        arm = env.arm
        # The fingers close along world y: open them wider than the block's
        # extent along y (which depends on its yaw).
        block_width = corners[:, 1].max() - corners[:, 1].min()
        open_gap = min(arm.max_finger_gap, block_width + 2.0 * GRASP_GAP_MARGIN)
        open_command = _gripper_command(arm, open_gap)
        grasp_z = max(float(block[2]), arm.low[2])
        rim_inner_y = max(abs(arm.low[1]), abs(arm.high[1])) + RIM_CLEARANCE
        if abs(block[1]) + arm.finger_footprint_half_extents(open_gap)[1] > rim_inner_y:
            grasp_z = max(grasp_z, RIM_HEIGHT + RIM_FINGER_CLEARANCE + arm.fingertip_below_ee)

        to_block = block[:2] - ee[:2]
        offset = np.linalg.norm(to_block)
        gap = env.finger_gap()
        if _fingertips_z(env) < block_top:
            if offset > GRASP_CENTRED_TOLERANCE:
                return "lift", np.zeros(2), hover_z, open_command
            # Centred on the block: closing (the gap already narrower than
            # the block) or low enough to close; otherwise keep descending.
            if gap < block_width + GRASP_GAP_CLEARANCE or ee[2] <= grasp_z + GRASP_HEIGHT_TOLERANCE:
                return "close", to_block, grasp_z, GRIPPER_CLOSED
            return "descend", to_block, grasp_z, open_command
        descending = ee[2] < hover_z - GRASP_DESCENT_DEPTH
        centred = offset <= GRASP_ALIGN_TOLERANCE or (descending and offset <= GRASP_DESCENT_TOLERANCE)
        if centred and gap >= block_width + GRASP_GAP_CLEARANCE:
            return "descend", to_block, grasp_z, open_command
        return "hover", to_block, hover_z, open_command


@dataclass
class PressButtonExpert(TrackingExpert):
    """Fly above the target button, descend on its cap with the fingers closed and press it.

    - centred on the cap (fingers closed): press down ("press");
    - low near any button: lift straight up ("lift"), so the fingers never
      sweep into a cap or press the wrong button;
    - otherwise fly to above the target at travel height ("travel").
    """

    def _target_button(self, env):
        return env.button

    def _decide(self, env) -> tuple[str, np.ndarray, float, float]:
        arm = env.arm
        ee = env.ee_position()
        to_button = self._target_button(env).position() - ee[:2]
        offset = np.linalg.norm(to_button)
        travel_z = CAP_TOP_REST_Z + BUTTON_TRAVEL_CLEARANCE + arm.fingertip_below_ee
        press_z = CAP_TOP_REST_Z - CAP_TRAVEL - BUTTON_PRESS_OVERSHOOT + arm.fingertip_below_ee
        is_low = _fingertips_z(env) < CAP_TOP_REST_Z + BUTTON_LOW_MARGIN
        descending = ee[2] < travel_z - BUTTON_DESCENT_DEPTH
        gap = env.finger_gap()
        centred = offset <= BUTTON_ALIGN_TOLERANCE or (descending and offset <= BUTTON_ON_CAP_TOLERANCE)
        if centred and gap <= BUTTON_MAX_PRESS_GAP:
            return "press", to_button, press_z, GRIPPER_CLOSED
        keep_away = BASE_RADIUS + np.hypot(*arm.finger_footprint_half_extents(gap)) + BUTTON_AVOID_MARGIN
        near_a_button = any(np.linalg.norm(b.position() - ee[:2]) <= keep_away for b in env.buttons)
        if is_low and near_a_button:
            return "lift", np.zeros(2), travel_z, GRIPPER_CLOSED
        return "travel", to_button, travel_z, GRIPPER_CLOSED


@dataclass
class CuedButtonExpert(PressButtonExpert):
    """`PressButtonExpert` aimed at the button the lamp cued (privileged `env.cue`)."""

    def _target_button(self, env):
        return env.buttons[env.cue]
