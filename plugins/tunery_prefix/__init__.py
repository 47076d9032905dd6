"""Method ``prefix``: prefix tuning (trained key/value prefixes in every attention layer)."""

from __future__ import annotations

import dataclasses

from tunery import IncompatibleError, PromptLearningMethod, at_least, hookimpl


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

    def check(self, options, run):
        super().check(options, run)
        if run.model_task == "classification" and not backbones_take_past_key_values():
            import transformers

            raise IncompatibleError(
                f"prefix tuning (method 'prefix') cannot train classification models with transformers "
                f"{transformers.__version__}: its classification backbones no longer accept past_key_values, which "
                "peft's prefix tuning needs there; use method 'ptuning', 'prompt' or 'lora' for classification"
            )

    def peft_config(self, model, options, run):
        from peft import PrefixTuningConfig

        return PrefixTuningConfig(num_virtual_tokens=options.num_virtual_tokens, prefix_projection=options.projection,
                                  encoder_hidden_size=options.encoder_hidden_size)


def backbones_take_past_key_values() -> bool:
    """Whether the installed transformers' backbones take ``past_key_values`` (peft's prefix
    tuning of classification models passes the prefixes that way; transformers 5.24 renamed it)."""
    import inspect

    from transformers import BertModel, LlamaModel

    return all("past_key_values" in inspect.signature(m.forward).parameters for m in (BertModel, LlamaModel))


@hookimpl
def tunery_register_methods(registry):
    registry.add(PrefixTuning())
