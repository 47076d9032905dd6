"""Method ``ptuning``: P-tuning, virtual token embeddings produced by a prompt encoder (MLP or LSTM)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from tunery import PromptLearningMethod, at_least, hookimpl


@dataclasses.dataclass
class PTuningOptions:
    """P-tuning settings (see peft.PromptEncoderConfig)."""

    num_virtual_tokens: int = 16
    encoder: Literal["mlp", "lstm"] = "mlp"
    encoder_hidden_size: int = 128
    encoder_num_layers: int = 2
    encoder_dropout: float = 0.0

    def validate(self, where):
        at_least(self, where, num_virtual_tokens=1, encoder_hidden_size=1)


class PTuning(PromptLearningMethod):
    name = "ptuning"
    description = "P-tuning: virtual tokens from an MLP or LSTM prompt encoder"
    technique = "P-tuning"
    Options = PTuningOptions

    def peft_config(self, model, options, run):
        from peft import PromptEncoderConfig

        return PromptEncoderConfig(
            num_virtual_tokens=options.num_virtual_tokens, encoder_reparameterization_type=options.encoder.upper(),
            encoder_hidden_size=options.encoder_hidden_size, encoder_num_layers=options.encoder_num_layers,
            encoder_dropout=options.encoder_dropout,
        )


@hookimpl
def tunery_register_methods(registry):
    registry.add(PTuning())
