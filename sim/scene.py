"""Tabletop scene around the Cartesian arm: table, lights, front camera.

`build_tabletop_xml` wraps the arm and the task-specific bodies (cubes,
target markers, ...) into one MJCF document.  Tasks only supply the XML for
their own objects.
"""

from __future__ import annotations

from sim.arm import CartesianArm
from sim.camera_pose import camera_xyaxes

# The table top is the world z = 0 plane; the table is a thin box under it.
TABLE_HALF_EXTENTS = (0.40, 0.40, 0.02)
TABLE_RGBA = "0.72 0.72 0.70 1"

# A low rim around the reachable area keeps objects from being pushed out of
# the arm's reach (the arm can always get its fingers onto an object whose
# centre is inside the rim), so an operator can recover from any state.  Its
# inner faces sit RIM_CLEARANCE outside the arm's xy workspace.
RIM_CLEARANCE = 0.025
RIM_HALF_THICKNESS = 0.01
RIM_HEIGHT = 0.02
RIM_RGBA = "0.45 0.45 0.48 1"

# Physics: 2 ms steps, 50 of them per 10 Hz control step.
PHYSICS_TIMESTEP = 0.002

# Front camera: in front of the table (negative y), high up, looking at the
# table centre, wide enough that the whole reachable box and objects pushed to
# its edge stay in view.
FRONT_CAMERA_POSITION = (0.0, -0.45, 0.80)
FRONT_CAMERA_LOOKAT = (0.0, -0.02, 0.0)
FRONT_CAMERA_FOVY = 46.0
FRONT_CAMERA_NAME = "front"

# Offscreen framebuffer must be at least as large as the rendered images.
MIN_OFFSCREEN_SIZE = 640


def build_tabletop_xml(
    arm: CartesianArm,
    model_name: str,
    objects_xml: str,
    image_height: int,
    image_width: int,
) -> str:
    """Full MJCF for arm + table + lights + cameras + task objects."""
    offwidth = max(MIN_OFFSCREEN_SIZE, image_width)
    offheight = max(MIN_OFFSCREEN_SIZE, image_height)
    tx, ty, tz = TABLE_HALF_EXTENTS
    front_xyaxes = camera_xyaxes(FRONT_CAMERA_POSITION, FRONT_CAMERA_LOOKAT)
    fx, fy, fz = FRONT_CAMERA_POSITION
    return f"""
<mujoco model="{model_name}">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{PHYSICS_TIMESTEP}" integrator="implicitfast"/>
  <visual>
    <global offwidth="{offwidth}" offheight="{offheight}"/>
    <!-- Shadows off: they dominate software-rendering cost. -->
    <quality shadowsize="0"/>
    <headlight ambient="0.35 0.35 0.35" diffuse="0.25 0.25 0.25" specular="0 0 0"/>
  </visual>
  <default>
    <geom solref="0.004 1"/>
  </default>
  <worldbody>
    <light name="top" directional="true" pos="0 0 1.5" dir="0 0 -1"
           diffuse="0.45 0.45 0.45" specular="0 0 0" castshadow="false"/>
    <geom name="table" type="box" pos="0 0 {-tz}" size="{tx} {ty} {tz}"
          rgba="{TABLE_RGBA}" friction="0.4 0.005 0.0001"/>
    <camera name="{FRONT_CAMERA_NAME}" pos="{fx} {fy} {fz}" xyaxes="{front_xyaxes}"
            fovy="{FRONT_CAMERA_FOVY}"/>
{_rim_xml(arm)}
{arm.worldbody_xml()}
{objects_xml}
  </worldbody>
  <actuator>
{arm.actuator_xml()}
  </actuator>
  <equality>
{arm.equality_xml()}
  </equality>
  <contact>
{arm.contact_xml()}
  </contact>
</mujoco>
"""


def _rim_xml(arm: CartesianArm) -> str:
    """Four boxes framing the reachable area (they overlap at the corners)."""
    inner_x = max(abs(arm.workspace_low[0]), abs(arm.workspace_high[0])) + RIM_CLEARANCE
    inner_y = max(abs(arm.workspace_low[1]), abs(arm.workspace_high[1])) + RIM_CLEARANCE
    t, h = RIM_HALF_THICKNESS, RIM_HEIGHT / 2.0
    walls = {
        "rim_east": ((inner_x + t, 0.0), (t, inner_y + 2 * t)),
        "rim_west": ((-inner_x - t, 0.0), (t, inner_y + 2 * t)),
        "rim_north": ((0.0, inner_y + t), (inner_x + 2 * t, t)),
        "rim_south": ((0.0, -inner_y - t), (inner_x + 2 * t, t)),
    }
    return "\n".join(
        f'    <geom name="{name}" type="box" pos="{x} {y} {h}" size="{sx} {sy} {h}" rgba="{RIM_RGBA}"/>'
        for name, ((x, y), (sx, sy)) in walls.items()
    )
