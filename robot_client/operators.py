"""Imperfect simulated operators: how a scripted expert is turned into a believable person.

A scripted expert is a perfect, tireless, instantaneous operator. Human-in-the-loop results
measured with one are optimistic: interventions look cleaner and arrive sooner than any person's.
`OperatorModel` describes three ways a person falls short, and `OperatorBehaviour` applies them
to any expert action, so it works for the sim tasks and for bring-your-own environments alike
(nothing here knows what the action dimensions mean beyond `setpoint_dims`).

Reaction delay (`reaction_delay_steps`, k)
    When a takeover begins the person first has to notice, look at the scene and get a hand on
    the controls. For the first k ticks of a takeover they *hold still*: every motion dimension
    is 0 and every set-point dimension (`setpoint_dims`, e.g. a gripper opening) repeats the
    command the robot was last given, so the arm neither moves nor drops or grabs anything. From
    tick k on they act on the observation of that tick, the latest frame: they have been watching
    the scene during the delay, so the delay is a late start, not a permanently stale picture.
    (A stateless expert that reads privileged simulator state cannot be fed a stale state
    generically anyway.) The delay applies to takeovers only: a demonstration starts with the
    person already at the controls.

Suboptimality (`suboptimality`, s in [0, 1])
    People move more hesitantly and less directly than a planner. Motion dimensions are scaled
    by (1 - s) and a slowly varying Ornstein-Uhlenbeck perturbation of standard deviation s is
    added (correlation time `wander_steps` ticks), so the arm wanders off the ideal path for a
    while and comes back, instead of jittering. Set-point dimensions are left alone (a gripper
    is opened or closed, not wandered).

Noise (`noise_std`)
    Independent Gaussian noise on every dimension of every acting tick (hand tremor, imprecise
    input devices). Hold ticks are noise-free: a person holding still does not move the robot.

Every action is clipped to the fleet's action range [-1, 1] (the policy's output range).

The defaults are mildly imperfect: on push_cube, the operator driving whole episodes from the
first tick (reaction delay included) still succeeds on 20/20 seeds (see README). A perfect
operator is `OperatorModel.perfect()`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

ACTION_LOW, ACTION_HIGH = -1.0, 1.0  # the fleet's action range


@dataclass(frozen=True)
class OperatorModel:
    """How far a simulated operator falls short of its expert (see the module docstring)."""

    noise_std: float = 0.05           # Gaussian std per dimension, in action units
    reaction_delay_steps: int = 2     # hold-still ticks at the start of a takeover (0.2 s at 10 Hz)
    suboptimality: float = 0.1        # motion scaled by (1 - s), plus wander of std s
    seed: int | None = None           # for the operator's noise and wander
    wander_steps: float = 10.0        # correlation time of the wander, in ticks

    def __post_init__(self):
        if not self.noise_std >= 0:
            raise ValueError(f"operator noise_std must be >= 0, got {self.noise_std}")
        if int(self.reaction_delay_steps) != self.reaction_delay_steps or self.reaction_delay_steps < 0:
            raise ValueError(f"operator reaction_delay_steps must be a whole number >= 0, got {self.reaction_delay_steps}")
        if not 0.0 <= self.suboptimality <= 1.0:
            raise ValueError(f"operator suboptimality must be in [0, 1], got {self.suboptimality}")
        if not self.wander_steps > 0:
            raise ValueError(f"operator wander_steps must be > 0, got {self.wander_steps}")

    @classmethod
    def perfect(cls, seed: int | None = None) -> "OperatorModel":
        """The expert itself: no delay, no noise, no wander."""
        return cls(noise_std=0.0, reaction_delay_steps=0, suboptimality=0.0, seed=seed)


def hold_action(action_dim: int, setpoint_dims: Sequence[int], last_command: np.ndarray) -> np.ndarray:
    """The action that keeps the robot as it is: no motion, set-points as last commanded."""
    action = np.zeros(action_dim, np.float32)
    dims = list(setpoint_dims)
    action[dims] = np.asarray(last_command, np.float32)[dims]
    return action


class OperatorBehaviour:
    """One simulated person applying an `OperatorModel`: reaction countdown, wander and noise.

    Call `start` when the person takes control, then `act` (or `perturb`) once per tick they are
    in control: the wander advances one tick per call.
    """

    def __init__(self, model: OperatorModel, action_dim: int, setpoint_dims: Sequence[int] = ()):
        if any(not 0 <= d < action_dim for d in setpoint_dims):
            raise ValueError(f"set-point dimensions {tuple(setpoint_dims)} outside an action of size {action_dim}")
        self.model = model
        self.action_dim = action_dim
        self.setpoint_dims = tuple(setpoint_dims)
        self._motion_dims = np.array([d for d in range(action_dim) if d not in self.setpoint_dims], dtype=int)
        self._rng = np.random.default_rng(model.seed)
        self._decay = float(np.exp(-1.0 / model.wander_steps))  # OU step over one tick
        self._wander = np.zeros(len(self._motion_dims))
        self.reaction_left = 0
        self.holding = False  # the last action was a hold-still tick of the reaction delay

    def start(self, react: bool) -> None:
        """The person takes control: of a running robot (`react`, a takeover) or from the start."""
        self.reaction_left = self.model.reaction_delay_steps if react else 0
        # Start the wander from its stationary distribution: a person is already off-ideal.
        self._wander = self._rng.standard_normal(len(self._motion_dims))

    def act(self, expert_action: Callable[[], np.ndarray], hold: Callable[[], np.ndarray]) -> np.ndarray:
        """This tick's action: `hold()` while still reacting, then the perturbed `expert_action()`.

        Both are callables so that only the one needed is computed.
        """
        self.holding = self.reaction_left > 0
        if self.holding:
            self.reaction_left -= 1
            return np.asarray(hold(), np.float32)
        return self.perturb(expert_action())

    def perturb(self, expert_action: np.ndarray) -> np.ndarray:
        """The expert's action as this person carries it out (suboptimality, then noise)."""
        action = np.array(expert_action, dtype=np.float64).reshape(self.action_dim)
        s = self.model.suboptimality
        if s > 0 and len(self._motion_dims):
            kick = np.sqrt(1.0 - self._decay ** 2) * self._rng.standard_normal(len(self._motion_dims))
            self._wander = self._decay * self._wander + kick
            action[self._motion_dims] = (1.0 - s) * action[self._motion_dims] + s * self._wander
        if self.model.noise_std > 0:
            action += self._rng.normal(0.0, self.model.noise_std, self.action_dim)
        return np.clip(action, ACTION_LOW, ACTION_HIGH).astype(np.float32)
