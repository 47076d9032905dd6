"""The New-run form, without any UI library: its fields come from the core config sections and
from every installed plugin's ``Options`` dataclass, and its values become the ``--set``
overrides the CLI would take, so validation gives exactly the CLI's errors.

Every field holds text. Plain ``str`` options are taken literally; any other value is read as
YAML, as ``--set key=value`` reads it. A field left at its default is left out of the config.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import types
import typing
from pathlib import Path
from typing import Any

from tunery import Method

PLUGIN_SECTIONS = {"method": "methods", "objective": "objectives", "format": "formatters", "quantizer": "quantizers"}
LIST_SECTIONS = {"extensions": "extensions", "evaluators": "evaluators"}  # any number of members, in order
DEFAULT = "(default)"  # the objective picker's "the data's default objective"
SKIPPED = {"resume", "resume_force"}  # the Runs page resumes a run


@dataclasses.dataclass
class Field:
    """One input of the form: a config key, how it is edited, and its default."""

    key: str  # the config key, as errors name it: "training.learning_rate", "method.r"
    type: Any
    default: Any = dataclasses.MISSING
    member: str | None = None  # the plugin member owning the option (shown when it is selected)
    section: str = ""  # "", "data", "training", ..., or a plugin section: "method", "evaluators", ...
    kind: str = "text"  # text, bool, tristate (true / false / auto), choice
    choices: tuple = ()

    @property
    def id(self) -> str:
        """A stable HTML id for the field."""
        parts = [self.section or "top", self.member or "", self.key.rsplit(".", 1)[-1]]
        return "field-" + "-".join(re.sub(r"[^A-Za-z0-9_]", "_", p) for p in parts if p)

    @property
    def name(self) -> str:
        return self.key.rsplit(".", 1)[-1]

    @property
    def required(self) -> bool:
        return self.default is dataclasses.MISSING

    def initial(self) -> Any:
        """The value the form shows before it is touched."""
        if self.kind == "bool":
            return bool(self.default) if not self.required else False
        if self.kind == "tristate":
            return "auto" if self.default in (None, dataclasses.MISSING) else str(self.default).lower()
        if self.kind == "choice":
            return "" if self.required else str(self.default)
        return "" if self.required or self.default is None else to_text(self.default, self.type)

    def info(self) -> str:
        shown = to_text(self.default, self.type).replace("\n", " ⏎ ")
        shown = shown if len(shown) <= 40 else shown[:39] + "…"
        default = "required" if self.required else f"default {shown or 'none'}"
        return f"{type_text(self.type)}; {default}"

    def override_value(self, value: Any) -> str | None:
        """The ``--set`` value text for what the user entered, or None to leave the key out."""
        if self.kind == "bool":
            return None if not self.required and bool(value) == bool(self.default) else str(bool(value)).lower()
        if self.kind == "tristate":
            return None if value in (None, "", self.initial()) else ("null" if value == "auto" else value)
        text = "" if value is None else str(value)
        if self.kind == "choice":
            return None if text in ("", self.initial()) else json.dumps(text)
        if text.strip() == "" or (not self.required and text == self.initial()):
            return None
        return json.dumps(text) if self.type is str else text


def type_text(tp: Any) -> str:
    """How a type is described to a user: 'an integer', 'a list or a string (or empty)'."""
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a YAML mapping"}
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        text = " or ".join(type_text(a) for a in args if a is not type(None))
        return text + (" (empty: none)" if type(None) in args else "")
    if origin is typing.Literal:
        return "one of " + ", ".join(map(str, args))
    if origin in (list, tuple):
        return "a list (comma-separated or YAML)"
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def to_text(value: Any, tp: Any) -> str:
    """A value as the form shows it (the text that parses back to it)."""
    if value is None or value is dataclasses.MISSING or value in ([], {}):
        return ""
    if tp is str and isinstance(value, str):
        return value
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, width=10**9, allow_unicode=True).strip()
    return text[:-3].strip() if text.endswith("...") else text


def yaml_value(text: str) -> Any:
    """A ``--set`` value, read as ``tunery train --set`` reads it."""
    import yaml

    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


def _kind(tp: Any) -> tuple[str, tuple]:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is bool:
        return "bool", ()
    if origin in (typing.Union, types.UnionType) and set(args) == {bool, type(None)}:
        return "tristate", ("auto", "true", "false")
    if origin is typing.Literal:
        return "choice", tuple(str(a) for a in args)
    return "text", ()


def fields_of(cls: type, prefix: str, section: str, member: str | None = None) -> list[Field]:
    """The fields of an options dataclass, keyed under ``prefix``."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
        kind, choices = _kind(hints[f.name])
        out.append(Field(f"{prefix}.{f.name}" if prefix else f.name, hints[f.name], default, member, section,
                         kind, choices))
    return out


def takes_free_options(member: Any) -> bool:
    """Whether the member validates its section itself (``parse_options``), e.g. ``peft``."""
    return type(member).parse_options is not Method.parse_options


@dataclasses.dataclass
class Form:
    """Every field of the New-run form, for the plugins of one engine."""

    fields: list[Field]
    members: dict[str, list[Any]]  # plugin section -> members (methods, formatters, ...)

    @classmethod
    def build(cls, engine) -> Form:
        from tunery import RunConfig

        members = {key: list(getattr(engine, family)) for key, family in {**PLUGIN_SECTIONS, **LIST_SECTIONS}.items()}
        fields: list[Field] = []
        hints = typing.get_type_hints(RunConfig)
        for f in dataclasses.fields(RunConfig):
            tp = hints[f.name]
            if f.name in SKIPPED:
                continue
            if f.name in PLUGIN_SECTIONS or f.name in LIST_SECTIONS:
                fields.append(Field(f.name, str, _default_member(f.name, members[f.name]), section=f.name,
                                    kind="members", choices=tuple(m.name for m in members[f.name])))
                for m in members[f.name]:
                    prefix = f"{f.name}[{m.name}]" if f.name in LIST_SECTIONS else f.name
                    fields += fields_of(m.Options, prefix, f.name, m.name)
                    if takes_free_options(m):
                        fields.append(Field(f"{prefix}.*", dict, {}, m.name, f.name))
            elif dataclasses.is_dataclass(tp):
                fields += fields_of(tp, f.name, f.name)
            else:
                default = f.default if f.default is not dataclasses.MISSING else dataclasses.MISSING
                kind, choices = _kind(tp)
                fields.append(Field(f.name, tp, default, kind=kind, choices=choices))
        return cls(fields, members)

    def section(self, name: str, member: str | None = None) -> list[Field]:
        return [f for f in self.fields if f.section == name and f.member == member and f.kind != "members"]

    def selector(self, section: str) -> Field:
        return next(f for f in self.fields if f.section == section and f.kind == "members")

    # ------------------------------------------------------------------ values -> config

    def overrides(self, values: dict[str, Any]) -> list[str]:
        """The ``--set key=value`` overrides for the form's values (``values`` by field id)."""
        chosen = self.chosen(values)
        sets = []
        for f in self.fields:
            if f.kind == "members":
                if f.section in LIST_SECTIONS:
                    if chosen[f.section]:
                        sets.append(f"{f.section}={json.dumps(self._listed(values, f.section, chosen[f.section]))}")
                elif chosen[f.section] not in (DEFAULT, "") and (chosen[f.section] != f.default
                                                                 or f.section in ("method", "format")):
                    sets.append(f"{f.section}={json.dumps(chosen[f.section])}")
            elif f.section in LIST_SECTIONS or not self.is_active(f, chosen):
                continue
            elif f.key.endswith(".*"):
                extra = yaml_value(str(values.get(f.id) or ""))
                if isinstance(extra, dict):
                    sets += [f"{f.key[:-2]}.{k}={json.dumps(v)}" for k, v in extra.items()]
                elif extra not in ("", None):
                    sets.append(f"{f.key[:-2]}={json.dumps(extra)}")  # refused by the config, as the CLI would
            else:
                text = f.override_value(values.get(f.id))
                if text is not None:
                    sets.append(f"{f.key}={text}")
        return sets

    def chosen(self, values: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for section in (*PLUGIN_SECTIONS, *LIST_SECTIONS):
            field = self.selector(section)
            value = values.get(field.id, field.default)
            out[section] = list(value or []) if section in LIST_SECTIONS else (value or field.default)
        return out

    def _listed(self, values: dict[str, Any], section: str, names: list[str]) -> list:
        """The value of a list section: each chosen member's name, with its options when set."""
        items: list = []
        for name in names:
            options = {}
            for f in self.section(section, name):
                if f.key.endswith(".*"):
                    extra = yaml_value(str(values.get(f.id) or ""))
                    options.update(extra if isinstance(extra, dict) else {})
                    continue
                text = f.override_value(values.get(f.id))
                if text is not None:
                    options[f.name] = yaml_value(text)
            items.append({"name": name, **options} if options else name)
        return items

    # ------------------------------------------------------------------ errors -> fields

    @staticmethod
    def is_active(field: Field, chosen: dict[str, Any]) -> bool:
        """Whether the field's member is selected (core fields always are)."""
        if field.member is None:
            return True
        if field.section in LIST_SECTIONS:
            return field.member in chosen[field.section]
        return field.member == chosen.get(field.section)

    def field_for_error(self, message: str, values: dict[str, Any], key: str | None = None) -> Field | None:
        """The field an error is about: the config key it names (or ``key``), or None."""
        match = re.search(r"config key '([^']+)'", message)
        key = key or (match.group(1) if match else None)
        if not key:
            return None
        chosen = self.chosen(values)
        index = re.match(r"(\w+)\[(\d+)\](.*)", key)
        if index and index.group(1) in LIST_SECTIONS:
            section, i, names = index.group(1), int(index.group(2)), chosen[index.group(1)]
            key = f"{section}[{names[i]}]{index.group(3)}" if i < len(names) else section
        active = {f.key: f for f in self.fields if self.is_active(f, chosen)}
        while key:
            found = active.get(f"{key}.*") or active.get(key)
            if found:
                return found
            shorter = re.sub(r"(\.[^.\[]*|\[[^\]]*\])$", "", key)
            key = shorter if shorter != key else ""
        return None


def _default_member(section: str, members: list) -> Any:
    names = [m.name for m in members]
    if section in LIST_SECTIONS:
        return []
    if section == "objective":
        return DEFAULT
    preferred = {"method": "lora", "format": "alpaca", "quantizer": "none"}[section]
    return preferred if preferred in names else (names[0] if names else "")


# ---------------------------------------------------------------------- rendering


def raw_config(overrides: list[str]) -> dict:
    """The config mapping the overrides make (what ``tunery train --set ...`` would build)."""
    from tunery import apply_overrides

    return apply_overrides({}, list(overrides))


def config_yaml(overrides: list[str]) -> str:
    import yaml

    return yaml.safe_dump(raw_config(overrides), sort_keys=False, allow_unicode=True, width=10**9)


QUICK = {"model": "--model", "method": "--method", "format": "--format", "quantizer": "--quantizer",
         "output_dir": "--output-dir"}


def cli_command(overrides: list[str]) -> str:
    """The ``tunery train`` command line that runs the same configuration."""
    parts = ["tunery", "train"]
    for item in overrides:
        key, _, value = item.partition("=")
        if key in QUICK:
            parts += [QUICK[key], str(yaml_value(value))]
        else:
            parts += ["--set", item]
    return " ".join(shlex.quote(p) for p in parts)


def check(engine, overrides: list[str]):
    """Validate as ``tunery train`` does before loading anything: the config, the plugins'
    options, every compatibility check, and that the data files exist. Returns the RunConfig."""
    from tunery import expand_paths
    from tunery import DataError

    config = engine.check({}, overrides)
    for split in ("train", "eval"):
        try:
            expand_paths(getattr(config.data, split))
        except DataError as exc:
            exc.config_key = f"data.{split}"  # the field to show it next to; the message stays the CLI's
            raise
    return config


def inside(path: str | Path, folder: str | Path) -> bool:
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents
