"""Method ``prompt``: prompt tuning, trained embeddings of virtual tokens put before the input."""

from __future__ import annotations

import dataclasses
from typing import Literal

from tunery import ConfigError, PromptLearningMethod, at_least, hookimpl


@dataclasses.dataclass
class PromptOptions:
    """Prompt tuning settings (see peft.PromptTuningConfig)."""

    num_virtual_tokens: int = 16
    init: Literal["random", "text"] = "random"
    init_text: str | None = None  # with init: text, the virtual tokens start as this text's embeddings

    def validate(self, where):
        at_least(self, where, num_virtual_tokens=1)
        if self.init == "text" and not (self.init_text or "").strip():
            raise ConfigError(f"config key '{where}.init_text' is required with {where}.init=text (e.g. 'Answer the question:')")
        if self.init == "random" and self.init_text:
            raise ConfigError(f"config key '{where}.init_text' is only used with {where}.init=text; set init: text or remove it")


class PromptTuning(PromptLearningMethod):
    name = "prompt"
    description = "prompt tuning: trained virtual token embeddings (random or text initialisation)"
    technique = "prompt tuning"
    Options = PromptOptions

    def peft_config(self, model, options, run):
        from peft import PromptTuningConfig

        kwargs = {}
        if options.init == "text":
            kwargs = dict(prompt_tuning_init="TEXT", prompt_tuning_init_text=options.init_text,
                          tokenizer_name_or_path=run.model_source.path)
        return PromptTuningConfig(num_virtual_tokens=options.num_virtual_tokens, **kwargs)


@hookimpl
def tunery_register_methods(registry):
    registry.add(PromptTuning())
