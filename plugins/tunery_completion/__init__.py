"""Formatter ``completion``: plain text (a column, or .txt lines); every token is learned.

A text longer than ``data.max_length`` is split into windows (overlapping by ``stride``
tokens when set), so no text is lost to truncation."""

from __future__ import annotations

import dataclasses

from tunery import Formatter, RowError, bos_ids, encode, eos_ids, hookimpl, text_column


@dataclasses.dataclass
class CompletionOptions:
    text: str = "text"
    stride: int = 0  # tokens of overlap between consecutive windows of a long text (at least 1 is kept)
    add_eos: bool = True


class Completion(Formatter):
    name = "completion"
    description = "plain text documents, split into max-length windows"
    task = "causal_lm"
    Options = CompletionOptions

    def format(self, row, tokenizer, options, run):
        text = text_column(row, options.text)
        ids = bos_ids(tokenizer) + encode(tokenizer, text) + (eos_ids(tokenizer) if options.add_eos else [])
        size = run.config.data.max_length
        if options.stride >= size:
            raise RowError("bad option", f"format.stride ({options.stride}) must be below data.max_length ({size})")
        if len(ids) < 2:
            raise RowError("empty text", "the text has fewer than two tokens")
        # Windows overlap by at least one token: a window's first token is context, never predicted.
        overlap = max(options.stride, 1)
        windows, start, step = [], 0, size - overlap
        while True:
            window = ids[start:start + size]
            labels = list(window)
            if start:  # overlapping tokens were already learned in the previous window
                labels[:overlap] = [-100] * overlap
            windows.append({"input_ids": window, "labels": labels})
            if start + size >= len(ids):
                break
            start += step
        return windows


@hookimpl
def tunery_register_formatters(registry):
    registry.add(Completion())
