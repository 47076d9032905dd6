"""Objective ``kto``: Kahneman-Tversky Optimisation (Ethayarajh et al. 2024) on unpaired data.

Each example is one response labelled desirable or not (formatter ``unpaired``). With the
log-ratio ``r = log pi(y|x) - log pi_ref(y|x)`` and a reference point ``z`` (the batch's mean
log-ratio, detached and clamped at 0: an estimate of the KL between policy and reference), the
loss is ``w_d * (1 - sigmoid(beta * (r - z)))`` for desirable and ``w_u * (1 - sigmoid(beta *
(z - r)))`` for undesirable responses. TRL estimates ``z`` on mismatched prompt/completion
pairs of the batch, which costs a second forward pass; tunery uses the matched pairs (see
docs/rlhf.md). The reference costs no weight copy, as for ``dpo``: the adapter-disabled model,
or, with methods that change the weights, log-probabilities computed once before training.
"""

from __future__ import annotations

import dataclasses

from tunery import ConfigError, Objective, TrainingError, hookimpl


@dataclasses.dataclass
class KtoOptions:
    beta: float = 0.1
    desirable_weight: float = 1.0
    undesirable_weight: float = 1.0

    def validate(self, where):
        if min(self.beta, self.desirable_weight, self.undesirable_weight) <= 0:
            raise ConfigError(f"config keys '{where}.beta', '{where}.desirable_weight' and "
                              f"'{where}.undesirable_weight' must be positive")


def kto_loss(logps, ref_logps, label, *, beta: float, desirable_weight: float = 1.0, undesirable_weight: float = 1.0):
    """Per-example KTO losses, the log-ratios (detached) and the reference point ``z``."""
    import torch

    ratio = logps - ref_logps
    z = ratio.detach().mean().clamp(min=0)
    good = label.bool()
    losses = torch.where(good, desirable_weight * (1 - torch.sigmoid(beta * (ratio - z))),
                         undesirable_weight * (1 - torch.sigmoid(beta * (z - ratio))))
    return losses, ratio.detach(), z


class Kto(Objective):
    name = "kto"
    description = "KTO: unpaired good/bad responses against a reference; the reference costs no weight copy"
    tasks = frozenset({"unpaired"})
    Options = KtoOptions

    @staticmethod
    def logps(model, inputs):
        from tunery import sequence_logps

        logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
        return sequence_logps(logits, inputs["labels"])

    def compute_loss(self, model, inputs, options, run):
        import torch
        from tunery import record

        logps = self.logps(model, inputs)
        if "ref_logps" in inputs:
            ref = inputs["ref_logps"]
        elif run.method.can_disable:
            with torch.no_grad(), model.disable_adapter():
                ref = self.logps(model, inputs)
        else:
            raise TrainingError("kto: no reference log-probabilities for this batch (they are computed when "
                                "training begins; was the batch built outside the trainer?)")
        losses, ratio, z = kto_loss(logps, ref, inputs["label"], beta=options.beta,
                                    desirable_weight=options.desirable_weight,
                                    undesirable_weight=options.undesirable_weight)
        if model.training:
            good = inputs["label"].bool()
            values = {"kl": z}
            if good.any():
                values["rewards/chosen"] = options.beta * ratio[good]
            if (~good).any():
                values["rewards/rejected"] = options.beta * ratio[~good]
            record(run.state.setdefault(self.name, {}), **values)
        return losses.mean()

    def callbacks(self, options, run):
        from tunery import metrics_callback, precompute_values

        def reference_logps(model, train_dataloader):
            """Without an adapter to disable, the reference is the initial weights: compute its
            log-probabilities of every training example once, before the first step."""
            if not run.method.can_disable:
                precompute_values(run, model, train_dataloader.dataset, ("ref_logps",),
                                  lambda m, batch: (self.logps(m, batch),))

        return [metrics_callback(run.state.setdefault(self.name, {}), reference_logps)]


@hookimpl
def tunery_register_objectives(registry):
    registry.add(Kto())
