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

from sim.experts.base import ScriptedExpert
from sim.experts.push import PushCubeExpert
from sim.experts.tracking import CuedButtonExpert, PickPlaceExpert, PressButtonExpert, ReachExpert, TrackingExpert

__all__ = ["CuedButtonExpert", "PickPlaceExpert", "PressButtonExpert", "PushCubeExpert", "ReachExpert",
           "ScriptedExpert", "TrackingExpert"]
