"""The prompting baseline: the untuned model scored by the run's own evaluators with ``k``
training examples (shots) written in front of every evaluation prompt, so a report shows
"prompting it well" beside "fine-tuning it".

The shots are drawn once with a fixed seed from the training examples, never from the
evaluation ones (an example whose tokens equal an evaluation example's is left out of the
draw), and are the same for every evaluation example. Each shot is a complete training example
(prompt and answer); the loss is only taken on the evaluation example's own target. When the
shots and an example exceed ``data.max_length`` the earliest shots are dropped for that example.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from .collate import IGNORE_INDEX
from .errors import DataError, IncompatibleError

if TYPE_CHECKING:  # pragma: no cover
    from .run import RunContext


def check_few_shot(k: int, data_task: str, where: str = "few_shot") -> None:
    """Refuse few-shot prompting of data it cannot help (before anything loads)."""
    if k and data_task != "causal_lm":
        raise IncompatibleError(
            f"{where}={k}: few-shot prompting needs causal_lm data (prompts a language model answers); "
            f"this run's data is {data_task}, whose head is untrained before tuning. Set {where} to 0"
        )


def draw_shots(train: list[dict], evaluation: list[dict], k: int, seed: int) -> list[dict]:
    """``k`` training examples, drawn with ``seed``; none equals an evaluation example."""
    held = {tuple(e["input_ids"]) for e in evaluation}
    pool = [e for e in train if tuple(e["input_ids"]) not in held]
    if len(pool) < k:
        raise DataError(f"few-shot prompting with {k} shots needs {k} training examples that are not "
                        f"evaluation examples; there are {len(pool)}")
    return random.Random(seed).sample(pool, k)


def with_shots(examples: list[dict], shots: list[dict], max_length: int) -> tuple[list[dict], float]:
    """Each causal-LM example with the shots in front (labels ignored there), and the mean
    number of shots that fitted in ``max_length``."""
    out, used = [], 0
    for example in examples:
        kept = list(shots)
        while kept and sum(len(s["input_ids"]) for s in kept) + len(example["input_ids"]) > max_length:
            kept.pop(0)
        prefix = [t for s in kept for t in s["input_ids"]]
        out.append({"input_ids": prefix + list(example["input_ids"]),
                    "labels": [IGNORE_INDEX] * len(prefix) + list(example["labels"])})
        used += len(kept)
    return out, used / max(len(examples), 1)


def few_shot_baseline(run: RunContext, model: Any, train: list[dict], evaluation: list[dict]) -> dict | None:
    """Score ``model`` with ``few_shot`` shots in front of each evaluation example:
    ``{"k", "seed", "mean_shots", "metrics": {"evaluator/metric": value}}``, or None when the
    run asks for no few-shot baseline or has no evaluation data. Evaluators that read their own
    data (``uses_run_data = False``) are left out: their prompts are not the run's."""
    from .evaluation import flat_metrics, run_evaluators

    k = run.config.few_shot
    if not k or not evaluation:
        return None
    shots = draw_shots(train, evaluation, k, run.config.seed)
    prompted, mean_shots = with_shots(evaluation, shots, run.config.data.max_length)
    metrics = flat_metrics(run_evaluators(run, model, prompted, run_data_only=True))
    run.notify("tunery_evaluation", phase="few_shot", metrics=metrics)
    return {"k": k, "seed": run.config.seed, "mean_shots": round(mean_shots, 3), "metrics": metrics}
