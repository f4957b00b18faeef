"""LeRobot robots and teleoperators built by type name from `key=value` settings of their config,
as LeRobot's own `--robot.type=... --robot.port=...` does: LeRobot's devices, installed plug-ins and
the fleet's sim arm (fleet_lerobot/sim_arm.py) alike.

Apart from fleet_lerobot/shim.py because the sim arm is built on the shim: the shim may not
import the sim arm back.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any

from fleet_lerobot import shim
from fleet_lerobot.shim import Robot, RobotConfig, Teleoperator, TeleoperatorConfig


def load_plugins() -> None:
    """Every device LeRobot knows (shim.load_lerobot_devices) and the fleet's own."""
    shim.load_lerobot_devices()
    import fleet_lerobot.sim_arm  # noqa: F401  (registers fleet_sim_arm, fleet_expert and fleet_leader)


def build_robot(type_name: str, args: dict[str, Any] | None = None) -> Robot:
    """Any registered LeRobot robot from its type ("so101_follower", "koch_follower",
    "fleet_sim_arm", ...) and `key=value` settings of its config."""
    config = _config(RobotConfig, "robot", type_name, dict(args or {}))
    return _build(shim.make_robot_from_config, config, "robot", type_name)


def build_teleoperator(type_name: str, args: dict[str, Any] | None = None) -> Teleoperator:
    config = _config(TeleoperatorConfig, "teleoperator", type_name, dict(args or {}))
    return _build(shim.make_teleoperator_from_config, config, "teleoperator", type_name)


def _config(base, kind: str, type_name: str, args: dict[str, Any]):
    load_plugins()
    try:
        cls = base.get_choice_class(type_name)
    except (KeyError, ValueError):
        known = ", ".join(sorted(base.get_known_choices()))
        raise ValueError(f"unknown LeRobot {kind} type {type_name!r}; registered: {known}") from None
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    values = {}
    for key, text in args.items():
        if key not in fields:
            raise ValueError(f"LeRobot {kind} {type_name!r} has no setting {key!r}; it has {', '.join(sorted(fields))}")
        values[key] = _parse(text, hints.get(key))
        if key == "cameras" and isinstance(values[key], dict):
            values[key] = {name: shim.camera(name, spec) for name, spec in values[key].items()}
    try:
        return cls(**values)
    except TypeError as error:
        raise ValueError(f"LeRobot {kind} {type_name!r}: {error}") from None


def _parse(text, hint) -> Any:
    """A `key=value` setting's value, by the field's type: text for str fields (also optional
    ones: `id=1` stays "1"), a Path for paths, else JSON where it parses (numbers, booleans,
    lists, objects) and the text itself where it does not. Values that are not strings (from
    Python callers, a TOML file) pass through."""
    if not isinstance(text, str):
        return text
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)  # Optional[str], str | None
    options = set(typing.get_args(hint)) if union else {hint}
    if str in options:
        return text
    if Path in options:
        return Path(text)
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _build(make, config, kind: str, type_name: str):
    try:
        return make(config)
    except ImportError as error:
        raise ValueError(f"LeRobot {kind} {type_name!r} needs {error.name or error}, which is not installed "
                         "(LeRobot's extras: feetech for SO-100/101, dynamixel for Koch, gamepad for gamepads)") from None
