"""Extension ``penalty``: L1 and L2 penalties on the trainable parameters:
loss + l1 * sum |w| + l2 * sum w^2 (unlike ``training.weight_decay``, part of the loss, so it
works with any optimizer, and L1 drives weights to zero). Logged as ``penalty/l1``, ``penalty/l2``."""

from __future__ import annotations

import dataclasses

from tunery import ConfigError, Extension, hookimpl


@dataclasses.dataclass
class PenaltyOptions:
    l1: float = 0.0
    l2: float = 0.0

    def validate(self, where):
        if self.l1 < 0 or self.l2 < 0:
            raise ConfigError(f"config keys '{where}.l1' and '{where}.l2' must be 0 or more")
        if not (self.l1 or self.l2):
            raise ConfigError(f"extension 'penalty' needs '{where}.l1' or '{where}.l2' above 0")


class Penalty(Extension):
    name = "penalty"
    description = "L1/L2 penalties on the trainable parameters, added to the loss"
    Options = PenaltyOptions

    def compute_loss(self, inner, model, inputs, options, run):
        from tunery import record

        loss = inner(model, inputs)
        params = [p for p in model.parameters() if p.requires_grad]
        l1 = sum(p.abs().sum() for p in params) if options.l1 else None
        l2 = sum(p.pow(2).sum() for p in params) if options.l2 else None
        store = run.state.setdefault(self.name, {})
        if model.training:
            record(store, **{f"penalty/{k}": v.detach() for k, v in (("l1", l1), ("l2", l2)) if v is not None})
        if l1 is not None:
            loss = loss + options.l1 * l1
        if l2 is not None:
            loss = loss + options.l2 * l2
        return loss

    def callbacks(self, options, run):
        from tunery import metrics_callback

        return [metrics_callback(run.state.setdefault(self.name, {}))]


@hookimpl
def tunery_register_extensions(registry):
    registry.add(Penalty())
