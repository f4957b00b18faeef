"""Spring-loaded push buttons, shared by the button tasks (press_button, cued_button).

A button is a low, dark base on the table with a coloured cap on top, both
low-poly cylinders (octagonal prisms, see sim/shapes.py: a true cylinder
costs twice as much to render).  The cap sits on a vertical slide joint
with a preloaded spring: at rest the spring holds it against its upper
stop, pushing it down by `PRESS_THRESHOLD` counts as "pressed", and it
springs back up when let go.
The base is a fixed body that a task moves per episode by editing its
position in the model (`Button.place`), without rebuilding the model.  It is
not a mocap body, which MuJoCo 4 and 3.x filter differently.  The base is
welded to the world, so MuJoCo's parent-child contact filter does not apply:
collision bits keep the cap, which sinks into the base, from colliding with it.

`button_xml` builds the MJCF of one button and `Button` is a handle on one
button of a built env (placement and privileged state for tasks and experts).
"""

from __future__ import annotations

import mujoco
import numpy as np

from sim.shapes import PRISM_SIDES, prism_xml

# Base on the table (metres; radii are the prisms' apothems).  It is at
# least as tall as the cap travel, so a fully pressed cap never reaches into
# the table.
BASE_RADIUS = 0.035
BASE_HEIGHT = 0.016
BASE_RGBA = "0.2 0.2 0.22 1"

# Cap: a prism whose bottom starts CAP_SINK below the base top at rest (so no
# gap shows between them) and which can be pushed down by CAP_TRAVEL.
CAP_RADIUS = 0.025
CAP_HEIGHT = 0.02
CAP_SINK = 0.002
CAP_TRAVEL = 0.012
CAP_MASS = 0.02
# Height of the cap top above the table when the button is not pressed.
CAP_TOP_REST_Z = BASE_HEIGHT - CAP_SINK + CAP_HEIGHT

# The button counts as pressed once the cap is this far down (2/3 of its travel).
PRESS_THRESHOLD = 0.008

# Spring (N/m) with a preload: its rest position is SPRING_PRELOAD above the
# upper stop, so the cap is held up with ~1.5 N (and up to 50% heavier caps
# still rest on the stop) and pressing it fully takes ~3.3 N.
SPRING_STIFFNESS = 150.0
SPRING_PRELOAD = 0.01
CAP_DAMPING = 1.0
# Stiff joint limits: the preload must not push the cap visibly past its stop.
STOP_SOLREF = "0.002 1"

# Collision bits.  The cap sinks into the base, so the two must never collide; MuJoCo's
# parent-child filter does not cover it because the base is welded to the world.  Both
# still collide with everything else (fingers and objects use contype = conaffinity = 1):
# cap-base is (1 & 4) | (1 & 2) = 0, cap-finger and base-finger are (1 & 1) = 1.
CAP_COLLISION = 'contype="1" conaffinity="2"'
BASE_COLLISION = 'contype="1" conaffinity="4"'


def button_xml(name: str, cap_rgba: str) -> str:
    """MJCF for one button body named `name` (its cap: body and joint `name`_cap)."""
    base = prism_xml(f"{name}_base", BASE_HEIGHT / 2.0, BASE_RADIUS, BASE_HEIGHT / 2.0, BASE_RGBA, BASE_COLLISION)
    cap_centre_z = BASE_HEIGHT - CAP_SINK + CAP_HEIGHT / 2.0
    cap_bar_mass = CAP_MASS / (PRISM_SIDES // 2)
    cap = prism_xml(f"{name}_cap", cap_centre_z, CAP_RADIUS, CAP_HEIGHT / 2.0, cap_rgba,
                     f'mass="{cap_bar_mass}" {CAP_COLLISION}')
    return f"""
    <body name="{name}" pos="0 0 0">{base}
      <body name="{name}_cap" pos="0 0 0">
        <joint name="{name}_cap" type="slide" axis="0 0 1" range="{-CAP_TRAVEL} 0"
               stiffness="{SPRING_STIFFNESS}" springref="{SPRING_PRELOAD}"
               damping="{CAP_DAMPING}" solreflimit="{STOP_SOLREF}"/>{cap}
      </body>
    </body>"""


class Button:
    """Handle on the button `name` (built with `button_xml`) of a model/data pair."""

    cap_top_rest_z = CAP_TOP_REST_Z
    press_threshold = PRESS_THRESHOLD

    def __init__(self, model: mujoco.MjModel, data: mujoco.MjData, name: str):
        self.name = name
        self._model = model
        self._data = data
        body_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, name)
        joint_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, f"{name}_cap")
        if body_id < 0 or joint_id < 0:
            raise KeyError(f"no button named {name!r} in the model")
        self._body = body_id
        self._cap_qpos = int(model.jnt_qposadr[joint_id])
        self._cap_qvel = int(model.jnt_dofadr[joint_id])

    def place(self, xy) -> None:
        """Move the button to `xy` (metres) with its cap released; call mj_forward after."""
        self._model.body_pos[self._body] = [*xy, 0.0]
        self._data.qpos[self._cap_qpos] = 0.0
        self._data.qvel[self._cap_qvel] = 0.0

    def position(self) -> np.ndarray:
        """Button centre (x, y)."""
        return self._model.body_pos[self._body, :2].copy()

    def depression(self) -> float:
        """How far (metres) the cap is pushed down from its rest position."""
        return max(0.0, -float(self._data.qpos[self._cap_qpos]))

    def is_pressed(self) -> bool:
        return self.depression() >= PRESS_THRESHOLD

    def press_point(self) -> np.ndarray:
        """Centre of the cap top when the cap is down at the press threshold (x, y, z)."""
        return np.array([*self.position(), CAP_TOP_REST_Z - PRESS_THRESHOLD])


def press_distance(env, button: Button) -> float:
    """Metres from the fingertips (centre, bottom) to `button`'s press point.

    It shrinks as the arm approaches the button and keeps shrinking while
    the fingers push the cap down; zero means just pressed.
    """
    fingertips = env.ee_position() - np.array([0.0, 0.0, env.arm.fingertip_below_ee])
    return float(np.linalg.norm(fingertips - button.press_point()))
