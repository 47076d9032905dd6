"""Extension ``label_smoothing``: the target distribution puts ``1 - epsilon`` on the label and
``epsilon`` spread evenly over the vocabulary (or the classes):
loss = (1 - epsilon) * inner loss + epsilon * mean over labelled positions of -mean_v log p_v.
With the ``sft`` objective that is exactly the label-smoothed cross-entropy; with another
objective the smoothing term is added to its loss the same way."""

from __future__ import annotations

import dataclasses

from tunery import ConfigError, Extension, hookimpl

IGNORE_INDEX = -100


@dataclasses.dataclass
class LabelSmoothingOptions:
    epsilon: float = 0.1

    def validate(self, where):
        if not 0.0 < self.epsilon < 1.0:
            raise ConfigError(f"config key '{where}.epsilon' must be in (0, 1), got {self.epsilon}")


def loss_and_logits(inner, model, inputs):
    """The inner loss and the logits of the same forward pass (a second pass where the inner
    loss came without outputs)."""
    loss, outputs = inner(model, inputs, return_outputs=True)
    logits = getattr(outputs, "logits", None) if outputs is not None else None
    if logits is None:
        logits = model(**{k: v for k, v in inputs.items() if k != "labels"}).logits
    return loss, logits


def uniform_term(logits, labels):
    """Mean over labelled positions (causal LM) or examples of -mean_v log p_v."""
    import torch.nn.functional as F

    logp = F.log_softmax(logits.float(), dim=-1)
    if logp.dim() == 2:
        return -logp.mean(-1).mean()
    keep = labels[:, 1:] != IGNORE_INDEX
    return -logp[:, :-1][keep].mean(-1).mean()


class LabelSmoothing(Extension):
    name = "label_smoothing"
    description = "label smoothing: epsilon of the target spread evenly over the vocabulary or classes"
    tasks = frozenset({"causal_lm", "classification"})
    needs_logits = True
    Options = LabelSmoothingOptions

    def compute_loss(self, inner, model, inputs, options, run):
        loss, logits = loss_and_logits(inner, model, inputs)
        return (1 - options.epsilon) * loss + options.epsilon * uniform_term(logits, inputs["labels"])


@hookimpl
def tunery_register_extensions(registry):
    registry.add(LabelSmoothing())
