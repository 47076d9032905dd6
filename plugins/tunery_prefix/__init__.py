"""Method ``prefix``: prefix tuning (trained key/value prefixes in every attention layer)."""

from __future__ import annotations

import dataclasses

from tunery import hookimpl
from tunery.options import at_least
from tunery.peft_support import PromptLearningMethod


@dataclasses.dataclass
class PrefixOptions:
    """Prefix tuning settings (see peft.PrefixTuningConfig)."""

    num_virtual_tokens: int = 16
    projection: bool = False  # reparameterise the prefix through a two-layer MLP
    encoder_hidden_size: int = 128  # hidden size of that MLP (projection only)

    def validate(self, where):
        at_least(self, where, num_virtual_tokens=1)


class PrefixTuning(PromptLearningMethod):
    name = "prefix"
    description = "prefix tuning: trained key/value prefixes, optionally through an MLP projection"
    technique = "prefix tuning"
    Options = PrefixOptions

    def peft_config(self, model, options, run):
        from peft import PrefixTuningConfig

        return PrefixTuningConfig(num_virtual_tokens=options.num_virtual_tokens, prefix_projection=options.projection,
                                  encoder_hidden_size=options.encoder_hidden_size)


@hookimpl
def tunery_register_methods(registry):
    registry.add(PrefixTuning())
