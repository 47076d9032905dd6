"""Method ``full``: every weight of the model is trained; the run folder holds ``model/``."""

from __future__ import annotations

import dataclasses

from tunery import Method, hookimpl


@dataclasses.dataclass
class FullOptions:
    """Options of full fine-tuning."""


class FullFineTuning(Method):
    name = "full"
    description = "train all weights (the run folder holds a complete model)"
    Options = FullOptions
    output_kind = "model"
    default_learning_rate = 2e-5  # measured: docs/learning-rates.md

    def prepare(self, model, options, run):
        for param in model.parameters():
            param.requires_grad_(True)
        if run.model_task == "causal_lm" and getattr(model.config, "use_cache", None):
            model.config.use_cache = False
        return model

    def save(self, model, path, options, run):
        model.config.use_cache = True
        model.save_pretrained(path, safe_serialization=True)

    def load(self, base_model, path, options):
        raise NotImplementedError("a full run folder's model/ is loaded directly")  # never called by the core

    def merge_refusal(self):
        return "method 'full' has nothing to merge: the run's model/ folder is already a standalone model"


@hookimpl
def tunery_register_methods(registry):
    registry.add(FullFineTuning())
