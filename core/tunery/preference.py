"""Preference learning shared by the reward and DPO methods, their evaluator and ``tunery score``.

* the losses: pairwise Bradley-Terry for reward models, DPO (sigmoid, IPO, hinge) for policies;
* scoring a batch of pairs: one forward pass over chosen and rejected together, giving a reward
  model's scores or a policy's summed log-probabilities of the response tokens;
* :class:`AdapterBackedMethod`: a method that trains through another installed method
  (``adapter: lora`` by default, ``full``, or any other), keeping that method's options.

Heavy imports stay inside the functions: this module is imported when plugins register.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

from .collate import IGNORE_INDEX
from .errors import ConfigError, IncompatibleError
from .members import Method
from .options import closest, parse

if TYPE_CHECKING:  # pragma: no cover
    from .registry import Registry
    from .run import RunContext

DPO_LOSSES = ("sigmoid", "ipo", "hinge")


# --------------------------------------------------------------------------- losses


def bradley_terry_loss(chosen: Any, rejected: Any, margin: Any = None) -> Any:
    """Mean of ``-log sigmoid(r_chosen - r_rejected - margin)`` over the pairs."""
    import torch.nn.functional as F

    diff = chosen - rejected
    if margin is not None:
        diff = diff - margin.to(diff.dtype)
    return -F.logsigmoid(diff).mean()


def dpo_loss(policy_chosen: Any, policy_rejected: Any, ref_chosen: Any, ref_rejected: Any, *,
             beta: float, kind: str = "sigmoid", label_smoothing: float = 0.0) -> tuple[Any, Any, Any]:
    """Per-pair DPO losses and the implicit rewards ``beta * (log pi - log pi_ref)`` of chosen and
    rejected responses (detached). ``kind``: ``sigmoid`` (DPO, with optional label smoothing as in
    conservative DPO), ``ipo`` (squared distance to ``1 / (2 beta)``; pass per-token mean
    log-probs) or ``hinge`` (SLiC)."""
    import torch.nn.functional as F

    logits = (policy_chosen - policy_rejected) - (ref_chosen - ref_rejected)
    if kind == "sigmoid":
        losses = (-F.logsigmoid(beta * logits) * (1 - label_smoothing)
                  - F.logsigmoid(-beta * logits) * label_smoothing)
    elif kind == "ipo":
        losses = (logits - 1 / (2 * beta)) ** 2
    elif kind == "hinge":
        losses = F.relu(1 - beta * logits)
    else:
        raise ConfigError(f"unknown DPO loss '{kind}'; use one of {', '.join(DPO_LOSSES)}")
    chosen_rewards = beta * (policy_chosen - ref_chosen).detach()
    rejected_rewards = beta * (policy_rejected - ref_rejected).detach()
    return losses, chosen_rewards, rejected_rewards


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


# --------------------------------------------------------------------------- methods on top of another


@dataclasses.dataclass
class AdapterChoice:
    """Which installed method trains the weights underneath (and its own options)."""

    adapter: str = "lora"  # lora, full, or any other installed method
    adapter_options: dict = dataclasses.field(default_factory=dict)  # that method's config section


class AdapterBackedMethod(Method):
    """A preference method that trains through another installed method, named by the
    ``adapter`` option: that method wraps or unfreezes the model, saves, loads and merges;
    this one brings the loss. Constructed with the methods registry it is registered into."""

    tasks: ClassVar[frozenset[str]] = frozenset({"preference"})
    supports_packing: ClassVar[bool] = False
    accepts_quantized: ClassVar[bool] = True  # refused in check() when the adapter method cannot
    can_merge: ClassVar[bool] = True  # delegated; the adapter method refuses when it cannot

    def __init__(self, methods: Registry):
        self.methods = methods

    def parse_options(self, raw, where):
        options = parse(self.Options, raw, where)
        self.adapter(options, where)  # validate the adapter's own section now
        return options

    def adapter(self, options: Any, where: str = "method") -> tuple[Method, Any]:
        """The method underneath and its parsed options."""
        name = options.adapter
        if name not in self.methods:
            raise ConfigError(f"config key '{where}.adapter': no method named '{name}'"
                              f"{closest(name, self.methods.names())}; installed: {', '.join(self.methods.names())}")
        method = self.methods.get(name)
        if isinstance(method, AdapterBackedMethod) or "preference" in method.tasks:
            raise ConfigError(f"config key '{where}.adapter': '{name}' is itself a preference method; "
                              "name a method that makes weights trainable (lora, full, ...)")
        return method, method.parse_options(options.adapter_options, f"{where}.adapter_options")

    def output(self, options: Any) -> str:
        method, inner = self.adapter(options)
        return method.output(inner)

    def check(self, options, run):
        method, inner = self.adapter(options)
        if run.quantized and not method.accepts_quantized:
            raise IncompatibleError(f"method '{self.name}' with adapter '{method.name}' cannot train a quantized base; "
                                    "use quantizer 'none' or an adapter that can (lora)")
        method.check(inner, run)

    def fully_trained_modules(self, options, run):
        method, inner = self.adapter(options)
        return method.fully_trained_modules(inner, run)

    def prepare(self, model, options, run):
        method, inner = self.adapter(options)
        return method.prepare(model, inner, run)

    def save(self, model, path, options, run):
        method, inner = self.adapter(options)
        method.save(model, path, inner, run)

    def load(self, base_model, path, options):
        method, inner = self.adapter(options)
        return method.load(base_model, path, inner)

    def merge(self, model, options):
        method, inner = self.adapter(options)
        return method.merge(model, inner)
