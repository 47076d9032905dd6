"""Extension ``label_smoothing``: the target distribution puts ``1 - epsilon`` on the label and
``epsilon`` spread evenly over the vocabulary (or the classes):
loss = (1 - epsilon) * inner loss + epsilon * mean over labelled positions of -mean_v log p_v.
With the ``sft`` objective that is exactly the label-smoothed cross-entropy; with another
objective the smoothing term is added to its loss the same way."""

from __future__ import annotations

import dataclasses

from tunery import ConfigError, Extension, hookimpl


@dataclasses.dataclass
class LabelSmoothingOptions:
    epsilon: float = 0.1

    def validate(self, where):
        if not 0.0 < self.epsilon < 1.0:
            raise ConfigError(f"config key '{where}.epsilon' must be in (0, 1), got {self.epsilon}")


def uniform_term(logits, labels):
    """Mean over labelled positions (causal LM) or examples of -mean_v log p_v."""
    import torch.nn.functional as F
    from tunery import labelled_logits

    return -F.log_softmax(labelled_logits(logits, labels).float(), dim=-1).mean(-1).mean()


class LabelSmoothing(Extension):
    name = "label_smoothing"
    description = "label smoothing: epsilon of the target spread evenly over the vocabulary or classes"
    tasks = frozenset({"causal_lm", "classification"})
    needs_logits = True
    Options = LabelSmoothingOptions

    def compute_loss(self, inner, model, inputs, options, run):
        from tunery import loss_and_logits

        loss, logits = loss_and_logits(inner, model, inputs)
        return (1 - options.epsilon) * loss + options.epsilon * uniform_term(logits, inputs["labels"])


@hookimpl
def tunery_register_extensions(registry):
    registry.add(LabelSmoothing())
