"""Helpers formatters share: reading text columns strictly, and tokenizing prompt/response pairs
so that the loss falls on exactly the response tokens."""

from __future__ import annotations

import math
import weakref
from typing import Any, Mapping

from .collate import IGNORE_INDEX
from .errors import RowError


def text_column(row: Mapping[str, Any], column: str, *, required: bool = True, allow_empty: bool = False) -> str:
    """The string in ``row[column]``; a RowError names the column when it is missing, not text,
    or empty."""
    if column not in row or row[column] is None:
        if not required:
            return ""
        raise missing(row, column)
    value = row[column]
    if isinstance(value, float) and not math.isfinite(value):
        raise RowError("wrong type", f"'{column}' is {value}, not text")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise RowError("wrong type", f"'{column}' must be text, got {type(value).__name__}")
    if not allow_empty and required and not value.strip():
        raise RowError("empty text", f"'{column}' is empty")
    return value


def missing(row: Mapping[str, Any], column: str) -> RowError:
    """The error for a required ``column`` that ``row`` lacks or holds null in."""
    if column in row:
        return RowError("empty text", f"column '{column}' is empty/null")
    return RowError("missing column", f"no '{column}' (columns present: {', '.join(map(str, row)) or 'none'})")


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens (straight from the Rust tokenizer when that is
    what ``tokenizer(text)`` would call: the same ids, about half the time)."""
    return encode_batch(tokenizer, [text])[0]


def encode_batch(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Token ids of each of ``texts`` without special tokens, in one call to the tokenizer: the
    ids :func:`encode` gives one text at a time."""
    if not texts:
        return []
    backend = _rust_backend(tokenizer)
    if backend is not None:
        if len(texts) == 1:
            return [backend.encode(texts[0], add_special_tokens=False).ids]
        return [encoding.ids for encoding in backend.encode_batch(texts, add_special_tokens=False)]
    return [list(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in texts]  # any tokenizer


def _rust_backend(tokenizer: Any) -> Any:
    """The ``tokenizers.Tokenizer`` that ``tokenizer.__call__`` would run unchanged (no
    truncation or padding set on it, special tokens matched the same way, no subclass changing
    the encoding), else None."""
    cls = type(tokenizer)
    plain = _PLAIN.get(cls)
    if plain is None:
        from transformers.tokenization_utils_tokenizers import TokenizersBackend

        plain = _PLAIN[cls] = issubclass(cls, TokenizersBackend) and all(
            getattr(cls, name) is getattr(TokenizersBackend, name) for name in ("__call__", "_encode_plus"))
    if not plain:
        return None
    backend = tokenizer._tokenizer
    if backend.truncation is not None or backend.padding is not None:
        return None
    if backend.encode_special_tokens != bool(tokenizer.split_special_tokens):
        return None
    return backend


_PLAIN: dict[type, bool] = {}  # tokenizer class -> whether its __call__ is TokenizersBackend's
_BOS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def bos_ids(tokenizer: Any) -> list[int]:
    """``[bos]`` when the tokenizer puts a bos token before text by default, else ``[]``."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return []
    try:
        known = _BOS.get(tokenizer)
    except TypeError:  # not weakly referable
        known = None
    if known is None or known[0] != bos:
        probe = tokenizer("a", add_special_tokens=True)["input_ids"]
        known = (bos, bool(probe) and probe[0] == bos)
        try:
            _BOS[tokenizer] = known
        except TypeError:
            pass
    return [bos] if known[1] else []


def eos_ids(tokenizer: Any) -> list[int]:
    eos = tokenizer.eos_token_id
    return [eos] if eos is not None else []


def prompt_response(tokenizer: Any, prompt: str, response: str, *, add_eos: bool = True,
                    prompt_is_rendered: bool = False) -> dict:
    """``{"input_ids", "labels"}`` for ``prompt + response (+eos)`` with the prompt masked.

    ``prompt_is_rendered`` means ``prompt`` came from a chat template and already holds any bos."""
    example = prompt_response_batch(tokenizer, [prompt], [response], add_eos=add_eos,
                                    prompt_is_rendered=prompt_is_rendered)[0]
    if isinstance(example, RowError):
        raise example
    return example


def prompt_response_batch(tokenizer: Any, prompts: list[str], responses: list[str], *, add_eos: bool = True,
                          prompt_is_rendered: bool = False) -> list[dict | RowError]:
    """:func:`prompt_response` for each pair of ``prompts`` and ``responses``, tokenized together;
    a pair whose response has no tokens gets a RowError in its place."""
    bos = [] if prompt_is_rendered else bos_ids(tokenizer)
    eos = eos_ids(tokenizer) if add_eos else []
    encoded = encode_batch(tokenizer, [*prompts, *responses])
    out: list = []
    for ids, response_ids in zip(encoded[:len(prompts)], encoded[len(prompts):]):
        response_ids += eos
        if not response_ids:
            out.append(RowError("empty response", "the response has no tokens"))
            continue
        if bos:
            ids[:0] = bos
        labels = [IGNORE_INDEX] * len(ids)
        labels += response_ids
        ids += response_ids
        out.append({"input_ids": ids, "labels": labels})
    return out


def chat_prompt_response(tokenizer: Any, messages: list[dict], response: str | list[dict], *,
                         allow_empty: bool = False) -> dict:
    """Like :func:`prompt_response`, with ``messages`` rendered by the tokenizer's chat template
    and ``response`` as the assistant's reply (or the list of messages that follow the prompt).
    The template's end-of-turn tokens are learned; an empty reply is refused unless
    ``allow_empty`` (then only its end-of-turn tokens are learned)."""
    turns = [{"role": "assistant", "content": response}] if isinstance(response, str) else response
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages + turns, tokenize=False)
    if not full.startswith(prompt):  # a template that rewrites earlier turns: fall back to prompt + reply
        if not isinstance(response, str):
            raise RowError("template mismatch", "the chat template renders the prompt differently once the "
                                                "reply follows; set format.template=plain")
        return prompt_response(tokenizer, prompt, response, prompt_is_rendered=True)
    prompt_ids = encode(tokenizer, prompt)
    rest = full[len(prompt):]
    response_ids = encode(tokenizer, rest.rstrip("\n") if rest.endswith("\n") else rest)
    if not response_ids or not allow_empty and not any(t["content"].strip() for t in turns):
        raise RowError("empty response", "the assistant reply is empty")
    return {"input_ids": prompt_ids + response_ids, "labels": [IGNORE_INDEX] * len(prompt_ids) + response_ids}


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))
