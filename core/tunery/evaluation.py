"""Running evaluators: in a run (before, during, after training) and on any run folder or model
(``tunery eval``); early stopping settings; comparing finished runs side by side.

Evaluators are plugins (:class:`tunery.Evaluator`); this module only calls them, gathers their
metrics as ``{"evaluator/metric": value}`` and keeps their worst examples and records.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from .collate import IGNORE_INDEX
from .errors import ConfigError
from .members import EvalResult
from .membercalls import member_call

if TYPE_CHECKING:  # pragma: no cover
    from .config import RunConfig
    from .context import RunContext

log = logging.getLogger("tunery")


def run_evaluators(run: RunContext, model: Any, examples: list[dict],
                   run_data_only: bool = False) -> dict[str, EvalResult]:
    """Each configured evaluator's result on ``examples``, in config order. Evaluators that
    measure the run's data are left out when there is none, and those that read their own data
    when ``run_data_only``; the model is left in train/eval mode as it was."""
    import torch

    chosen = [(c, run.engine.evaluators.get(c.name)) for c in run.config.evaluators]
    chosen = [(c, e) for c, e in chosen if (examples or not e.uses_run_data) and (e.uses_run_data or not run_data_only)]
    if not chosen:
        return {}
    was_training = model.training
    model.eval()
    results: dict[str, EvalResult] = {}
    try:
        with torch.no_grad():
            for choice, evaluator in chosen:
                result = member_call(run, "evaluator", "evaluate", model, examples, choice.options, run, member=evaluator)
                results[choice.name] = result if isinstance(result, EvalResult) else EvalResult(dict(result))
    finally:
        model.train(was_training)
    return results


def flat_metrics(results: Mapping[str, EvalResult]) -> dict[str, Any]:
    """``{"evaluator/metric": value}`` of every result."""
    return {f"{name}/{k}": v for name, result in results.items() for k, v in result.metrics.items()}


def numeric(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The metrics that are plain numbers (for trackers, tables and comparisons)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def details_json(results: Mapping[str, EvalResult]) -> dict:
    """The worst examples, records and details of each result (``evaluations/<phase>.json``)."""
    out = {}
    for name, r in results.items():
        kept = {k: v for k, v in (("worst", r.worst), ("records", r.records), ("details", r.details)) if v}
        if kept:
            out[name] = kept
    return out


# ----------------------------------------------------------------------------- helpers for evaluators


def split_example(example: dict) -> tuple[list[int], list[int]]:
    """A causal-LM example as (prompt ids, target ids): the prompt is the leading run of
    positions without a label, the target every labelled token."""
    ids, labels = example["input_ids"], example["labels"]
    start = next((i for i, label in enumerate(labels) if label != IGNORE_INDEX), len(labels))
    return list(ids[:start]), [t for t in labels if t != IGNORE_INDEX]


def describe(example: dict, run: RunContext, limit: int = 500) -> dict:
    """A readable form of one example for error analysis: prompt and target text (causal LM),
    source and target (seq2seq), text and tags (token classification) or text and label
    (classification), cut to ``limit`` characters."""
    decode = run.tokenizer.decode

    def cut(text: str) -> str:
        return text if len(text) <= limit else text[:limit] + "..."

    if run.data_task == "seq2seq":
        return {"source": cut(decode(example["input_ids"], skip_special_tokens=True)),
                "target": cut(decode([t for t in example["labels"] if t != IGNORE_INDEX], skip_special_tokens=True))}
    if run.data_task == "token_classification":
        names = run.label_names or []
        tags = [names[t] if 0 <= t < len(names) else t for t in example["labels"] if t != IGNORE_INDEX]
        return {"text": cut(decode(example["input_ids"], skip_special_tokens=True)), "tags": " ".join(map(str, tags))}
    if isinstance(example.get("labels"), list):
        prompt, target = split_example(example)
        return {"prompt": cut(decode(prompt, skip_special_tokens=True)),
                "target": cut(decode(target, skip_special_tokens=True))}
    out = {"text": cut(decode(example["input_ids"], skip_special_tokens=True))}
    if "labels" in example:
        label = example["labels"]
        out["label"] = run.label_names[label] if run.label_names and 0 <= label < len(run.label_names) else label
    return out


def logits(model: Any, batch: dict) -> Any:
    """The model's logits for ``batch``, without passing it the labels, aligned with the labels:
    for a seq2seq model the decoder's (fed the labels shifted right, as in training); for a causal LM the positions of virtual tokens that prompt-learning methods put in front are
    dropped, so position ``i`` belongs to ``batch["input_ids"][:, i]``. Evaluators compute losses
    from these rather than use the model's own loss, which may carry extras (AdaLoRA adds its
    orthogonality penalty, and a reloaded AdaLoRA adapter fails when given ``labels``)."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    if getattr(getattr(model, "config", None), "is_encoder_decoder", False):  # seq2seq: the decoder's logits for the labels
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        inputs["decoder_input_ids"] = base.prepare_decoder_input_ids_from_labels(labels=batch["labels"])
        return model(**inputs).logits
    out = model(**inputs).logits
    length = batch["input_ids"].shape[1]
    return out[:, -length:] if out.dim() == 3 and out.shape[1] > length else out


def loss_sum(logits: Any, labels: Any, causal: bool) -> tuple[float, int]:
    """Summed cross-entropy of a batch and what it is summed over: predicted tokens (causal LM,
    labels shifted by one as the model's own loss does; seq2seq and token classification, not
    shifted) or examples (classification)."""
    import torch.nn.functional as F

    logits = logits.float()
    if causal:
        logits, labels = logits[:, :-1], labels[:, 1:]
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX,
                           reduction="sum")
    return float(loss), int((labels != IGNORE_INDEX).sum())


def example_losses(logits: Any, labels: Any, causal: bool) -> list[float]:
    """Mean cross-entropy of each example of a batch: over its predicted (shifted, labelled)
    tokens for a causal LM, over its labelled tokens for seq2seq and token classification
    (``causal`` false, 3-d logits), or of its one label for classification."""
    import torch.nn.functional as F

    logits = logits.float()
    if logits.dim() == 2:
        return F.cross_entropy(logits, labels, reduction="none").tolist()
    if causal:
        logits, labels = logits[:, :-1], labels[:, 1:]
    token = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none")
    counts = (labels != IGNORE_INDEX).sum(1).clamp(min=1)
    return (token.sum(1) / counts).tolist()


# ----------------------------------------------------------------------------- early stopping


def check_early_stopping(config: RunConfig) -> None:
    """Refuse early stopping that cannot work: no periodic evaluation, or a metric of an
    evaluator the run does not use."""
    stop = config.early_stopping
    if stop.metric is None:
        return
    if not config.training.eval_steps:
        raise ConfigError("config key 'early_stopping.metric' needs training.eval_steps (evaluate every N steps)")
    evaluator = stop.metric.split("/", 1)[0]
    names = [c.name for c in config.evaluators]
    if evaluator not in names:
        raise ConfigError(
            f"config key 'early_stopping.metric': '{stop.metric}' names evaluator '{evaluator}', which this run "
            f"does not use; its evaluators: {', '.join(names) or 'none'} (metrics are named evaluator/metric)"
        )


def early_stopping_args(config: RunConfig) -> dict:
    """The TrainingArguments for early stopping: best-metric tracking and checkpoints at every
    evaluation, so that the best one can be kept."""
    stop, t = config.early_stopping, config.training
    if stop.metric is None:
        return {}
    return {"metric_for_best_model": f"eval_{stop.metric}", "greater_is_better": stop.higher_is_better,
            "load_best_model_at_end": stop.keep_best, "save_strategy": "steps",
            "save_steps": t.save_steps or t.eval_steps}


def best_checkpoint(run: RunContext, state: Any) -> dict | None:
    """Which checkpoint was best on the early-stopping metric (for metrics.json and the report)."""
    stop = run.config.early_stopping
    if stop.metric is None or state.best_model_checkpoint is None:
        return None
    path = Path(state.best_model_checkpoint)
    return {"metric": stop.metric, "value": state.best_metric, "step": state.best_global_step,
            "checkpoint": str(path.relative_to(run.output_dir)) if path.is_relative_to(run.output_dir) else str(path),
            "kept": stop.keep_best}


def compare_runs(run_dirs: Iterable[str]) -> dict[str, list]:
    """Each numeric metric of the runs, side by side: ``{name: [value per run or None]}``.
    After-training metrics first, then the baselines (``before:``), then training figures."""
    loaded = []
    for path in run_dirs:
        file = Path(path) / "metrics.json"
        if not file.is_file():
            raise ConfigError(f"'{path}' has no metrics.json: is it a finished run folder?")
        loaded.append(json.loads(file.read_text()))
    table: dict[str, list] = {}
    sections = (("after", ""), ("before", "before: "), ("train", "train: "))
    for section, prefix in sections:
        for i, metrics in enumerate(loaded):
            for key, value in numeric(metrics.get(section) or {}).items():
                table.setdefault(prefix + key, [None] * len(loaded))[i] = value
    return table
