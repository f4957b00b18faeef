"""The pushing expert for `push_cube`: park behind the cube, then push it along the line to the target."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.experts.base import (
    BEHIND_TOLERANCE,
    DESCENT_CLEARANCE,
    DRAG_RELEASE_MARGIN,
    DRAG_STEP,
    GRIPPER_CLOSED,
    GRIPPER_OPEN,
    PARK_REACH_MARGIN,
    PRESS_CENTRED_TOLERANCE,
    PRESS_CONTACT_TOLERANCE,
    PRESS_DEPTH,
    PRESS_HOVER_TOLERANCE,
    PUSH_HEIGHT_TOLERANCE,
    PUSH_LATERAL_TOLERANCE,
    PUSH_STEP,
    PUSH_ZONE_BEYOND_PARK,
    STANDOFF_MARGIN,
    STRADDLE_DEPTH,
    ScriptedExpert,
    TRAVEL_CLEARANCE,
    TRAVEL_HEIGHT_TOLERANCE,
    _cube_corners,
    _hull_back_boundary,
    _inside,
    _limit_norm,
    _planar_frame,
    _rectangle_corners_xy,
)


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
