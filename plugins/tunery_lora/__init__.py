"""Method ``lora``: low-rank adapters (LoRA), with DoRA, rsLoRA and peft's initialisations."""

from __future__ import annotations

import dataclasses
from typing import Literal

from tunery import hookimpl
from tunery.errors import ConfigError
from tunery.peft_support import PeftMethod, target_modules


@dataclasses.dataclass
class LoraOptions:
    """LoRA settings (see peft.LoraConfig)."""

    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"  # names, a regex, or all-linear
    use_dora: bool = False
    use_rslora: bool = False
    init: Literal["default", "gaussian", "pissa", "olora", "loftq", "eva", "orthogonal"] = "default"
    layers_to_transform: list[int] | None = None
    modules_to_save: list[str] | None = None
    bias: Literal["none", "all", "lora_only"] = "none"

    def validate(self, where):
        if self.r < 1:
            raise ConfigError(f"config key '{where}.r' must be at least 1, got {self.r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"config key '{where}.dropout' must be in [0, 1), got {self.dropout}")


class Lora(PeftMethod):
    name = "lora"
    description = "LoRA low-rank adapters (DoRA, rsLoRA, PiSSA/OLoRA/LoftQ init)"
    Options = LoraOptions
    accepts_quantized = True
    can_merge = True

    def fully_trained_modules(self, options, run):
        return list(options.modules_to_save or [])

    def peft_config(self, model, options, run):
        from peft import LoraConfig

        init = {"default": True, "gaussian": "gaussian", "pissa": "pissa", "olora": "olora", "loftq": "loftq",
                "eva": "eva", "orthogonal": "orthogonal"}[options.init]
        kwargs = {}
        if options.init == "loftq":
            from peft import LoftQConfig

            kwargs["loftq_config"] = LoftQConfig(loftq_bits=4)
        return LoraConfig(
            r=options.r, lora_alpha=options.alpha, lora_dropout=options.dropout,
            target_modules=target_modules(options.target_modules), use_dora=options.use_dora,
            use_rslora=options.use_rslora, init_lora_weights=init,
            layers_to_transform=options.layers_to_transform, modules_to_save=options.modules_to_save,
            bias=options.bias, **kwargs,
        )


@hookimpl
def tunery_register_methods(registry):
    registry.add(Lora())
