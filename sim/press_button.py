"""Task "press_button": press the orange button.

One spring-loaded button (sim/buttons.py: dark base, 5 cm orange cap)
is placed at random in [-0.17, 0.17]^2 m; success when its cap is pushed
down past the press threshold (8 mm of its 12 mm travel).  The arm presses
it with the closed fingers.
"""

from __future__ import annotations

from typing import Any

import mujoco

from sim.buttons import Button, button_xml, press_distance
from sim.experts import PressButtonExpert
from sim.tabletop_env import TabletopArmEnv

BUTTON_NAME = "button"
CAP_RGBA = "0.95 0.45 0.05 1"

# The button centre is sampled in this square (metres): its base stays well
# inside the rim and the arm can centre the fingers on it from any side.
SPAWN_HALF_EXTENT = 0.17


class PressButtonEnv(TabletopArmEnv):
    task_name = "press_button"
    instruction = "press the orange button"
    default_max_steps = 50

    def __init__(self, **kwargs):
        """Keyword arguments as for `TabletopArmEnv` (image_size, max_steps, variant, render_mode)."""
        super().__init__(**kwargs)
        self.button = Button(self.model, self.data, BUTTON_NAME)
        # Tuple of every button in the scene, for experts that must avoid them.
        self.buttons = (self.button,)

    def _objects_xml(self) -> str:
        return button_xml(BUTTON_NAME, CAP_RGBA)

    def _randomise_objects(self) -> None:
        self.place_button(self.np_random.uniform(-SPAWN_HALF_EXTENT, SPAWN_HALF_EXTENT, size=2))

    # ---- scene editing -------------------------------------------------------------

    def place_button(self, xy) -> None:
        """Move the button centre to `xy` (metres), released."""
        self.button.place(xy)
        mujoco.mj_forward(self.model, self.data)

    # ---- task definition ---------------------------------------------------------

    def task_distance(self) -> float:
        """Metres from the fingertips to the point where the button counts as pressed."""
        return press_distance(self, self.button)

    def _is_success(self) -> bool:
        return self.button.is_pressed()

    def _task_info(self) -> dict[str, Any]:
        return {"button_depression": self.button.depression()}

    def expert(self, noise: float = 0.0, seed: int | None = None) -> PressButtonExpert:
        return PressButtonExpert(noise=noise, seed=seed)
