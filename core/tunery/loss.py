"""Causal-LM loss from hidden states, in chunks: the full ``[batch, tokens, vocab]`` logits never exist.

The model runs with ``logits_to_keep=1`` (one position's logits instead of all of them) and
``output_hidden_states=True``; the output head is then applied only to the positions that carry
a label, a chunk at a time, each chunk recomputed in the backward pass (activation
checkpointing), so the memory for logits is one chunk's instead of the whole batch's. The value
equals the model's own loss (mean over labelled tokens, or sum / ``num_items_in_batch``).

Works for every transformers causal LM that accepts ``logits_to_keep`` (transformers >= 4.45),
alone or wrapped by a peft adapter (not prompt-learning adapters, which add virtual tokens);
:func:`supports_chunked_loss` says whether a model qualifies.
"""

from __future__ import annotations

import inspect
from typing import Any

from .collate import IGNORE_INDEX

CHUNK_TOKENS = 1024


def _base(model: Any) -> Any:
    """The transformers model under a peft wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def supports_chunked_loss(model: Any) -> bool:
    """Whether :func:`chunked_causal_lm_loss` computes exactly ``model``'s own loss."""
    config = getattr(model, "active_peft_config", None)
    if config is not None and getattr(config, "is_prompt_learning", False):
        return False
    base = _base(model)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if head is None or not hasattr(head, "weight"):
        return False
    if any(getattr(base.config, key, None) not in (None, 1, 1.0) for key in ("logit_scale", "logits_scaling")):
        return False  # Cohere, Granite: the forward rescales the logits
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def chunked_causal_lm_loss(model: Any, inputs: dict, num_items_in_batch: Any = None,
                           chunk_tokens: int = CHUNK_TOKENS, unwrapped: Any = None) -> Any:
    """The causal-LM training loss of ``inputs`` (which hold ``labels``) for ``model``;
    ``unwrapped`` is the model under a DDP wrapper, where the output head is found."""
    import torch
    import torch.nn.functional as F
    from torch.utils.checkpoint import checkpoint

    inputs = {"use_cache": False, **inputs}
    labels = inputs.pop("labels")
    outputs = model(**inputs, logits_to_keep=1, output_hidden_states=True)
    hidden = outputs.hidden_states[-1]
    base = _base(unwrapped if unwrapped is not None else model)
    head = base.get_output_embeddings()
    softcap = getattr(base.config, "final_logit_softcapping", None)
    targets = labels[..., 1:]
    keep = targets != IGNORE_INDEX
    states = hidden[..., :-1, :][keep]
    targets = targets[keep]

    def chunk_loss(h, y):
        logits = head(h).float()
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        return F.cross_entropy(logits, y, reduction="sum")

    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, targets.numel(), chunk_tokens):
        h, y = states[start:start + chunk_tokens], targets[start:start + chunk_tokens]
        total = total + (checkpoint(chunk_loss, h, y, use_reentrant=False) if h.requires_grad else chunk_loss(h, y))
    if num_items_in_batch is not None:
        return total / torch.as_tensor(num_items_in_batch, device=total.device)
    return total / max(targets.numel(), 1)


def trainer_loss(trainer: Any, model: Any, inputs: dict, num_items_in_batch: Any = None) -> Any:
    """:func:`chunked_causal_lm_loss` scaled the way ``transformers.Trainer.compute_loss`` scales
    a model's own loss (gradient accumulation, token averaging across processes)."""
    scaled = trainer.model_accepts_loss_kwargs and num_items_in_batch is not None
    loss = chunked_causal_lm_loss(model, inputs, num_items_in_batch if scaled else None,
                                  unwrapped=trainer.accelerator.unwrap_model(model))
    if scaled and trainer.args.average_tokens_across_devices:
        loss = loss * trainer.accelerator.num_processes
    return loss


def use_chunked_loss(args: Any, model: Any) -> bool:
    """Chunked loss where it is exact and safe: not with FSDP or DeepSpeed, which shard the
    output head and expect it to run inside the model's forward."""
    return not (args.fsdp or args.deepspeed) and supports_chunked_loss(model)


def labelled_logits(logits: Any, labels: Any) -> Any:
    """The logits that predict a labelled token, one row each (a causal LM's 3-d logits are
    shifted by one position and masked with ``labels``), or every row of a classifier's 2-d logits:
    what a loss over output distributions (KL, smoothing) compares."""
    if logits.dim() == 2:
        return logits
    keep = labels[:, 1:] != IGNORE_INDEX
    return logits[:, :-1][keep]


def loss_and_logits(inner: Any, model: Any, inputs: dict) -> tuple[Any, Any]:
    """For an extension's ``compute_loss``: the inner loss and the logits of the same forward pass
    (a second pass where the inner loss came without outputs)."""
    loss, outputs = inner(model, inputs, return_outputs=True)
    logits = getattr(outputs, "logits", None) if outputs is not None else None
    if logits is None:
        logits = model(**{k: v for k, v in inputs.items() if k != "labels"}).logits
    return loss, logits
