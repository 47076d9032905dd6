"""Evaluator ``loss``: mean loss per predicted token (causal LM, with perplexity) or per example."""

from __future__ import annotations

import dataclasses
import math

from tunery import Evaluator, hookimpl
from tunery.scoring import loss_sum


@dataclasses.dataclass
class LossOptions:
    batch_size: int | None = None  # default: training.batch_size


class Loss(Evaluator):
    name = "loss"
    description = "eval loss and perplexity"
    tasks = frozenset({"causal_lm", "classification"})
    default = True
    Options = LossOptions

    def evaluate(self, model, dataset, options, run):
        total, count = 0.0, 0
        for batch in run.batches(dataset, options.batch_size):  # loss from the logits: the same for every method
            loss, n = loss_sum(model, batch, run.model_task)
            total += loss
            count += n
        mean = total / max(count, 1)
        metrics = {"loss": mean, "tokens" if run.model_task == "causal_lm" else "examples": count}
        if run.model_task == "causal_lm":
            metrics["perplexity"] = math.exp(min(mean, 50.0))
        return metrics


@hookimpl
def tunery_register_evaluators(registry):
    registry.add(Loss())
