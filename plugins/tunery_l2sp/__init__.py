"""Extension ``l2sp``: L2-SP regularisation (Li et al. 2018), pulling the trainable weights
towards their values at the start of training (the pretrained weights for ``full``/``freeze``,
the initial adapter for a peft method): loss + alpha/2 * sum ||w - w0||^2. Each log record gets
``l2sp/distance`` (the summed squared distance)."""

from __future__ import annotations

import dataclasses

from tunery import ConfigError, Extension, hookimpl


@dataclasses.dataclass
class L2spOptions:
    alpha: float = 0.01  # strength of the pull towards the starting weights

    def validate(self, where):
        if self.alpha <= 0:
            raise ConfigError(f"config key '{where}.alpha' must be positive, got {self.alpha}")


class L2sp(Extension):
    name = "l2sp"
    description = "L2-SP: pull the trainable weights towards their starting (pretrained) values"
    Options = L2spOptions

    def prepare(self, model, options, run):
        anchors = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        run.state[self.name] = {"anchors": anchors, "metrics": {}}
        return model

    def compute_loss(self, inner, model, inputs, options, run):
        from tunery import record

        loss = inner(model, inputs)
        state = run.state[self.name]
        anchors = state["anchors"]
        distance = 0.0
        for name, param in model.named_parameters():
            anchor = anchors.get(name)
            if anchor is None:
                continue
            if anchor.device != param.device:
                anchors[name] = anchor = anchor.to(param.device)
            distance = distance + (param - anchor).pow(2).sum()
        if model.training:
            record(state["metrics"], **{"l2sp/distance": distance.detach()})
        return loss + options.alpha / 2 * distance

    def callbacks(self, options, run):
        from tunery import metrics_callback

        return [metrics_callback(run.state.setdefault(self.name, {}).setdefault("metrics", {}))]


@hookimpl
def tunery_register_extensions(registry):
    registry.add(L2sp())
