"""Validation of configuration sections against dataclasses.

Every configuration section, the core's and each plugin's, is a dataclass. :func:`parse`
turns a mapping into an instance: unknown keys are refused with the closest valid key,
values are coerced to the annotated type (``"8"`` becomes ``8`` for an ``int`` field), and
every message names the full key path so the user knows where to look.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Any, Mapping

from .errors import ConfigError


def closest(name: str, choices) -> str:
    """A ' (did you mean X?)' hint for ``name`` among ``choices``, or '' when none is close."""
    match = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def unknown_key_error(key: str, valid, where: str) -> ConfigError:
    path = f"{where}.{key}" if where else key
    return ConfigError(
        f"unknown config key '{path}'{closest(key, valid)}; valid keys here: {', '.join(sorted(valid))}"
    )


def at_least(section: Any, where: str, **minimums: int) -> None:
    """Refuse a numeric option below its minimum (``None`` means unset and passes)."""
    for key, minimum in minimums.items():
        value = getattr(section, key)
        if value is not None and value < minimum:
            raise ConfigError(f"config key '{where}.{key}' must be at least {minimum}, got {value}")


def parse(cls: type, raw: Mapping[str, Any] | None, where: str = "") -> Any:
    """Build dataclass ``cls`` from ``raw``, validating keys and coercing types."""
    raw = dict(raw or {})
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in raw.items():
        if key not in fields:
            raise unknown_key_error(key, fields, where)
        path = f"{where}.{key}" if where else key
        values[key] = coerce(value, hints[key], path)
    missing = [
        name for name, f in fields.items()
        if name not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        path = f"{where}.{missing[0]}" if where else missing[0]
        raise ConfigError(f"missing required config key '{path}'")
    instance = cls(**values)
    check = getattr(instance, "validate", None)
    if callable(check):
        check(where)
    return instance


def to_dict(instance: Any) -> dict:
    """The plain mapping of a parsed section (for config.yaml and manifests)."""
    return dataclasses.asdict(instance)


class NotFinite(ConfigError):
    """A number option given NaN or infinity."""


FRIENDLY = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a mapping"}


def _type_name(tp) -> str:
    if tp in FRIENDLY:
        return FRIENDLY[tp]
    if typing.get_origin(tp) in (list, tuple):
        return "a list"
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(value: Any, tp: Any, path: str) -> Any:
    """Convert ``value`` to type ``tp`` or raise a ConfigError naming ``path``."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        arms = [a for a in args if a is not type(None)]
        for arm in arms:
            try:
                return coerce(value, arm, path)
            except ConfigError as exc:
                errors.append(exc)
        if len(arms) == 1 and (isinstance(errors[0], NotFinite) or typing.get_origin(arms[0]) is typing.Literal):
            # say why the one type refused it
            raise errors[0]
        names = " or ".join(_type_name(a) for a in args if a is not type(None))
        if type(None) in args:
            names += " (or null)"
        raise ConfigError(f"config key '{path}' must be {names}, got {value!r}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(
            f"config key '{path}' must be one of {', '.join(map(repr, args))}, got {value!r}{closest(value, args)}"
        )
    if origin in (list, tuple):
        item = args[0] if args else Any
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{path}' must be a list, got {value!r}")
        return [coerce(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key '{path}' must be a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key '{path}' must be a mapping, got {value!r}")
        return parse(tp, value, path)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"config key '{path}' must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"config key '{path}' must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"config key '{path}' must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"config key '{path}' must be a number, got {value!r}")
        number = None
        if isinstance(value, (int, float)):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                pass
        if number is not None and math.isfinite(number):
            return number
        if number is not None:
            raise NotFinite(f"config key '{path}' must be a finite number, got {value!r}")
        raise ConfigError(f"config key '{path}' must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"config key '{path}' must be a string, got {value!r}")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"config key '{path}' must be {_type_name(tp)}, got {value!r}")


@dataclasses.dataclass
class NoOptions:
    """Options of a member that takes none."""
