"""The one module that imports LeRobot. LeRobot's API moves between releases (module paths,
event names, dataset arguments); whatever moves is absorbed here, so the rest of fleet_lerobot
reads the same on every release it supports (tested: 0.4.4, the newest for Python 3.11).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import types
import typing
from pathlib import Path
from typing import Any

try:
    import lerobot
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    from lerobot.robots import Robot, RobotConfig, make_robot_from_config
    from lerobot.teleoperators.config import TeleoperatorConfig
    from lerobot.teleoperators.teleoperator import Teleoperator
    from lerobot.teleoperators.utils import TeleopEvents, make_teleoperator_from_config
except ImportError as error:  # pragma: no cover - the main environment has no LeRobot
    raise ImportError(f"fleet_lerobot needs LeRobot ({error}); set it up with `make setup-lerobot` and run from "
                      ".venv-lerobot") from error

VERSION = getattr(lerobot, "__version__", "unknown")
log = logging.getLogger("fleetlearn.lerobot")

__all__ = ["VERSION", "LeRobotDataset", "Robot", "RobotConfig", "Teleoperator", "TeleoperatorConfig", "TeleopEvents",
           "build_robot", "build_teleoperator", "teleop_events", "load_plugins"]


def load_plugins() -> None:
    """Registers every robot, teleoperator and camera LeRobot ships (a config registers when its
    module is imported; LeRobot's own scripts import a fixed list, which moves between releases,
    so every subpackage of lerobot.robots, .teleoperators and .cameras is imported here), installed
    third-party devices (packages named lerobot_robot_* and the like) and this package's sim arm."""
    import importlib
    import pkgutil

    import lerobot.cameras
    import lerobot.robots
    import lerobot.teleoperators

    for package in (lerobot.robots, lerobot.teleoperators, lerobot.cameras):
        for module in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
            if module.ispkg:
                try:
                    importlib.import_module(module.name)
                except Exception as error:  # noqa: BLE001 - one broken device must not hide the others
                    log.debug("LeRobot device module %s not loaded: %s", module.name, error)
    try:
        from lerobot.utils.import_utils import register_third_party_plugins
    except ImportError:  # older releases: no plugin discovery
        register_third_party_plugins = None
    if register_third_party_plugins is not None:
        register_third_party_plugins()
    import fleet_lerobot.sim_arm  # noqa: F401  (registers fleet_sim_arm and fleet_expert)


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
            values[key] = {name: _camera(name, spec) for name, spec in values[key].items()}
    try:
        return cls(**values)
    except TypeError as error:
        raise ValueError(f"LeRobot {kind} {type_name!r}: {error}") from None


def _parse(text, hint) -> Any:
    """A `key=value` setting's value, by the field's type: text for str fields (also optional
    ones: `id=1` stays "1"), a Path for paths, else JSON where it parses (numbers, booleans,
    lists, objects) and the text itself where it does not. Values that are not strings (from
    Python callers) pass through."""
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


def _camera(name: str, spec):
    """One camera of a robot's `cameras={"front": {"type": "opencv", ...}}` setting."""
    from lerobot.cameras import CameraConfig

    if not isinstance(spec, dict) or "type" not in spec:
        return spec
    spec = dict(spec)
    kind = spec.pop("type")
    try:
        return CameraConfig.get_choice_class(kind)(**spec)
    except (KeyError, ValueError, TypeError) as error:
        raise ValueError(f"camera {name!r}: {error}") from None


def build_robot(type_name: str, args: dict[str, Any] | None = None) -> Robot:
    """Any registered LeRobot robot from its type ("so101_follower", "koch_follower",
    "fleet_sim_arm", ...) and `key=value` settings of its config."""
    config = _config(RobotConfig, "robot", type_name, dict(args or {}))
    return _build(make_robot_from_config, config, "robot", type_name)


def build_teleoperator(type_name: str, args: dict[str, Any] | None = None) -> Teleoperator:
    config = _config(TeleoperatorConfig, "teleoperator", type_name, dict(args or {}))
    return _build(make_teleoperator_from_config, config, "teleoperator", type_name)


def _build(make, config, kind: str, type_name: str):
    try:
        return make(config)
    except ImportError as error:
        raise ValueError(f"LeRobot {kind} {type_name!r} needs {error.name or error}, which is not installed "
                         "(LeRobot's extras: feetech for SO-100/101, dynamixel for Koch, gamepad for gamepads)") from None


@contextlib.contextmanager
def video_quality(crf: int, pix_fmt: str = "yuv420p"):
    """Encode LeRobotDataset videos at this constant rate factor and pixel format. LeRobot 0.4.x
    fixes them at CRF 30, 4:2:0 (about 32 dB PSNR on the fleet's 96 px frames); the fleet's export
    wants frames a policy can train on (>= 35 dB), so it changes them for the duration of an
    export (fleet_lerobot/dataset.py has the measurements)."""
    from lerobot.datasets import lerobot_dataset

    original = lerobot_dataset.encode_video_frames
    lerobot_dataset.encode_video_frames = functools.partial(original, crf=crf, pix_fmt=pix_fmt)
    try:
        yield
    finally:
        lerobot_dataset.encode_video_frames = original


def teleop_events(teleop: Teleoperator) -> dict[str, bool] | None:
    """The teleoperator's own events as plain strings ("is_intervention", "terminate_episode",
    "success", "rerecord_episode"), or None for one without events (leader arms in 0.4.x). LeRobot
    0.4.x keys them by the TeleopEvents enum; later releases may use the strings."""
    get = getattr(teleop, "get_teleop_events", None)
    if get is None:
        return None
    out = {}
    for key, value in get().items():
        name = key.value if isinstance(key, TeleopEvents) else str(key)
        out[name] = bool(value)
    return out
