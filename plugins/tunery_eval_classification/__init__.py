"""Evaluator ``classification``: accuracy, macro-F1, per-class precision and recall, and the
confusion matrix of a sequence classifier; the wrong predictions it was surest of are kept."""

from __future__ import annotations

import dataclasses

from tunery import EvalResult, Evaluator, hookimpl


@dataclasses.dataclass
class ClassificationOptions:
    batch_size: int | None = None  # default: training.batch_size
    worst: int = 5  # wrong predictions kept for error analysis, most confident first (0: none)


def scores(gold: list[int], predicted: list[int], labels: list[str]) -> tuple[dict, list[list[int]]]:
    """Metrics and confusion matrix (rows: true label, columns: predicted) of ``predicted``
    against ``gold`` (label ids). Macro-F1 averages the classes that occur in either list."""
    n = len(labels)
    matrix = [[0] * n for _ in range(n)]
    for g, p in zip(gold, predicted):
        matrix[g][p] += 1
    metrics: dict[str, float] = {"accuracy": sum(matrix[i][i] for i in range(n)) / max(len(gold), 1)}
    f1s = []
    for i, name in enumerate(labels):
        true_pos = matrix[i][i]
        predicted_i = sum(matrix[g][i] for g in range(n))
        actual_i = sum(matrix[i])
        precision = true_pos / predicted_i if predicted_i else 0.0
        recall = true_pos / actual_i if actual_i else 0.0
        metrics[f"precision/{name}"] = precision
        metrics[f"recall/{name}"] = recall
        if predicted_i or actual_i:
            f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    metrics["macro_f1"] = sum(f1s) / len(f1s) if f1s else 0.0
    metrics["examples"] = len(gold)
    return metrics, matrix


class ClassificationEval(Evaluator):
    name = "classification"
    description = "accuracy, macro-F1, per-class precision/recall, confusion matrix"
    tasks = frozenset({"classification"})
    Options = ClassificationOptions

    def evaluate(self, model, dataset, options, run):
        from tunery import describe

        gold, predicted, confidence = [], [], []
        for batch in run.batches(dataset, options.batch_size):
            logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits.float()
            probs = logits.softmax(-1)
            best = probs.max(-1)
            gold += batch["labels"].tolist()
            predicted += best.indices.tolist()
            confidence += best.values.tolist()
        labels = list(run.label_names or range(logits.shape[-1]))
        metrics, matrix = scores(gold, predicted, [str(label) for label in labels])
        wrong = sorted((i for i in range(len(gold)) if gold[i] != predicted[i]), key=lambda i: -confidence[i])
        worst = [{**describe(dataset[i], run), "predicted": labels[predicted[i]], "confidence": confidence[i]}
                 for i in wrong[:options.worst]]
        return EvalResult(metrics, worst=worst, details={"confusion_matrix": {"labels": labels, "matrix": matrix}})


@hookimpl
def tunery_register_evaluators(registry):
    registry.add(ClassificationEval())
