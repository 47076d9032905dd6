"""Extension ``rdrop``: R-Drop (Liang et al. 2021). Each batch goes through the model twice (two
dropout masks); loss = mean of the two inner losses + alpha * the symmetric KL between the two
output distributions (labelled positions of a causal LM, the classes of a classifier). Needs
dropout in the model: ``extensions: [{name: dropout, ...}, rdrop]`` adds it where the model has
none. Logged as ``rdrop/kl``."""

from __future__ import annotations

import dataclasses

from tunery import ConfigError, Extension, hookimpl


@dataclasses.dataclass
class RdropOptions:
    alpha: float = 1.0

    def validate(self, where):
        if self.alpha <= 0:
            raise ConfigError(f"config key '{where}.alpha' must be positive, got {self.alpha}")


def symmetric_kl(a, b, labels):
    import torch.nn.functional as F
    from tunery import labelled_logits

    a, b = labelled_logits(a, labels), labelled_logits(b, labels)
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
        from tunery import loss_and_logits, record

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
