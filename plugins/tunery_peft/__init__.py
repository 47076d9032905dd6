"""Method ``peft``: any other peft adapter by name (LoHa, LoKr, OFT, BOFT, VeRA, FourierFT, ...).

``method: {name: peft, type: loha, r: 8, target_modules: all-linear}``: ``type`` picks peft's
config class, every other key is a field of that class, checked against peft's own dataclass.
peft is imported while the config is read, and only when this method is chosen."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from tunery import ConfigError, PeftMethod, closest, coerce, hookimpl, target_modules

#: peft types with a method of their own in tunery (they need more than a config).
OWN_METHODS = {"lora": "lora", "adalora": "adalora", "ia3": "ia3", "prefix_tuning": "prefix",
               "p_tuning": "ptuning", "prompt_tuning": "prompt"}
#: Fields tunery sets itself.
RESERVED = {"task_type", "peft_type", "auto_mapping", "base_model_name_or_path", "revision", "inference_mode",
            "peft_version"}


@dataclasses.dataclass
class PeftOptions:
    """``type`` (a peft method, e.g. ``loha``; required) plus the fields of that method's peft
    config class (``r``, ``target_modules``, ...), checked against it."""

    type: str


def config_classes() -> dict[str, type]:
    """peft's adapter config classes by lower-case type name, prompt-learning ones excluded."""
    from peft import PEFT_TYPE_TO_CONFIG_MAPPING, PromptLearningConfig

    out = {}
    for peft_type, cls in PEFT_TYPE_TO_CONFIG_MAPPING.items():
        name = str(getattr(peft_type, "value", peft_type)).lower()
        if not issubclass(cls, PromptLearningConfig) or name in OWN_METHODS:
            out[name] = cls
    return out


class GenericPeft(PeftMethod):
    name = "peft"
    description = "any other peft adapter by type (loha, lokr, oft, boft, vera, fourierft, ...)"
    Options = PeftOptions
    can_merge = True

    def parse_options(self, raw, where):
        raw = dict(raw or {})
        kind = str(raw.pop("type", "") or "").lower()
        classes = config_classes()
        if not kind:
            raise ConfigError(f"missing required config key '{where}.type' (a peft method: {', '.join(sorted(set(classes) - set(OWN_METHODS)))})")
        if kind in OWN_METHODS:
            raise ConfigError(f"config key '{where}.type': peft type '{kind}' has its own tunery method; use method: {OWN_METHODS[kind]}")
        if kind not in classes:
            raise ConfigError(f"config key '{where}.type': peft has no adapter type '{kind}'{closest(kind, classes)}; "
                              f"available: {', '.join(sorted(set(classes) - set(OWN_METHODS)))}")
        cls = classes[kind]
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init and f.name not in RESERVED}
        try:
            hints = typing.get_type_hints(cls)
        except Exception:  # noqa: BLE001 - a hint peft cannot resolve: take the value as written
            hints = {}
        values = {}
        for key, value in raw.items():
            if key not in fields:
                raise ConfigError(f"unknown config key '{where}.{key}' for peft type '{kind}'{closest(key, fields)}; "
                                  f"valid keys: {', '.join(sorted(fields))}")
            if key == "target_modules" and isinstance(value, str):  # all-linear, a regex or "q_proj,v_proj"
                value = target_modules(value)
            values[key] = value if key == "target_modules" and isinstance(value, str) else coerce(value, hints.get(key, Any), f"{where}.{key}")
        try:
            cls(**values)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"config key '{where}': invalid {cls.__name__} settings: {exc}") from None
        options_cls = dataclasses.make_dataclass(
            f"Peft{cls.__name__}Options", [("type", str)] + [(k, Any) for k in values], namespace={"config_class": cls})
        return options_cls(type=kind, **values)

    def peft_config(self, model, options, run):
        values = {f.name: getattr(options, f.name) for f in dataclasses.fields(options) if f.name != "type"}
        return options.config_class(**values)


@hookimpl
def tunery_register_methods(registry):
    registry.add(GenericPeft())
