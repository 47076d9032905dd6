"""Extension ``rdrop``: R-Drop (Liang et al. 2021). Each batch goes through the model twice (two
dropout masks); loss = mean of the two inner losses + alpha * the symmetric KL between the two
output distributions (labelled positions of a causal LM, the classes of a classifier). Needs
dropout in the model: ``extensions: [{name: dropout, ...}, rdrop]`` adds it where the model has
none. Logged as ``rdrop/kl``."""

from __future__ import annotations

import dataclasses

from tunery import ConfigError, Extension, hookimpl

IGNORE_INDEX = -100


@dataclasses.dataclass
class RdropOptions:
    alpha: float = 1.0

    def validate(self, where):
        if self.alpha <= 0:
            raise ConfigError(f"config key '{where}.alpha' must be positive, got {self.alpha}")


def loss_and_logits(inner, model, inputs):
    """The inner loss and the logits of the same forward pass (a second pass where the inner
    loss came without outputs)."""
    loss, outputs = inner(model, inputs, return_outputs=True)
    logits = getattr(outputs, "logits", None) if outputs is not None else None
    if logits is None:
        logits = model(**{k: v for k, v in inputs.items() if k != "labels"}).logits
    return loss, logits


def symmetric_kl(a, b, labels):
    import torch.nn.functional as F

    if a.dim() == 3:
        keep = labels[:, 1:] != IGNORE_INDEX
        a, b = a[:, :-1][keep], b[:, :-1][keep]
    la, lb = F.log_softmax(a.float(), -1), F.log_softmax(b.float(), -1)
    kl = F.kl_div(la, lb, log_target=True, reduction="none").sum(-1) + F.kl_div(lb, la, log_target=True,
                                                                                reduction="none").sum(-1)
    return kl.mean() / 2


class Rdrop(Extension):
    name = "rdrop"
    description = "R-Drop: two dropout passes per batch, symmetric KL between them"
    tasks = frozenset({"causal_lm", "classification"})
    needs_logits = True
    Options = RdropOptions

    def compute_loss(self, inner, model, inputs, options, run):
        from tunery import record

        if not model.training:
            return inner(model, inputs)
        loss1, logits1 = loss_and_logits(inner, model, inputs)
        loss2, logits2 = loss_and_logits(inner, model, inputs)
        kl = symmetric_kl(logits1, logits2, inputs["labels"])
        record(run.state.setdefault(self.name, {}), **{"rdrop/kl": kl.detach()})
        return (loss1 + loss2) / 2 + options.alpha * kl

    def callbacks(self, options, run):
        from tunery import metrics_callback

        return [metrics_callback(run.state.setdefault(self.name, {}))]


@hookimpl
def tunery_register_extensions(registry):
    registry.add(Rdrop())
