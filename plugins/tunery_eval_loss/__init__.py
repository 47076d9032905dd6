"""Evaluator ``loss``: mean loss per predicted token (causal LM, with perplexity) or per example.

Examples that carry a task name (``_task``, from the ``multitask`` formatter) are also measured
per task: ``<task>/loss`` (and ``<task>/perplexity``)."""

from __future__ import annotations

import dataclasses
import math

from tunery import Evaluator, hookimpl


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
        metrics = self._measure(model, dataset, options, run)
        tasks = sorted({ex["_task"] for ex in dataset if ex.get("_task") is not None})
        for task in tasks:
            part = self._measure(model, [ex for ex in dataset if ex.get("_task") == task], options, run)
            metrics.update({f"{task}/{k}": v for k, v in part.items()})
        return metrics

    @staticmethod
    def _measure(model, dataset, options, run):
        total, count = 0.0, 0
        for batch in run.batches(dataset, options.batch_size):
            loss = model(**batch).loss
            if run.model_task == "causal_lm":  # the model averages over predicted (shifted) tokens
                n = int((batch["labels"][:, 1:] != -100).sum())
            else:
                n = int(batch["labels"].shape[0])
            total += float(loss) * n
            count += n
        mean = total / max(count, 1)
        metrics = {"loss": mean, "tokens" if run.model_task == "causal_lm" else "examples": count}
        if run.model_task == "causal_lm":
            metrics["perplexity"] = math.exp(min(mean, 50.0))
        return metrics


@hookimpl
def tunery_register_evaluators(registry):
    registry.add(Loss())
