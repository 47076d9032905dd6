"""Formatter ``completion``: plain text (a column, or .txt lines); every token is learned.

A text longer than ``data.max_length`` is split into windows (overlapping by ``stride``
tokens when set), so no text is lost to truncation."""

from __future__ import annotations

import dataclasses

from tunery import Formatter, RowError, bos_ids, encode_batch, eos_ids, hookimpl, text_column


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

    def format_batch(self, rows, tokenizer, options, run):
        size = run.config.data.max_length
        if options.stride >= size:
            error = RowError("bad option", f"format.stride ({options.stride}) must be below data.max_length ({size})")
            return [error] * len(rows)
        out, texts, where = [], [], []
        for row in rows:  # each row's text (or its error); the texts are tokenized together
            try:
                texts.append(text_column(row, options.text))
            except RowError as exc:
                out.append(exc)
                continue
            where.append(len(out))
            out.append(None)
        bos, eos = bos_ids(tokenizer), eos_ids(tokenizer) if options.add_eos else []
        for at, ids in zip(where, encode_batch(tokenizer, texts)):
            ids = bos + ids + eos
            out[at] = (RowError("empty text", "the text has fewer than two tokens") if len(ids) < 2
                       else self._windows(ids, size, options.stride))
        return out

    @staticmethod
    def _windows(ids, size, stride):
        """Windows of ``size`` tokens; they overlap by at least one token, as a window's first
        token is context, never predicted."""
        overlap = max(stride, 1)
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
