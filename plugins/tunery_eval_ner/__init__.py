"""Evaluator ``ner``: entity-level precision, recall and F1 (micro-averaged, and per entity type)
with ``seqeval``, from the tag predicted for each word's first sub-token; token accuracy too.
The sentences with the most wrong entities are kept, with the gold and predicted entities."""

from __future__ import annotations

import dataclasses

from tunery import EvalResult, Evaluator, hookimpl


@dataclasses.dataclass
class NerOptions:
    batch_size: int | None = None  # default: training.batch_size
    worst: int = 5  # sentences with the most wrong entities kept for error analysis (0: none)


class NerEval(Evaluator):
    name = "ner"
    description = "entity-level precision/recall/F1 per type (seqeval) for token classification"
    tasks = frozenset({"token_classification"})
    Options = NerOptions
    requires = ("seqeval",)

    def evaluate(self, model, dataset, options, run):
        from seqeval.metrics import accuracy_score, classification_report
        from seqeval.metrics.sequence_labeling import get_entities

        names = run.label_names
        gold, predicted, words = [], [], []
        start = 0
        for batch in run.batches(dataset, options.batch_size):
            best = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.argmax(-1).tolist()
            for example, row in zip(dataset[start:start + len(best)], best):
                first = example.get("_first") or [i for i, t in enumerate(example["labels"]) if t != -100]
                gold.append([names[example["labels"][i]] for i in first])
                predicted.append([names[row[i]] for i in first])
                words.append(_words(run.tokenizer, example["input_ids"], first))
            start += len(best)
        report = classification_report(gold, predicted, output_dict=True, zero_division=0)
        micro = report.get("micro avg", {})
        metrics = {"f1": micro.get("f1-score", 0.0), "precision": micro.get("precision", 0.0),
                   "recall": micro.get("recall", 0.0), "accuracy": accuracy_score(gold, predicted),
                   "sentences": len(gold)}
        for kind, values in report.items():
            if not kind.endswith(" avg"):
                metrics.update({f"f1/{kind}": values["f1-score"], f"precision/{kind}": values["precision"],
                                f"recall/{kind}": values["recall"], f"support/{kind}": int(values["support"])})

        def entities(tags, text):
            return [f"{kind}: {' '.join(text[a:b + 1])}" for kind, a, b in get_entities(tags)]

        wrong = [len(set(get_entities(g)) ^ set(get_entities(p))) for g, p in zip(gold, predicted)]
        order = sorted((i for i in range(len(gold)) if wrong[i]), key=lambda i: -wrong[i])[:options.worst]
        worst = [{"text": " ".join(words[i]), "gold": entities(gold[i], words[i]),
                  "predicted": entities(predicted[i], words[i]), "wrong_entities": wrong[i]} for i in order]
        return EvalResult(metrics, worst=worst)


def _words(tokenizer, ids: list[int], first: list[int]) -> list[str]:
    """The text of each word: its sub-tokens from its first to the next word's first."""
    ends = [*first[1:], len(ids)]
    return [tokenizer.decode(ids[a:b], skip_special_tokens=True).strip() for a, b in zip(first, ends)]


@hookimpl
def tunery_register_evaluators(registry):
    registry.add(NerEval())
