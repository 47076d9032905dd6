"""Scoring a batch with a (possibly adapted) model: logits aligned with the input, and losses.

Evaluators use these instead of ``model(**batch).loss``: the loss is computed here from the
logits, so it is the plain task loss for every method. A model's own loss may carry extras
(AdaLoRA adds its orthogonality penalty, and an AdaLoRA adapter loaded for inference fails
when given ``labels``), and prompt-learning methods return logits for their virtual tokens too.
"""

from __future__ import annotations

from typing import Any

from .collate import IGNORE_INDEX


def logits(model: Any, batch: dict) -> Any:
    """The model's logits for ``batch`` (labels are not passed to the model). For a causal LM
    the positions of virtual tokens a method put in front are dropped, so position ``i`` of the
    result belongs to ``batch["input_ids"][:, i]``."""
    out = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    length = batch["input_ids"].shape[1]
    if out.dim() == 3 and out.shape[1] > length:
        out = out[:, -length:]
    return out


def loss_sum(model: Any, batch: dict, task: str) -> tuple[float, int]:
    """Summed loss over ``batch`` and what it is summed over: predicted tokens (causal LM, the
    labels shifted by one as the model's own loss does) or examples (classification)."""
    import torch.nn.functional as F

    scores = logits(model, batch).float()
    labels = batch["labels"]
    if task == "causal_lm":
        scores, labels = scores[:, :-1], labels[:, 1:]
    loss = F.cross_entropy(scores.reshape(-1, scores.shape[-1]), labels.reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="sum")
    return float(loss), int((labels != IGNORE_INDEX).sum())
