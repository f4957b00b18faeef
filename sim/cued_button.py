"""Task "cued_button": a memory task.  Press the button on the side where the lamp lit up.

Two identical teal buttons (sim/buttons.py) stand on the left (x < 0, image
left in the front camera) and right (x > 0) halves of the table, at random
points at least MIN_BUTTON_SEPARATION apart.  A lamp at the back of the
table has a lens on each side.  For the first CUE_STEPS control steps (1 s)
the lens on the side of the cued button is lit, and the arm is frozen in
its home pose with the fingers closed (actions are ignored); then both
lenses go dark for good, and the policy must remember the cue.

Pressing the cued button is success; pressing the other one ends the
episode as a failure (terminated, is_success False).

The cue (`env.cue`: 0 = left, 1 = right; privileged) is drawn from the
seed after the layout, so one seed gives the same layout for both cues, and
`reset(seed=..., options={"cue": 0 or 1})` overrides it.  Since the lamp is
visual only and the frozen arm ignores actions, once the cue phase is over
the images and state of a seed are the same whatever the cue.
info["cue_visible"] says whether the lamp still shows the cue.
"""

from __future__ import annotations

from typing import Any

import mujoco
import numpy as np

from sim.buttons import Button, button_xml, press_distance
from sim.experts import CuedButtonExpert
from sim.tabletop_env import TabletopArmEnv

# Cue phase length (control steps): observations from reset up to step
# CUE_STEPS - 1 show the cue; the first action obeyed is step CUE_STEPS + 1's.
CUE_STEPS = 10
LEFT, RIGHT = 0, 1
SIDE_NAMES = ("left", "right")  # indexed by cue
# Action applied during the cue phase: stay put with the fingers closed.
HOLD_ACTION = np.array([0.0, 0.0, 0.0, 1.0])

BUTTON_NAMES = tuple(f"button_{side}" for side in SIDE_NAMES)
CAP_RGBA = "0.1 0.65 0.65 1"

# Button centres (metres): |x| in BUTTON_X_RANGE on each side, y in
# BUTTON_Y_RANGE (clear of the lamp), at least MIN_BUTTON_SEPARATION apart.
BUTTON_X_RANGE = (0.05, 0.18)
BUTTON_Y_RANGE = (-0.17, 0.1)
MIN_BUTTON_SEPARATION = 0.14

# Lamp: a dark housing at the back of the table with a square lens on each
# side (boxes render much faster than cylinders), wide enough apart that the
# arm's mast (at home) hides neither in the front camera; visual only (the
# arm may pass through it; it is clear of the buttons' area).  Each lens has
# a lit cap just above it, shown by making it opaque and hidden by making it
# fully transparent (MuJoCo does not draw geoms with alpha 0), so a
# variant's colour changes apply to both states.
# The lit cap is a 4 cm tall glowing block on a 6 cm lens, so the front camera sees its face as
# well as its top (~140 of 9216 pixels at 96 px). A flat 4 cm lens covered ~15 of the 2304
# pixels a 48 px encoder sees: too few for a small CNN trained on 100 demonstrations to pick
# up (its frame embeddings did not move with the cue).
LAMP_POSITION = (0.0, 0.21)
LAMP_HOUSING_HALF_EXTENTS = (0.1, 0.03, 0.01)
LAMP_HOUSING_RGBA = "0.12 0.12 0.14 1"
LENS_OFFSET_X = 0.065
LENS_HALF_SIZE = 0.03
LENS_HALF_HEIGHT = 0.003
LENS_DARK_RGBA = "0.35 0.35 0.35 1"
LENS_LIT_RGBA = "1 0.95 0.35 1"
LIT_CAP_HALF_HEIGHT = 0.02


class CuedButtonEnv(TabletopArmEnv):
    task_name = "cued_button"
    instruction = "remember which side the lamp lit up and press the button on that side"
    default_max_steps = CUE_STEPS + 50

    cue_steps = CUE_STEPS

    def __init__(self, **kwargs):
        """Keyword arguments as for `TabletopArmEnv` (image_size, max_steps, variant, render_mode)."""
        super().__init__(**kwargs)
        self.buttons = tuple(Button(self.model, self.data, name) for name in BUTTON_NAMES)
        self._lit_caps = [self._element_id(mujoco.mjtObj.mjOBJ_GEOM, f"lens_{side}_lit") for side in SIDE_NAMES]
        self.cue = LEFT
        self._cue_override: int | None = None

    def _objects_xml(self) -> str:
        buttons = "".join(button_xml(name, CAP_RGBA) for name in BUTTON_NAMES)
        hx, hy, hz = LAMP_HOUSING_HALF_EXTENTS
        lens_top = 2 * hz + 2 * LENS_HALF_HEIGHT
        lenses = "".join(
            f"""
      <geom name="lens_{side}" type="box" pos="{sign * LENS_OFFSET_X} 0 {2 * hz + LENS_HALF_HEIGHT}"
            size="{LENS_HALF_SIZE} {LENS_HALF_SIZE} {LENS_HALF_HEIGHT}" rgba="{LENS_DARK_RGBA}"
            contype="0" conaffinity="0"/>
      <geom name="lens_{side}_lit" type="box" pos="{sign * LENS_OFFSET_X} 0 {lens_top + LIT_CAP_HALF_HEIGHT}"
            size="{LENS_HALF_SIZE} {LENS_HALF_SIZE} {LIT_CAP_HALF_HEIGHT}" rgba="{LENS_LIT_RGBA}"
            contype="0" conaffinity="0"/>"""
            for side, sign in zip(SIDE_NAMES, (-1, 1))
        )
        return f"""{buttons}
    <body name="lamp" pos="{LAMP_POSITION[0]} {LAMP_POSITION[1]} 0">
      <geom name="lamp_housing" type="box" pos="0 0 {hz}" size="{hx} {hy} {hz}"
            rgba="{LAMP_HOUSING_RGBA}" contype="0" conaffinity="0"/>{lenses}
    </body>"""

    # ---- gymnasium API -------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """`options={"cue": 0 or 1}` overrides the cue drawn from the seed."""
        cue = (options or {}).get("cue")
        if cue not in (None, LEFT, RIGHT):
            raise ValueError(f"cue must be {LEFT} (left) or {RIGHT} (right), got {cue!r}")
        self._cue_override = cue
        return super().reset(seed=seed, options=options)

    def step(self, action):
        if self.cue_visible:
            action = HOLD_ACTION
        obs, reward, terminated, truncated, info = super().step(action)
        if self.wrong_button_pressed():
            terminated, truncated = True, False
        return obs, reward, terminated, truncated, info

    def _randomise_objects(self) -> None:
        rng = self.np_random
        low = [BUTTON_X_RANGE[0], BUTTON_Y_RANGE[0]]
        high = [BUTTON_X_RANGE[1], BUTTON_Y_RANGE[1]]
        # Rejection sampling; about one draw in three is accepted.
        while True:
            left = rng.uniform(low, high) * [-1.0, 1.0]
            right = rng.uniform(low, high)
            if np.linalg.norm(right - left) >= MIN_BUTTON_SEPARATION:
                break
        self.place_buttons(left, right)
        # Drawn last so the layout of a seed does not depend on the cue.
        drawn_cue = int(rng.integers(2))
        self.cue = drawn_cue if self._cue_override is None else self._cue_override

    # ---- scene editing -------------------------------------------------------------

    def place_buttons(self, left_xy, right_xy) -> None:
        """Move the left and right button centres (metres), both released."""
        for button, xy in zip(self.buttons, (left_xy, right_xy)):
            button.place(xy)
        mujoco.mj_forward(self.model, self.data)

    # ---- privileged state --------------------------------------------------

    @property
    def cue_visible(self) -> bool:
        return self.step_count < CUE_STEPS

    @property
    def cued_button(self) -> Button:
        return self.buttons[self.cue]

    def wrong_button_pressed(self) -> bool:
        return self.buttons[1 - self.cue].is_pressed()

    def task_distance(self) -> float:
        """Metres from the fingertips to the point where the cued button counts as pressed."""
        return press_distance(self, self.cued_button)

    # ---- task definition ---------------------------------------------------------

    def _update_visuals(self) -> None:
        # Light the lamp for the frames of the cue phase only.
        for side, geom in enumerate(self._lit_caps):
            self.model.geom_rgba[geom, 3] = 1.0 if self.cue_visible and side == self.cue else 0.0

    def _is_success(self) -> bool:
        return self.cued_button.is_pressed() and not self.wrong_button_pressed()

    def _task_info(self) -> dict[str, Any]:
        return {"cue_visible": self.cue_visible, "wrong_button_pressed": self.wrong_button_pressed()}

    def expert(self, noise: float = 0.0, seed: int | None = None) -> CuedButtonExpert:
        return CuedButtonExpert(noise=noise, seed=seed)
