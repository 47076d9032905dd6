"""Evaluator ``loss``: mean loss per predicted token (causal LM, with perplexity) or per example."""

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
    tasks = frozenset({"causal_lm", "classification"})
    default = True
    Options = LossOptions

    def evaluate(self, model, dataset, options, run):
        from tunery.evaluation import describe, example_losses

        total, count = 0.0, 0
        per_example: list[float] = []
        causal = run.model_task == "causal_lm"
        for batch in run.batches(dataset, options.batch_size):
            output = model(**batch)
            loss = output.loss
            if causal:  # the model averages over predicted (shifted) tokens
                n = int((batch["labels"][:, 1:] != -100).sum())
            else:
                n = int(batch["labels"].shape[0])
            total += float(loss) * n
            count += n
            if options.worst:
                per_example += example_losses(output.logits, batch["labels"], causal)
        mean = total / max(count, 1)
        metrics = {"loss": mean, "tokens" if causal else "examples": count}
        if causal:
            metrics["perplexity"] = math.exp(min(mean, 50.0))
        worst = sorted(range(len(per_example)), key=lambda i: -per_example[i])[:options.worst]
        return EvalResult(metrics, worst=[{**describe(dataset[i], run), "loss": per_example[i]} for i in worst])


@hookimpl
def tunery_register_evaluators(registry):
    registry.add(Loss())
