"""core/registry.py: plug-ins by name, their config dataclasses set from dotted flags and TOML."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from core.registry import OTHER_SETTINGS, ConfigError, Registry, choose, read_config_file, split_dotted


@dataclass
class Loss:
    beta: float = 0.1
    epochs: int = 4


@dataclass
class WidgetConfig:
    top_fraction: float = 0.3
    tasks: tuple[str, ...] = ("reach",)
    label: str | None = None
    fast: bool = False
    loss: Loss = field(default_factory=Loss)

    def __post_init__(self):
        if not 0 < self.top_fraction <= 1:
            raise ValueError(f"top_fraction must be in (0, 1], got {self.top_fraction}")


WIDGETS = Registry("widget")


@WIDGETS.register("plain")
class Plain:
    """Takes nothing."""


@WIDGETS.register("tuned", WidgetConfig)
class Tuned:
    """A widget with settings.

    More text that the listing leaves out."""

    def __init__(self, config: WidgetConfig, scale: int = 1):
        self.config, self.scale = config, scale


def test_dotted_flags_reach_the_config_by_type():
    rest, flags = split_dotted(["--widget", "tuned", "--widget.top-fraction", "0.5", "--widget.tasks=a,b",
                                "--widget.loss.beta", "0.2", "--widget.fast", "yes", "--other", "1"], ("widget",))
    assert rest == ["--widget", "tuned", "--other", "1"]
    name, config = choose(WIDGETS, "tuned", flags["widget"])
    assert name == "tuned"
    assert config == WidgetConfig(top_fraction=0.5, tasks=("a", "b"), fast=True, loss=Loss(beta=0.2))
    built = WIDGETS.build("tuned", flags["widget"], scale=3)
    assert isinstance(built, Tuned) and built.scale == 3 and built.config.loss.beta == 0.2
    assert isinstance(WIDGETS.build("plain"), Plain)


def test_a_file_sets_the_same_fields_and_flags_win(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[widget]\nname = "tuned"\ntop_fraction = 0.25\nlabel = "x"\n[widget.loss]\nepochs = 2\n')
    file = read_config_file(path)
    name, config = choose(WIDGETS, None, {"top_fraction": "0.75"}, file)
    assert name == "tuned" and config.top_fraction == 0.75 and config.label == "x" and config.loss.epochs == 2
    # Another plug-in named on the command line does not take the file's settings.
    assert choose(WIDGETS, "plain", {}, file) == ("plain", None)


@pytest.mark.parametrize("settings, message", [
    ({"top_fractoin": "0.5"}, "has no setting 'top_fractoin'; its settings: top-fraction, tasks, label, fast"),
    ({"top_fraction": "half"}, "'half' is not a float"),
    ({"top_fraction": "2"}, "top_fraction must be in (0, 1]"),
    ({"loss.epochs": "2.5"}, "'2.5' is not a int"),
    ({"fast": "maybe"}, "not a boolean"),
])
def test_bad_settings_name_what_is_wrong(settings, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        WIDGETS.config("tuned", settings)


def test_unknown_names_and_settings_of_a_plain_plugin_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="unknown widget 'nope'; registered: plain, tuned"):
        WIDGETS.get("nope")
    with pytest.raises(ConfigError, match="takes no settings"):
        WIDGETS.config("plain", {"x": "1"})
    with pytest.raises(ConfigError, match="needs a value"):
        split_dotted(["--widget.label"], ("widget",))
    with pytest.raises(ValueError, match="registered twice"):
        WIDGETS.register("plain")(Tuned)
    bad = tmp_path / "bad.toml"
    bad.write_text("[widget\n")
    with pytest.raises(ConfigError, match="config file"):
        read_config_file(bad)


def test_the_listing_shows_every_setting_with_its_default():
    text = WIDGETS.describe()
    assert "widget plain: Takes nothing." in text
    assert "widget tuned: A widget with settings." in text and "More text" not in text
    assert "--widget.loss.beta 0.1  (float)" in text and "--widget.tasks ('reach',)" in text


@dataclass
class DeviceConfig:
    type: str = ""
    rate: float = 10.0
    device: dict = field(default_factory=dict, metadata=OTHER_SETTINGS)


@dataclass
class TunedDefaults:
    loss: Loss = field(default_factory=lambda: Loss(beta=0.5))


DEVICES = Registry("widget")  # apart from WIDGETS, whose listing the tests above pin
DEVICES.register("device", DeviceConfig)(lambda config: config)
DEVICES.register("tuned-defaults", TunedDefaults)(lambda config: config)


def test_other_settings_pass_through_as_given(tmp_path):
    """A plug-in that hands settings on to a config it does not know (a LeRobot robot's)."""
    _, flags = split_dotted(["--widget.type", "arm", "--widget.port", "/dev/ttyACM0", "--widget.rate", "5",
                             "--widget.device.rate", "7", "--widget.max-relative-target", "3"], ("widget",))
    config = DEVICES.config("device", flags["widget"])
    assert config == DeviceConfig(type="arm", rate=5.0, device={"port": "/dev/ttyACM0", "rate": "7",
                                                                "max_relative_target": "3"})
    path = tmp_path / "run.toml"
    path.write_text('[widget]\nname = "device"\ntype = "arm"\n[widget.device]\ncameras = {front = {fps = 30}}\n')
    assert choose(DEVICES, None, {}, read_config_file(path))[1].device == {"cameras": {"front": {"fps": 30}}}
    with pytest.raises(ConfigError, match="is a group"):
        DEVICES.config("device", {"device": "x"})
    assert "--widget.KEY VALUE  (any other setting: into device)" in DEVICES.describe()


def test_the_listing_shows_a_groups_own_defaults():
    assert "--widget.loss.beta 0.5  (float)" in DEVICES.describe().split("widget tuned-defaults")[1]
