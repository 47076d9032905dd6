"""Method ``freeze``: layer-specific fine-tuning; everything is frozen except what is chosen.

* ``mode: last_n`` -- the last ``last_n`` transformer blocks;
* ``mode: modules`` -- parameters whose name matches one of ``modules`` (a name part such as
  ``mlp``, or a regular expression such as ``layers\\.1\\..*proj``);
* ``mode: head`` -- feature-based tuning: only the task head (``lm_head``, ``classifier``, ``score``).

A classification head is always trained (it starts random). The run folder holds ``model/``,
a complete model that ``from_pretrained`` loads."""

from __future__ import annotations

import dataclasses
import re
from typing import Literal

from tunery import ConfigError, IncompatibleError, Method, at_least, hookimpl

CLASSIFICATION_HEADS = ("classifier", "score")


@dataclasses.dataclass
class FreezeOptions:
    """Which part of the model is trained."""

    mode: Literal["last_n", "modules", "head"] = "last_n"
    last_n: int = 1  # mode last_n: number of final blocks to train
    modules: list[str] | None = None  # mode modules: name parts or regular expressions

    def validate(self, where):
        if self.mode == "last_n":
            at_least(self, where, last_n=1)
        if self.mode == "modules" and not self.modules:
            raise ConfigError(f"config key '{where}.modules' is required with {where}.mode=modules (e.g. [mlp, lm_head])")
        for pattern in self.modules or []:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"config key '{where}.modules': '{pattern}' is not a valid regular expression: {exc}") from None


def blocks(model):
    """The model's list of transformer blocks (the ModuleList with one entry per hidden layer)."""
    import torch

    count = getattr(model.config, "num_hidden_layers", None)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == count:
            return name, module
    raise IncompatibleError(f"method 'freeze' with mode last_n: no list of {count} blocks found in {type(model).__name__}; "
                            "use mode: modules with name patterns instead")


class Freeze(Method):
    name = "freeze"
    description = "layer-specific fine-tuning: last N blocks, named modules, or the head only"
    Options = FreezeOptions
    output_kind = "model"
    default_learning_rate = 1e-3  # measured: docs/learning-rates.md

    def merge_refusal(self):
        return "method 'freeze' has nothing to merge: the run's model/ folder is already a standalone model"

    def selected(self, model, options, run) -> list[str]:
        """Names of the parameters this configuration trains."""
        names = [n for n, _ in model.named_parameters()]
        if options.mode == "last_n":
            prefix, layers = blocks(model)
            if options.last_n > len(layers):
                raise IncompatibleError(f"config key 'method.last_n' is {options.last_n}, but the model has only "
                                        f"{len(layers)} blocks; choose 1 to {len(layers)}")
            first = len(layers) - options.last_n
            chosen = {n for n in names for i in range(first, len(layers)) if n.startswith(f"{prefix}.{i}.")}
        elif options.mode == "modules":
            chosen = set()
            for pattern in options.modules:
                regex = re.compile(pattern)
                found = {n for n in names if pattern in n.split(".") or regex.search(n)}
                if not found:
                    raise IncompatibleError(f"config key 'method.modules': '{pattern}' matches no parameter of "
                                            f"{type(model).__name__} (e.g. {', '.join(names[:3])})")
                chosen |= found
        else:
            head = model.get_output_embeddings() if run.model_task == "causal_lm" else None
            head_ids = {id(p) for p in head.parameters()} if head is not None else set()
            chosen = {n for n, p in model.named_parameters() if id(p) in head_ids}
        if run.model_task == "classification":
            chosen |= {n for n in names if n.split(".")[0] in CLASSIFICATION_HEADS}
        return sorted(chosen)

    def prepare(self, model, options, run):
        chosen = set(self.selected(model, options, run))
        for name, param in model.named_parameters():
            param.requires_grad_(name in chosen)
        if run.model_task == "causal_lm" and getattr(model.config, "use_cache", None):
            model.config.use_cache = False
        if run.config.training.gradient_checkpointing:
            model.enable_input_require_grads()  # frozen embeddings: checkpointed blocks still need a graph
        return model

    def save(self, model, path, options, run):
        model.config.use_cache = True
        model.save_pretrained(path, safe_serialization=True)


@hookimpl
def tunery_register_methods(registry):
    registry.add(Freeze())
