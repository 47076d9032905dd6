"""Method ``bitfit``: train only the bias terms (BitFit), or the norm weights where a model has no biases.

An example of a third-party method plugin: one module, one entry point in the group ``tunery``,
nothing heavy imported until a run needs it."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Literal

from tunery import Method, hookimpl
from tunery.errors import IncompatibleError

WEIGHTS = "bitfit.safetensors"
HEADS = ("classifier", "score")  # a classification head starts random: always trained


@dataclasses.dataclass
class BitFitOptions:
    """What to train when the model has no bias terms (Llama-style decoders)."""

    fallback: Literal["norms", "none"] = "norms"


def trainable_names(model, options) -> list[str]:
    """Bias parameters (or norm weights as the fallback) plus a classification head."""
    names = [n for n, _ in model.named_parameters()]
    head = {n for n in names if n.split(".")[0] in HEADS}
    chosen = {n for n in names if n.endswith(".bias")} - head
    if not chosen and options.fallback == "norms":
        norms = [name for name, module in model.named_modules() if "norm" in type(module).__name__.lower()]
        chosen = {n for n in names for m in norms if n.startswith(m + ".") and "." not in n[len(m) + 1:]}
    if not chosen:
        raise IncompatibleError(f"method 'bitfit': {type(model).__name__} has no bias terms; "
                                "set method.fallback=norms to train its norm weights instead")
    return sorted(chosen | head)


class BitFit(Method):
    name = "bitfit"
    description = "BitFit: train only bias terms (norm weights when the model has none)"
    Options = BitFitOptions
    can_merge = True

    def prepare(self, model, options, run):
        chosen = set(trainable_names(model, options))
        for name, param in model.named_parameters():
            param.requires_grad_(name in chosen)
        if run.model_task == "causal_lm" and getattr(model.config, "use_cache", None):
            model.config.use_cache = False
        return model

    def save(self, model, path, options, run):
        from safetensors.torch import save_file

        tensors = {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}
        save_file(tensors, os.path.join(path, WEIGHTS))
        with open(os.path.join(path, "bitfit.json"), "w") as f:
            json.dump({"parameters": sorted(tensors), "fallback": options.fallback}, f, indent=2)

    def load(self, base_model, path, options):
        from safetensors.torch import load_file

        tensors = load_file(os.path.join(path, WEIGHTS))
        missing = set(tensors) - {n for n, _ in base_model.named_parameters()}
        if missing:
            raise IncompatibleError(f"method 'bitfit': {path} holds parameters the base model lacks: "
                                    f"{', '.join(sorted(missing)[:3])}; was it trained on another model?")
        base_model.load_state_dict(tensors, strict=False)
        base_model.config.use_cache = True
        return base_model

    def merge(self, model, options):
        return model  # load() already wrote the trained tensors into the base weights


@hookimpl
def tunery_register_methods(registry):
    registry.add(BitFit())
