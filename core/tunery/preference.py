"""Scoring preference pairs, shared by the preference objectives (reward, DPO, ...), their
evaluator and ``tunery score``: one forward pass over chosen and rejected together gives a
reward model's scores or a policy's summed log-probabilities of the response tokens; per-step
metrics reach each log record.

Heavy imports stay inside the functions: this module is imported when plugins register.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .collate import IGNORE_INDEX

if TYPE_CHECKING:  # pragma: no cover
    from .context import RunContext


# --------------------------------------------------------------------------- scoring pairs


def stack_pairs(inputs: dict, pad_token_id: int) -> dict:
    """Chosen and rejected sequences of a collated batch as one batch (chosen rows first),
    padded to the same length: ``{"input_ids", "attention_mask", "labels"}``."""
    import torch

    length = max(inputs["chosen_input_ids"].shape[1], inputs["rejected_input_ids"].shape[1])

    def pad(t, value):
        return torch.nn.functional.pad(t, (0, length - t.shape[1]), value=value)

    out = {
        "input_ids": torch.cat([pad(inputs[f"{s}_input_ids"], pad_token_id) for s in ("chosen", "rejected")]),
        "attention_mask": torch.cat([pad(inputs[f"{s}_attention_mask"], 0) for s in ("chosen", "rejected")]),
    }
    if "chosen_labels" in inputs:
        out["labels"] = torch.cat([pad(inputs[f"{s}_labels"], IGNORE_INDEX) for s in ("chosen", "rejected")])
    return out


def pad_id(model: Any, run: RunContext) -> int:
    value = getattr(getattr(model, "config", None), "pad_token_id", None)
    return run.tokenizer.pad_token_id if value is None else value


def pair_scores(model: Any, inputs: dict, run: RunContext) -> tuple[Any, Any]:
    """A reward model's (one-output sequence classifier) scores of chosen and rejected."""
    both = stack_pairs(inputs, pad_id(model, run))
    scores = model(input_ids=both["input_ids"], attention_mask=both["attention_mask"]).logits[:, 0].float()
    n = inputs["chosen_input_ids"].shape[0]
    return scores[:n], scores[n:]


def sequence_logps(logits: Any, labels: Any, average: bool = False) -> Any:
    """Sum (or per-token mean) of the log-probabilities of the label tokens (``-100`` skipped)."""
    import torch

    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    mask = labels != IGNORE_INDEX
    picked = torch.gather(logits, 2, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    logps = (picked - torch.logsumexp(logits, dim=-1)) * mask
    total = logps.sum(-1)
    return total / mask.sum(-1).clamp(min=1) if average else total


def pair_logps(model: Any, inputs: dict, run: RunContext, average: bool = False) -> tuple[Any, Any]:
    """A causal LM's log-probabilities of the chosen and rejected responses (prompt masked)."""
    both = stack_pairs(inputs, pad_id(model, run))
    logits = model(input_ids=both["input_ids"], attention_mask=both["attention_mask"]).logits
    logps = sequence_logps(logits, both["labels"], average)
    n = inputs["chosen_input_ids"].shape[0]
    return logps[:n], logps[n:]


def score_examples(model: Any, examples: list[dict], run: RunContext, batch_size: int | None = None) -> list[tuple[float, float]]:
    """``(chosen, rejected)`` per pair: reward scores for a reward model (``run.model_task ==
    "classification"``), summed response log-probabilities for a causal LM. No gradients."""
    import torch

    score = pair_scores if run.model_task == "classification" else pair_logps
    out: list[tuple[float, float]] = []
    with torch.no_grad():
        for batch in run.batches(examples, batch_size):
            chosen, rejected = score(model, batch, run)
            out.extend(zip(chosen.tolist(), rejected.tolist()))
    return out


def pair_metrics(scores: list[tuple[float, float]]) -> dict[str, float]:
    """Share of pairs ranked right (chosen above rejected), mean margin, and the number of pairs."""
    n = len(scores)
    return {"accuracy": sum(c > r for c, r in scores) / max(n, 1),
            "margin": sum(c - r for c, r in scores) / max(n, 1), "pairs": n}


def record(store: dict, **values: Any) -> None:
    """Add one training step's metrics (tensors) to ``store`` (a plugin's part of ``run.state``)."""
    sums = store.setdefault("sums", {})
    for key, value in values.items():
        sums[key] = sums.get(key, 0.0) + float(value.float().mean())
    store["count"] = store.get("count", 0) + 1


def metrics_callback(store: dict, on_train_begin: Any = None) -> Any:
    """A ``TrainerCallback`` that puts the means of the metrics :func:`record` added to ``store``
    since the last log into each log record (so they reach ``train_log.jsonl``), and calls
    ``on_train_begin(model, train_dataloader)`` when training begins."""
    from transformers import TrainerCallback

    class PairMetrics(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
            if on_train_begin is not None:
                on_train_begin(model, train_dataloader)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs is not None and store.get("count"):
                logs.update({key: round(total / store["count"], 6) for key, total in store["sums"].items()})
            store.clear()

    return PairMetrics()


def precompute_values(run: Any, model: Any, examples: Any, names: tuple[str, ...], compute: Any) -> None:
    """Before the first step, once: ``compute(model, batch)`` (a tensor per name, one value per
    example) over every training example, without gradients and in eval mode, attached to the
    examples under ``names`` (so the batches carry them): e.g. the log-probabilities of a
    reference model that is the initial weights, for methods that cannot switch themselves off."""
    import torch

    from .datastore import add_example_values

    size = run.config.training.batch_size
    collected: list[list] = [[] for _ in names]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in run.batches(examples, size):
                for column, value in zip(collected, compute(model, batch)):
                    column.extend(value.tolist())
    finally:
        model.train(was_training)
    for name, column in zip(names, collected):
        add_example_values(examples, name, column)
