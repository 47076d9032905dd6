"""Extension ``ewc``: Elastic Weight Consolidation (Kirkpatrick et al. 2017). Before training,
the diagonal Fisher information F of the trainable parameters is estimated on the previous
task's data (squared gradients of its loss, ``batches`` batches) at the starting weights w0 (the
previous task's result); the loss gets + ``weight``/2 * sum F (w - w0)^2, so the weights that
mattered for the previous task move least. In a ``stages:`` config the previous stage's data is
filled in; in a chained run name it: ``{name: ewc, data: [task1.jsonl], format: alpaca}``.
Logged as ``ewc/penalty``."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from tunery import ConfigError, Extension, hookimpl

log = logging.getLogger("tunery")


@dataclasses.dataclass
class EwcOptions:
    weight: float = 1000.0  # strength of the consolidation
    batches: int = 16  # batches of the previous data for the Fisher estimate
    data: list[str] = dataclasses.field(default_factory=list)
    format: Any = None
    sources: list[dict] = dataclasses.field(default_factory=list)  # filled in by stages

    def validate(self, where):
        if self.weight <= 0:
            raise ConfigError(f"config key '{where}.weight' must be positive, got {self.weight}")
        if self.batches < 1:
            raise ConfigError(f"config key '{where}.batches' must be 1 or more, got {self.batches}")


def fisher(model, batches) -> dict:
    """Diagonal Fisher estimate of the trainable parameters: mean squared gradient of the loss."""
    import torch

    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    count = 0
    was_training = model.training
    model.eval()  # no dropout in the estimate
    for batch in batches:
        model.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        for n, p in params.items():
            if p.grad is not None:
                total[n] += p.grad.detach() ** 2
        count += 1
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return {n: t / max(count, 1) for n, t in total.items()}


class Ewc(Extension):
    name = "ewc"
    description = "continual learning: Elastic Weight Consolidation towards the previous task's weights"
    tasks = frozenset({"causal_lm", "classification"})
    Options = EwcOptions

    def prepare(self, model, options, run):
        from tunery import source_examples, sources_of

        sources = sources_of(options)
        if not sources:
            log.info("ewc: no previous task's data (the first stage); no consolidation")
            return model
        examples = [ex for i, s in enumerate(sources)
                    for ex in source_examples(run, s["data"], s.get("format"), f"ewc.sources[{i}]")]
        size = run.config.training.batch_size
        batches = list(run.batches(examples[: size * options.batches], size))
        run.state[self.name] = {"fisher": fisher(model, batches), "metrics": {},
                                "anchor": {n: p.detach().clone() for n, p in model.named_parameters()
                                           if p.requires_grad}}
        return model

    def callbacks(self, options, run):
        from tunery import metrics_callback

        return [metrics_callback(run.state.setdefault(self.name, {}).setdefault("metrics", {}))]

    def compute_loss(self, inner, model, inputs, options, run):
        from tunery import record

        loss = inner(model, inputs)
        state = run.state.get(self.name) or {}
        if "fisher" not in state:
            return loss
        penalty = 0.0
        for name, param in model.named_parameters():
            if name not in state["fisher"]:
                continue
            f, anchor = state["fisher"][name], state["anchor"][name]
            if f.device != param.device:
                state["fisher"][name], state["anchor"][name] = f, anchor = f.to(param.device), anchor.to(param.device)
            penalty = penalty + (f * (param - anchor) ** 2).sum()
        if model.training:
            record(state["metrics"], **{"ewc/penalty": penalty.detach()})
        return loss + options.weight / 2 * penalty


@hookimpl
def tunery_register_extensions(registry):
    registry.add(Ewc())
