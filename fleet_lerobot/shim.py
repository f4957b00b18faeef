"""The one module that imports LeRobot. LeRobot's API moves between releases (module paths,
event names, dataset arguments); whatever moves is absorbed here, so the rest of fleet_lerobot
reads the same on every release it supports (tested: 0.4.4, the newest for Python 3.11).
Building devices by type, the fleet's own sim arm included, is fleet_lerobot/devices.py's.
"""

from __future__ import annotations

import contextlib
import functools
import logging

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
           "camera", "load_lerobot_devices", "make_robot_from_config", "make_teleoperator_from_config",
           "teleop_events", "video_quality"]


def load_lerobot_devices() -> None:
    """Registers every robot, teleoperator and camera LeRobot ships (a config registers when its
    module is imported; LeRobot's own scripts import a fixed list, which moves between releases,
    so every subpackage of lerobot.robots, .teleoperators and .cameras is imported here) and the
    installed third-party devices (packages named lerobot_robot_* and the like)."""
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


def camera(name: str, spec):
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
