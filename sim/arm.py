"""The Cartesian (gantry) arm shared by every tabletop task.

The end effector hangs from three orthogonal slide joints (x, y, z) that are
rooted in the world frame, so joint positions *are* the end-effector position
in world coordinates: a position actuator on each slide is a Cartesian
position controller with no inverse kinematics.  Below the palm sits a
two-finger parallel gripper whose fingers are coupled by an equality
constraint and driven by a single actuator.

The end-effector reference point ("ee" site, the body origin) is the grasp
centre between the finger pads, so a task can reason about "where the gripper
grabs" directly.  Everything is built from primitive geoms to keep the
software renderer fast.

Task scenes embed the fragments returned by `CartesianArm` (see
`sim.scene.build_tabletop_xml`); the arm itself knows nothing about tasks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.camera_pose import camera_xyaxes

# Geometry of one finger (box half-extents, metres).  Fingers face each other
# along the local y axis; their lower tips sit FINGER_TIP_BELOW_EE below the
# grasp centre so a grasp closes around the middle of a resting cube.
FINGER_HALF_X = 0.010
FINGER_HALF_Y = 0.006
FINGER_HALF_Z = 0.025
FINGER_TIP_BELOW_EE = 0.015

# Palm box the fingers hang from, sitting directly on top of the fingers.
PALM_HALF_EXTENTS = (0.016, 0.060, 0.010)

# Masses (kg).  Gravity compensation is on for the whole arm, so these only
# matter for tracking dynamics and for how hard the arm can push.
CARRIAGE_MASS = 0.5
FINGER_MASS = 0.05

# Slide position control.  With ~0.6 kg moving, kp=6000 N/m gives a natural
# frequency of 100 rad/s; critical damping settles a 3 cm target step in
# ~40 ms, well inside one 100 ms control step.
SLIDE_KP = 6000.0
SLIDE_DAMPING = 120.0
SLIDE_FORCE_LIMIT = 150.0

# Gripper: each finger travels 0..FINGER_TRAVEL from the closed position, so
# the gap between the finger pads is 0..2*FINGER_TRAVEL (9 cm fully open, enough
# to straddle the 4.5 cm cube even when it is turned 45 degrees).
FINGER_TRAVEL = 0.045
FINGER_KP = 300.0
FINGER_DAMPING = 8.0
GRIPPER_FORCE_LIMIT = 20.0

# Sliding friction of the fingers.  MuJoCo uses the larger friction of two
# touching geoms, so the fingers grip objects better than the table does
# (which also lets an operator drag an object by pressing down on it).
FINGER_FRICTION = "1.0 0.01 0.001"

GRIPPER_RGBA = "0.15 0.15 0.18 1"
CARRIAGE_RGBA = "0.25 0.25 0.3 1"

# Wrist camera: behind the fingers and just below the palm (so the palm does
# not block it), looking forward and down past the fingertips.  The fingers
# show at the top centre of the image, the table around them fills the rest.
# Offsets are relative to the grasp centre; image "up" is world +x.
WRIST_CAMERA_OFFSET = (-0.06, 0.0, 0.03)
WRIST_CAMERA_LOOKAT = (0.0, 0.0, -0.05)
WRIST_CAMERA_FOVY = 75.0
WRIST_CAMERA_NAME = "wrist"


@dataclass(frozen=True)
class CartesianArm:
    """Joint limits (= reachable end-effector box) and home pose of the arm.

    `workspace_low[2]` is the lowest grasp-centre height; tasks pick it so the
    fingertips can reach just above the table top but never into it.
    """

    workspace_low: tuple[float, float, float] = (-0.25, -0.25, 0.019)
    workspace_high: tuple[float, float, float] = (0.25, 0.25, 0.25)
    home: tuple[float, float, float] = (0.0, 0.0, 0.15)

    # Names used in the generated MJCF; tasks and the env look things up by them.
    ee_body: str = "ee"
    ee_site: str = "ee"
    slide_joints: tuple[str, str, str] = ("arm_x", "arm_y", "arm_z")
    finger_joints: tuple[str, str] = ("finger_left", "finger_right")
    slide_actuators: tuple[str, str, str] = ("act_x", "act_y", "act_z")
    gripper_actuator: str = "act_gripper"
    wrist_camera: str = WRIST_CAMERA_NAME

    @property
    def body_names(self) -> tuple[str, ...]:
        """Every body the arm adds to a scene (what is not the arm is a task object)."""
        return (self.ee_body, "finger_left", "finger_right")

    @property
    def low(self) -> np.ndarray:
        return np.asarray(self.workspace_low, dtype=np.float64)

    @property
    def high(self) -> np.ndarray:
        return np.asarray(self.workspace_high, dtype=np.float64)

    @property
    def max_finger_gap(self) -> float:
        return 2.0 * FINGER_TRAVEL

    @property
    def fingertip_below_ee(self) -> float:
        return FINGER_TIP_BELOW_EE

    def finger_footprint_half_extents(self, finger_gap: float) -> tuple[float, float]:
        """Half-sizes (x, y) of the box around both fingers seen from above.

        With the gripper closed (gap 0) this is the pusher's contact surface.
        """
        return (FINGER_HALF_X, 2.0 * FINGER_HALF_Y + max(finger_gap, 0.0) / 2.0)

    def finger_travel_target(self, command: float) -> float:
        """Gripper actuator target (travel of each finger) for a command in [-1, 1] = open..closed."""
        closedness = (float(np.clip(command, -1.0, 1.0)) + 1.0) / 2.0
        return (1.0 - closedness) * FINGER_TRAVEL

    # ---- MJCF fragments ---------------------------------------------------

    def worldbody_xml(self) -> str:
        lo, hi = self.workspace_low, self.workspace_high
        jx, jy, jz = self.slide_joints
        left, right = self.finger_joints
        finger_z = FINGER_HALF_Z - FINGER_TIP_BELOW_EE
        palm_z = finger_z + FINGER_HALF_Z + PALM_HALF_EXTENTS[2]
        # A thin visual-only mast above the palm gives the front camera a
        # depth cue for the end-effector height.
        mast_bottom = palm_z + PALM_HALF_EXTENTS[2]
        mast_half = 0.04
        cam = WRIST_CAMERA_OFFSET
        wrist_xyaxes = camera_xyaxes(cam, WRIST_CAMERA_LOOKAT, image_up_hint=(1.0, 0.0, 0.0))
        return f"""
    <body name="{self.ee_body}" pos="0 0 0" gravcomp="1">
      <joint name="{jx}" type="slide" axis="1 0 0" range="{lo[0]} {hi[0]}"
             damping="{SLIDE_DAMPING}" limited="true"/>
      <joint name="{jy}" type="slide" axis="0 1 0" range="{lo[1]} {hi[1]}"
             damping="{SLIDE_DAMPING}" limited="true"/>
      <joint name="{jz}" type="slide" axis="0 0 1" range="{lo[2]} {hi[2]}"
             damping="{SLIDE_DAMPING}" limited="true"/>
      <inertial pos="0 0 {palm_z}" mass="{CARRIAGE_MASS}" diaginertia="0.002 0.002 0.002"/>
      <site name="{self.ee_site}" pos="0 0 0" size="0.004" rgba="1 1 0 0"/>
      <geom name="palm" type="box" pos="0 0 {palm_z}"
            size="{PALM_HALF_EXTENTS[0]} {PALM_HALF_EXTENTS[1]} {PALM_HALF_EXTENTS[2]}"
            rgba="{GRIPPER_RGBA}"/>
      <geom name="mast" type="box" pos="0 0 {mast_bottom + mast_half}"
            size="0.008 0.008 {mast_half}" rgba="{CARRIAGE_RGBA}"
            contype="0" conaffinity="0" mass="0"/>
      <camera name="{self.wrist_camera}" pos="{cam[0]} {cam[1]} {cam[2]}"
              xyaxes="{wrist_xyaxes}" fovy="{WRIST_CAMERA_FOVY}"/>
      <body name="finger_left" pos="0 {FINGER_HALF_Y} {finger_z}" gravcomp="1">
        <joint name="{left}" type="slide" axis="0 1 0" range="0 {FINGER_TRAVEL}"
               damping="{FINGER_DAMPING}" limited="true"/>
        <geom name="finger_left" type="box" mass="{FINGER_MASS}"
              size="{FINGER_HALF_X} {FINGER_HALF_Y} {FINGER_HALF_Z}"
              rgba="{GRIPPER_RGBA}" friction="{FINGER_FRICTION}"/>
      </body>
      <body name="finger_right" pos="0 {-FINGER_HALF_Y} {finger_z}" gravcomp="1">
        <joint name="{right}" type="slide" axis="0 -1 0" range="0 {FINGER_TRAVEL}"
               damping="{FINGER_DAMPING}" limited="true"/>
        <geom name="finger_right" type="box" mass="{FINGER_MASS}"
              size="{FINGER_HALF_X} {FINGER_HALF_Y} {FINGER_HALF_Z}"
              rgba="{GRIPPER_RGBA}" friction="{FINGER_FRICTION}"/>
      </body>
    </body>"""

    def actuator_xml(self) -> str:
        lines = [
            f'    <position name="{act}" joint="{joint}" kp="{SLIDE_KP}" '
            f'ctrlrange="{lo} {hi}" forcerange="{-SLIDE_FORCE_LIMIT} {SLIDE_FORCE_LIMIT}"/>'
            for act, joint, lo, hi in zip(
                self.slide_actuators, self.slide_joints, self.workspace_low, self.workspace_high
            )
        ]
        lines.append(
            f'    <position name="{self.gripper_actuator}" joint="{self.finger_joints[0]}" '
            f'kp="{FINGER_KP}" ctrlrange="0 {FINGER_TRAVEL}" '
            f'forcerange="{-GRIPPER_FORCE_LIMIT} {GRIPPER_FORCE_LIMIT}"/>'
        )
        return "\n".join(lines)

    def equality_xml(self) -> str:
        # The right finger mirrors the left one: q_right = q_left.
        left, right = self.finger_joints
        return f'    <joint joint1="{right}" joint2="{left}" polycoef="0 1 0 0 0"/>'

    def contact_xml(self) -> str:
        # Closed fingers touch each other; that contact is meaningless and
        # would only fight the gripper actuator.
        return '    <exclude body1="finger_left" body2="finger_right"/>'
