"""Method ``ia3``: IA3, learned rescaling vectors of attention and feed-forward activations."""

from __future__ import annotations

import dataclasses

from tunery import PeftMethod, hookimpl, target_modules


@dataclasses.dataclass
class IA3Options:
    """IA3 settings (see peft.IA3Config). Left empty, both module lists come from peft's
    defaults for the model's architecture (keys, values and the feed-forward down projection)."""

    target_modules: str | list[str] | None = None  # names, a regex, or all-linear
    feedforward_modules: str | list[str] | None = None  # subset of target_modules scaled at their input
    modules_to_save: list[str] | None = None


class IA3(PeftMethod):
    name = "ia3"
    default_learning_rate = 3e-3  # measured: docs/learning-rates.md
    description = "IA3: learned scaling vectors (model-aware default targets)"
    Options = IA3Options
    accepts_quantized = True
    can_merge = True

    def peft_config(self, model, options, run):
        from peft import IA3Config

        return IA3Config(target_modules=target_modules(options.target_modules),
                         feedforward_modules=target_modules(options.feedforward_modules),
                         modules_to_save=options.modules_to_save)


@hookimpl
def tunery_register_methods(registry):
    registry.add(IA3())
