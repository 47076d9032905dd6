"""Method ``lora``: low-rank adapters (LoRA), with DoRA, rsLoRA and peft's initialisations."""

from __future__ import annotations

import dataclasses
from typing import Literal

from tunery import ConfigError, IncompatibleError, PeftMethod, at_least, hookimpl, linear_names, target_modules


@dataclasses.dataclass
class LoraOptions:
    """LoRA settings (see peft.LoraConfig)."""

    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"  # names, a regex, or all-linear
    use_dora: bool = False
    use_rslora: bool = False
    init: Literal["default", "gaussian", "pissa", "olora", "loftq", "orthogonal"] = "default"
    layers_to_transform: list[int] | None = None
    modules_to_save: list[str] | None = None
    bias: Literal["none", "all", "lora_only"] = "none"

    def validate(self, where):
        at_least(self, where, r=1)
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

    def check(self, options, run):
        if options.init == "loftq":
            import torch

            if run.quantized:
                raise IncompatibleError(f"method 'lora' with init 'loftq' quantizes the base itself; "
                                        f"use quantizer 'none' instead of '{run.config.quantizer.name}'")
            if not torch.cuda.is_available():
                raise IncompatibleError("method 'lora' with init 'loftq' needs a CUDA GPU (peft quantizes with "
                                        "bitsandbytes there); on this machine use init: pissa or olora")
        targets = target_modules(options.target_modules)
        if options.layers_to_transform and isinstance(targets, str) and targets != "all-linear":
            raise IncompatibleError("method 'lora': layers_to_transform needs target_modules as module names; "
                                    f"the regex '{targets}' already chooses the layers")

    def peft_config(self, model, options, run):
        from peft import LoraConfig

        init = {"default": True, "gaussian": "gaussian", "pissa": "pissa", "olora": "olora", "loftq": "loftq",
                "orthogonal": "orthogonal"}[options.init]
        kwargs = {}
        if options.init == "loftq":
            from peft import LoftQConfig

            kwargs["loftq_config"] = LoftQConfig(loftq_bits=4)
        targets = target_modules(options.target_modules)
        if options.layers_to_transform and targets == "all-linear":  # peft takes layers only with names
            targets = linear_names(model)
        return LoraConfig(
            r=options.r, lora_alpha=options.alpha, lora_dropout=options.dropout,
            target_modules=targets, use_dora=options.use_dora,
            use_rslora=options.use_rslora, init_lora_weights=init,
            layers_to_transform=options.layers_to_transform, modules_to_save=options.modules_to_save,
            bias=options.bias, **kwargs,
        )


@hookimpl
def tunery_register_methods(registry):
    registry.add(Lora())
