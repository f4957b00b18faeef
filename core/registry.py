"""Plug-ins chosen by name, each with a config dataclass: the one configuration system.

A kind of plug-in (drivers, teleop sources, algorithms, policies) is a `Registry`. A plug-in is
registered once, under a name, with the dataclass holding every number it takes:

    ALGORITHMS = Registry("algorithm")

    @ALGORITHMS.register("recap", RecapConfig)
    class Recap(Algorithm): ...

The command line chooses it by name and sets its fields with dotted flags,

    fleet learner --algorithm recap --algorithm.top-fraction 0.3

and a config file sets the same fields (TOML, one table per kind):

    [algorithm]
    name = "recap"
    top_fraction = 0.3

Flags override the file. Values from the command line are strings, converted by the field's
type (int, float, str, bool, tuples and lists of those, nested dataclasses by a further dot:
`--algorithm.loss.beta 0.2`); a field that does not exist is an error that lists the fields.

A plug-in that passes settings on to a config it does not know (a LeRobot robot's) marks one
`dict` field with `OTHER_SETTINGS`: every setting that is not a field of its own, and every
`--KIND.FIELD.KEY`, lands there as given.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")

# field(default_factory=dict, metadata=OTHER_SETTINGS): see the module docstring.
OTHER_SETTINGS = {"other_settings": True}


class ConfigError(ValueError):
    """A plug-in name or setting that does not exist, or a value of the wrong type."""


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    factory: T                 # the class (or function) that builds the plug-in
    config: type | None        # its config dataclass, or None when it takes no settings
    help: str = ""


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, config: type | None = None, help: str = "") -> Callable[[T], T]:
        """Decorator: registers the decorated class or function under `name`."""
        if config is not None and not dataclasses.is_dataclass(config):
            raise TypeError(f"{self.kind} {name!r}: its config must be a dataclass, got {config!r}")

        def add(factory: T) -> T:
            if name in self._entries and self._entries[name].factory is not factory:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            text = help or ((getattr(factory, "__doc__", None) or "").strip().split("\n\n")[0].replace("\n", " "))
            self._entries[name] = Entry(name, factory, config, text)
            return factory

        return add

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def get(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(f"unknown {self.kind} {name!r}; registered: {', '.join(self.names())}") from None

    def config(self, name: str, settings: dict[str, Any] | None = None) -> Any:
        """The config dataclass of `name`, with `settings` (field -> value, dotted keys for nested
        dataclasses, strings converted by type) applied over its defaults."""
        entry = self.get(name)
        if entry.config is None:
            if settings:
                raise ConfigError(f"{self.kind} {name!r} takes no settings, got {', '.join(sorted(settings))}")
            return None
        return build_config(entry.config, settings or {}, f"{self.kind} {name!r}")

    def build(self, name: str, settings: dict[str, Any] | None = None, *args, **kwargs):
        """The plug-in itself: factory(config, *args, **kwargs), or factory(*args, **kwargs) when it
        takes no config."""
        return self.make(name, self.config(name, settings), *args, **kwargs)

    def make(self, name: str, config: Any, *args, **kwargs):
        """The plug-in from a config already built (`choose`'s): factory(config, *args, **kwargs),
        or factory(*args, **kwargs) when it takes no config."""
        entry = self.get(name)
        return entry.factory(*args, **kwargs) if entry.config is None else entry.factory(config, *args, **kwargs)

    def describe(self) -> str:
        """Every plug-in of this kind with its settings and defaults (`fleet plugins`)."""
        lines = []
        for name in self.names():
            entry = self._entries[name]
            lines.append(f"{self.kind} {name}: {entry.help}" if entry.help else f"{self.kind} {name}")
            if entry.config is not None:
                for field, value, kind in _fields(entry.config):
                    lines.append(f"    --{self.kind}.{field.replace('_', '-')} {value!r}  ({kind})")
                other = _other_settings(entry.config)
                if other is not None:
                    lines.append(f"    --{self.kind}.KEY VALUE  (any other setting: into {other})")
        return "\n".join(lines)


def _fields(config: type, prefix: str = "", defaults: Any = None):
    """(dotted name, default, type name) of every setting; `defaults` is the instance a nested
    group's defaults come from (its outer field's default_factory may differ from its class's)."""
    hints = typing.get_type_hints(config)
    for field in dataclasses.fields(config):
        if not field.init or field.metadata.get("other_settings"):
            continue
        kind = hints[field.name]
        if defaults is not None:
            default = getattr(defaults, field.name)
        else:
            default = (field.default if field.default is not dataclasses.MISSING else
                       field.default_factory() if field.default_factory is not dataclasses.MISSING else None)
        if dataclasses.is_dataclass(kind):
            yield from _fields(kind, f"{prefix}{field.name}.", default)
            continue
        yield f"{prefix}{field.name}", default, _type_name(kind)


def _other_settings(config: type) -> str | None:
    """The name of `config`'s OTHER_SETTINGS field, or None."""
    return next((f.name for f in dataclasses.fields(config) if f.metadata.get("other_settings")), None)


def _type_name(kind) -> str:
    return getattr(kind, "__name__", None) or str(kind).replace("typing.", "")


def build_config(config: type, settings: dict[str, Any], what: str):
    """An instance of dataclass `config` with `settings` applied (see `Registry.config`)."""
    hints = typing.get_type_hints(config)
    fields = {f.name: f for f in dataclasses.fields(config) if f.init}
    other = _other_settings(config)
    direct: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for key, value in settings.items():
        head, dot, rest = key.replace("-", "_").partition(".")
        if other is not None and head == other:
            if dot:
                direct.setdefault(other, {})[rest] = value
            elif isinstance(value, dict):  # a TOML table
                direct.setdefault(other, {}).update(value)
            else:
                raise ConfigError(f"{what} setting {other!r} is a group: give {other}.KEY VALUE")
            continue
        if other is not None and head not in fields:
            direct.setdefault(other, {})[key.replace("-", "_")] = value
            continue
        if head not in fields:
            known = ", ".join(f.replace("_", "-") for f, *_ in _fields(config))
            raise ConfigError(f"{what} has no setting {key!r}; its settings: {known}")
        if dot or (isinstance(value, dict) and dataclasses.is_dataclass(hints[head])):
            nested.setdefault(head, {}).update({rest: value} if dot else value)
        else:
            direct[head] = _convert(value, hints[head], f"{what} setting {head!r}")
    for head, inner in nested.items():
        kind = hints[head]
        if not dataclasses.is_dataclass(kind):
            raise ConfigError(f"{what} setting {head!r} is not a group of settings")
        direct[head] = build_config(kind, inner, f"{what} {head}")
    try:
        return config(**direct)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what}: {exc}") from exc


def _convert(value: Any, kind, what: str):
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _convert(value, option, what)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{what}: cannot take {value!r}")
    if origin in (tuple, list):
        items = value.split(",") if isinstance(value, str) else list(value)
        items = [i.strip() if isinstance(i, str) else i for i in items if not (isinstance(i, str) and not i.strip())]
        inner = args[0] if args else str
        converted = [_convert(i, inner, what) for i in items]
        return tuple(converted) if origin is tuple else converted
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{what}: {value!r} is not a boolean (true/false)")
    if kind in (int, float, str, Path):
        try:
            if kind is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return kind(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{what}: {value!r} is not a {kind.__name__}") from None
    if kind is Any or kind is dict or origin is dict:
        return value
    raise ConfigError(f"{what}: settings of type {_type_name(kind)} cannot be given as text")


# -- the command line and config files ----------------------------------------------------------

def split_dotted(argv: list[str], kinds: tuple[str, ...]) -> tuple[list[str], dict[str, dict[str, str]]]:
    """Takes `--KIND.FIELD VALUE` and `--KIND.FIELD=VALUE` for each kind out of `argv`.
    Returns (the other arguments, {kind: {field: value}}); a flag with no value is an error."""
    rest, settings = [], {kind: {} for kind in kinds}
    i = 0
    while i < len(argv):
        arg = argv[i]
        head = arg[2:].split(".", 1)[0] if arg.startswith("--") else None
        if head in settings and "." in arg:
            key, eq, value = arg[2 + len(head) + 1:].partition("=")
            if not eq:
                if i + 1 >= len(argv):
                    raise ConfigError(f"{arg} needs a value")
                value = argv[i + 1]
                i += 1
            if not key:
                raise ConfigError(f"{arg}: name a setting after the dot")
            settings[head][key.replace("-", "_")] = value
        else:
            rest.append(arg)
        i += 1
    return rest, settings


def read_config_file(path: Path) -> dict[str, dict[str, Any]]:
    """A TOML file with a table per kind (`[algorithm]`, `[driver]`...), each with `name` and the
    plug-in's settings."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path}: {exc}") from exc
    for kind, table in data.items():
        if not isinstance(table, dict):
            raise ConfigError(f"config file {path}: {kind!r} should be a table ([{kind}])")
    return data


def chosen_settings(registry: Registry, name: str | None, flags: dict[str, str],
                    file: dict[str, dict[str, Any]] | None = None, default: str | None = None
                    ) -> tuple[str, dict[str, Any]]:
    """(name, settings) of the `registry.kind` plug-in: the name from the flag, else the file,
    else `default`; its settings from the file, then the dotted flags over them."""
    table = dict((file or {}).get(registry.kind, {}))
    file_name = table.pop("name", None)
    chosen = name or file_name or default
    if chosen is None:
        raise ConfigError(f"choose a {registry.kind}: {', '.join(registry.names())}")
    if file_name is not None and chosen != file_name:
        table = {}  # the file's settings were for another plug-in
    return chosen, {**table, **flags}


def choose(registry: Registry, name: str | None, flags: dict[str, str], file: dict[str, dict[str, Any]] | None = None,
           default: str | None = None) -> tuple[str, Any]:
    """(name, config) of the plug-in `chosen_settings` picks, its config built from them."""
    chosen, settings = chosen_settings(registry, name, flags, file, default)
    return chosen, registry.config(chosen, settings)
