"""Loading tokenizers and models from resolved local files (heavy imports inside functions)."""

from __future__ import annotations

import logging
import pickle
from typing import Any

from .errors import ModelSourceError
from .models import ResolvedModel

log = logging.getLogger("tunery")

HEAD_MODULES = ("classifier", "score", "lm_head")  # never quantized: heads are trained or tied

HEADS = {"causal_lm": "AutoModelForCausalLM", "classification": "AutoModelForSequenceClassification",
         "seq2seq": "AutoModelForSeq2SeqLM", "token_classification": "AutoModelForTokenClassification"}


def task_of(path: str) -> str | None:
    """The model task a saved model's ``config.json`` names (its architecture), or None."""
    import json
    import os

    try:
        with open(os.path.join(path, "config.json")) as f:
            config = json.load(f)
    except (OSError, ValueError):
        return None
    arch = " ".join(config.get("architectures") or [])
    if "ForTokenClassification" in arch:
        return "token_classification"
    if "ForSequenceClassification" in arch:
        return "classification"
    if config.get("is_encoder_decoder") or "ForConditionalGeneration" in arch:
        return "seq2seq"
    return None


def _kwargs(resolved: ResolvedModel, trust_remote_code: bool) -> dict:
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if resolved.gguf_file:
        kwargs["gguf_file"] = resolved.gguf_file
    return kwargs


def load_tokenizer(resolved: ResolvedModel, trust_remote_code: bool = False):
    """The model's tokenizer, with a pad token (the eos token when the model has none)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved.path, **_kwargs(resolved, trust_remote_code))
    except (OSError, ValueError) as exc:
        raise ModelSourceError(f"could not load the tokenizer of '{resolved.reference}' from {resolved.path}: {exc}") from None
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelSourceError(f"the tokenizer of '{resolved.reference}' has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def loading_kwargs(settings: Any) -> dict:
    """``from_pretrained`` arguments of a run's ``model_loading`` section."""
    kwargs = {"dtype": settings.dtype}
    if settings.attn_implementation:
        kwargs["attn_implementation"] = settings.attn_implementation
    return kwargs


def load_model(
    resolved: ResolvedModel,
    task: str,
    *,
    label_names: list[str] | None = None,
    num_labels: int | None = None,
    pad_token_id: int | None = None,
    extra: dict | None = None,
    trust_remote_code: bool = False,
):
    """Load ``resolved`` with the head for ``task`` (``causal_lm``, ``classification``,
    ``seq2seq`` or ``token_classification``)."""
    import torch
    import transformers

    kwargs = _kwargs(resolved, trust_remote_code)
    kwargs.update(extra or {})
    kwargs.setdefault("dtype", torch.float32)
    if isinstance(kwargs["dtype"], str) and kwargs["dtype"] != "auto":
        kwargs["dtype"] = getattr(torch, kwargs["dtype"])
    cls = getattr(transformers, HEADS.get(task, HEADS["causal_lm"]))
    if task in ("classification", "token_classification"):
        if label_names:
            kwargs.update(num_labels=len(label_names), id2label=dict(enumerate(label_names)),
                          label2id={n: i for i, n in enumerate(label_names)})
        elif num_labels:
            kwargs["num_labels"] = num_labels
    try:
        model = cls.from_pretrained(resolved.path, **kwargs)
    except pickle.UnpicklingError:
        raise ModelSourceError(
            f"'{resolved.reference}' ({resolved.path}) holds pickled weights with more than tensors in them; "
            "refused to load them (they could run code). Use a safetensors copy of the model"
        ) from None
    except (OSError, ValueError, KeyError) as exc:
        raise ModelSourceError(f"could not load '{resolved.reference}' from {resolved.path} as {task}: {exc}") from None
    if getattr(model.config, "pad_token_id", None) is None and pad_token_id is not None:
        model.config.pad_token_id = pad_token_id
    return model
