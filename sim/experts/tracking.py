"""Experts that re-plan from the measured state every step with a gain below one (reach,
pick_place, press_button, cued_button), so latency, noise and a mis-scaled arm do not undo them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.buttons import BASE_RADIUS, CAP_TOP_REST_Z, CAP_TRAVEL
from sim.experts.base import (
    BUTTON_ALIGN_TOLERANCE,
    BUTTON_AVOID_MARGIN,
    BUTTON_DESCENT_DEPTH,
    BUTTON_LOW_MARGIN,
    BUTTON_MAX_PRESS_GAP,
    BUTTON_ON_CAP_TOLERANCE,
    BUTTON_PRESS_OVERSHOOT,
    BUTTON_TRAVEL_CLEARANCE,
    CARRY_HEIGHT,
    GRASP_ALIGN_TOLERANCE,
    GRASP_CENTRED_TOLERANCE,
    GRASP_DESCENT_DEPTH,
    GRASP_DESCENT_TOLERANCE,
    GRASP_GAP_CLEARANCE,
    GRASP_GAP_MARGIN,
    GRASP_HEIGHT_TOLERANCE,
    GRASP_HOVER_CLEARANCE,
    GRIPPER_CLOSED,
    GRIPPER_OPEN,
    LIFT_CLEARANCE,
    PLACE_ALIGN_TOLERANCE,
    PLACE_CENTRED_TOLERANCE,
    PLACE_DEPTH,
    REACH_GRIPPER,
    RIM_FINGER_CLEARANCE,
    ScriptedExpert,
    TRACKING_GAIN,
    VELOCITY_DAMPING,
    _cube_corners,
    _fingertips_z,
    _gripper_command,
)
from sim.scene import RIM_CLEARANCE, RIM_HEIGHT


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
