"""Formatter ``text2text``: source and target text -> seq2seq examples (T5, BART, mT5).

The encoder reads ``prefix + source`` (e.g. ``"translate English to German: "``), the decoder
learns the target. Source and target are cut separately: to ``max_source_length`` and
``max_target_length`` when set (``data.truncation`` decides: ``right``/``left`` cut, ``error``
or ``drop`` refuse the row), otherwise both follow ``data.max_length``."""

from __future__ import annotations

import dataclasses

from tunery import ConfigError, Formatter, RowError, hookimpl, note, text_column


@dataclasses.dataclass
class Text2TextOptions:
    source: str = "source"  # column of the input text
    target: str = "target"  # column of the output text
    prefix: str = ""  # put before every source, e.g. "translate English to German: "
    max_source_length: int | None = None  # default: data.max_length
    max_target_length: int | None = None  # default: data.max_length

    def validate(self, where):
        for key in ("max_source_length", "max_target_length"):
            value = getattr(self, key)
            if value is not None and value < 2:
                raise ConfigError(f"config key '{where}.{key}' must be at least 2 (or unset), got {value}")


class Text2Text(Formatter):
    name = "text2text"
    description = "source/target text pairs for encoder-decoder models (translation, summarisation)"
    task = "seq2seq"
    Options = Text2TextOptions

    def format(self, row, tokenizer, options, run):
        source = options.prefix + text_column(row, options.source)
        target = text_column(row, options.target)
        policy = run.config.data.truncation
        eos = tokenizer.eos_token_id
        ids = _fit(tokenizer(source)["input_ids"], options.max_source_length, policy, "source", eos)
        labels = _fit(tokenizer(text_target=target)["input_ids"], options.max_target_length, policy, "target", eos)
        return {"input_ids": ids, "labels": labels}


def _fit(ids: list[int], limit: int | None, policy: str, part: str, eos: int | None) -> list[int]:
    """``ids`` cut to ``limit`` tokens, keeping a final end-of-sequence token when cutting right."""
    ids = list(ids)
    if limit is None or len(ids) <= limit:
        return ids
    if policy in ("error", "drop"):
        raise RowError("too long", f"{part}: {len(ids)} tokens > max_{part}_length {limit} (data.truncation={policy})")
    note(f"{part} truncated to max_{part}_length")
    if policy == "right":
        return ids[:limit - 1] + ids[-1:] if ids[-1] == eos else ids[:limit]
    return ids[-limit:]


@hookimpl
def tunery_register_formatters(registry):
    registry.add(Text2Text())
