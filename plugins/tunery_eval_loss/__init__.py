"""Evaluator ``loss``: mean loss per predicted token (causal LM and seq2seq, with perplexity; token
classification) or per example (classification).

Examples that carry a task name (``_task``, from the ``multitask`` formatter) are also measured
per task: ``<task>/loss`` (and ``<task>/perplexity``). The examples with the highest loss are
kept for error analysis (option ``worst``)."""

from __future__ import annotations

import dataclasses
import math

from tunery import EvalResult, Evaluator, hookimpl


@dataclasses.dataclass
class LossOptions:
    batch_size: int | None = None  # default: training.batch_size
    worst: int = 5  # examples with the highest loss kept for error analysis (0: none)


class Loss(Evaluator):
    name = "loss"
    description = "eval loss and perplexity"
    tasks = frozenset({"causal_lm", "classification", "seq2seq", "token_classification"})
    default = True
    Options = LossOptions

    def evaluate(self, model, dataset, options, run):
        from tunery import describe

        per_example: list[float] = []
        metrics = self._measure(model, dataset, options, run, per_example if options.worst else None)
        tasks = sorted({ex["_task"] for ex in dataset if ex.get("_task") is not None})
        for task in tasks:
            part = self._measure(model, [ex for ex in dataset if ex.get("_task") == task], options, run)
            metrics.update({f"{task}/{k}": v for k, v in part.items()})
        worst = sorted(range(len(per_example)), key=lambda i: -per_example[i])[:options.worst]
        return EvalResult(metrics, worst=[{**describe(dataset[i], run), "loss": per_example[i]} for i in worst])

    @staticmethod
    def _measure(model, dataset, options, run, per_example: list | None = None):
        """Loss metrics of ``dataset``; each example's own loss is appended to ``per_example``."""
        from tunery import example_losses, logits, loss_sum

        total, count = 0.0, 0
        causal = run.model_task == "causal_lm"
        per_token = run.model_task != "classification"
        for batch in run.batches(dataset, options.batch_size):  # loss from the logits: the same for every method
            scores = logits(model, batch)
            loss, n = loss_sum(scores, batch["labels"], causal)
            total += loss
            count += n
            if per_example is not None:
                per_example += example_losses(scores, batch["labels"], causal)
        mean = total / max(count, 1)
        metrics = {"loss": mean, "tokens" if per_token else "examples": count}
        if run.model_task in ("causal_lm", "seq2seq"):
            metrics["perplexity"] = math.exp(min(mean, 50.0))
        return metrics


@hookimpl
def tunery_register_evaluators(registry):
    registry.add(Loss())
