"""Extension ``dropout``: override the model's dropout probabilities for a run: ``attention``
(attention-probability dropout: BERT's attention dropout, Llama-style ``attention_dropout``),
``hidden`` (every other dropout layer of the model: embeddings, residual outputs, classifier)
and ``lora`` (the LoRA adapters' input dropout, added where the adapter was made without one).
An option left unset keeps the model's value; one that matches nothing in the model is refused."""

from __future__ import annotations

import dataclasses

from tunery import ConfigError, IncompatibleError, Extension, hookimpl


@dataclasses.dataclass
class DropoutOptions:
    attention: float | None = None
    hidden: float | None = None
    lora: float | None = None

    def validate(self, where):
        for key in ("attention", "hidden", "lora"):
            value = getattr(self, key)
            if value is not None and not 0.0 <= value < 1.0:
                raise ConfigError(f"config key '{where}.{key}' must be in [0, 1), got {value}")
        if self.attention is None and self.hidden is None and self.lora is None:
            raise ConfigError(f"extension 'dropout' needs at least one of '{where}.attention', "
                              f"'{where}.hidden', '{where}.lora'")


def set_dropout(model, attention=None, hidden=None, lora=None) -> dict[str, int]:
    """Set the dropout probabilities of ``model`` in place; returns how many places each changed."""
    import torch

    changed = {"attention": 0, "hidden": 0, "lora": 0}
    for name, module in model.named_modules():
        if lora is not None and isinstance(getattr(module, "lora_dropout", None), torch.nn.ModuleDict):
            for key in module.lora_dropout:
                module.lora_dropout[key] = torch.nn.Dropout(lora)
                changed["lora"] += 1
        if attention is not None and isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = attention  # Llama, Mistral, Qwen ...: a probability used in forward
            changed["attention"] += 1
        if not isinstance(module, torch.nn.Dropout) or "lora_dropout" in name:
            continue
        parts = name.split(".")
        is_attention = any("attention" in p or "attn" in p for p in parts) and "output" not in parts
        value = attention if is_attention else hidden
        if value is not None:
            module.p = value
            changed["attention" if is_attention else "hidden"] += 1
    return changed


class Dropout(Extension):
    name = "dropout"
    description = "override attention, hidden and LoRA dropout probabilities"
    Options = DropoutOptions

    def prepare(self, model, options, run):
        import logging

        changed = set_dropout(model, options.attention, options.hidden, options.lora)
        for key, count in changed.items():
            if getattr(options, key) is not None and not count:
                hint = " (method is not lora)" if key == "lora" else ""
                raise IncompatibleError(f"extension 'dropout': option '{key}' matches no dropout in "
                                        f"{type(model).__name__}{hint}; remove it")
        logging.getLogger("tunery").info("dropout: %s", ", ".join(f"{k}={getattr(options, k)} ({n} places)"
                                                                  for k, n in changed.items() if n))
        run.state[self.name] = changed
        return model


@hookimpl
def tunery_register_extensions(registry):
    registry.add(Dropout())
