"""Formatter ``classification``: text (or a text pair) and a label -> sequence classification.

Labels may be strings or integers; the ordered label names are saved with the model."""

from __future__ import annotations

import dataclasses

from tunery import Formatter, RowError, hookimpl, text_column


@dataclasses.dataclass
class ClassificationOptions:
    text: str = "text"
    text_pair: str | None = None  # a second text column (e.g. premise / hypothesis)
    label: str = "label"
    labels: list[str] | None = None  # fixed label names (order = ids); default: those in the data


class Classification(Formatter):
    name = "classification"
    description = "text or text pairs with string or integer labels"
    task = "classification"
    Options = ClassificationOptions

    def label_names(self, rows, options):
        if options.labels:
            return list(options.labels)
        found = set()
        for row in rows:
            try:
                found.add(self._label(row, options))
            except RowError:  # missing or of the wrong type: reported when the row is formatted
                pass
        found.discard("")
        numeric = all(name.lstrip("-").isdigit() for name in found)
        return sorted(found, key=int) if numeric else sorted(found)

    @staticmethod
    def _label(row, options):
        value = row.get(options.label)
        if value is None:
            return ""
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise RowError("wrong type", f"'{options.label}' must be a string or an integer, got {type(value).__name__}")
        if isinstance(value, float):
            if not value.is_integer():
                raise RowError("wrong type", f"'{options.label}' must be a string or an integer, got {value}")
            value = int(value)
        return str(value).strip()

    def format(self, row, tokenizer, options, run):
        text = text_column(row, options.text)
        pair = text_column(row, options.text_pair) if options.text_pair else None
        label = self._label(row, options)
        if not label:  # an empty csv cell, or no label at all
            raise RowError("missing column", f"no '{options.label}'")
        names = run.label_names or []
        if label not in names:
            raise RowError("unknown label", f"'{label}' is not one of {', '.join(names)}")
        enc = tokenizer(text, pair, add_special_tokens=True) if pair is not None else tokenizer(text)
        return {"input_ids": list(enc["input_ids"]), "labels": names.index(label)}


@hookimpl
def tunery_register_formatters(registry):
    registry.add(Classification())
