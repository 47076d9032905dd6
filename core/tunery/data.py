"""The data pipeline: files -> rows (with where each came from) -> examples, nothing dropped silently.

Rows are read from json (a list, or one object per line), jsonl, csv, parquet and txt files,
folders and globs of them, and from `datasets` hub names (``org/name`` or ``org/name:split``,
offline from the local cache when ``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE`` is set). Each row keeps its source (file and line or row number) so that a
bad row is reported exactly. A formatter turns each row into examples; a bad row becomes a
:class:`Problem`, and depending on ``data.on_bad_row`` the run stops with every problem listed
(``error``) or goes on with the bad rows counted and written to the run folder (``skip``).
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Iterator

from .errors import DataError, RowError

SUFFIXES = (".json", ".jsonl", ".csv", ".parquet", ".txt")
HUB_NAME = re.compile(r"[\w.-]+/[\w.-]+(:[\w.-]+)?")


@dataclasses.dataclass(frozen=True)
class Source:
    """Where a row came from: ``file`` and its 1-based ``line`` (JSONL/txt) or ``row`` (others)."""

    file: str
    line: int | None = None
    row: int | None = None

    def __str__(self) -> str:
        if self.line is not None:
            return f"{self.file}:{self.line}"
        return f"{self.file} row {self.row}"


@dataclasses.dataclass
class Problem:
    """One bad row: where, the reason category, and the detail."""

    source: Source
    reason: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.source}: {self.reason}{': ' + self.detail if self.detail else ''}"

    def to_json(self) -> dict:
        return {"file": self.source.file, "line": self.source.line, "row": self.source.row,
                "reason": self.reason, "detail": self.detail}


@dataclasses.dataclass
class Row:
    values: Any
    source: Source


def expand_paths(specs: list[str]) -> list[str]:
    """Files named by ``specs`` (files, folders, globs), in a stable order; a DataError otherwise."""
    files: list[str] = []
    for spec in specs:
        if any(ch in spec for ch in "*?["):
            matches = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
            if not matches:
                raise DataError(f"no data file matches '{spec}'")
            files.extend(matches)
        elif os.path.isdir(spec):
            matches = sorted(str(p) for p in Path(spec).rglob("*") if p.suffix in SUFFIXES and p.is_file())
            if not matches:
                raise DataError(f"data folder '{spec}' holds no {', '.join(SUFFIXES)} file")
            files.extend(matches)
        elif os.path.isfile(spec):
            files.append(spec)
        elif HUB_NAME.fullmatch(spec) and Path(spec).suffix.lower() not in SUFFIXES:
            files.append(spec)  # a `datasets` hub name, read by read_rows
        else:
            raise DataError(
                f"data file '{spec}' does not exist (give a file, a folder, a glob, or a cached `datasets` name)"
            )
    return files


def read_rows(path: str, problems: list[Problem]) -> Iterator[Row]:
    """Rows of one file; unreadable rows (invalid JSON...) are appended to ``problems``."""
    suffix = Path(path).suffix.lower()
    if not os.path.exists(path) and HUB_NAME.fullmatch(path):
        for n, record in enumerate(load_hub(path), 1):
            yield Row(record, Source(path, row=n))
    elif suffix == ".txt":
        with open(path, encoding="utf-8", errors="strict") as f:
            for n, line in enumerate(f, 1):
                text = line.rstrip("\n")
                if text.strip():
                    yield Row({"text": text}, Source(path, line=n))
    elif suffix in (".jsonl", ".json"):
        yield from _read_json(path, problems)
    elif suffix == ".csv":
        import csv

        with open(path, newline="", encoding="utf-8") as f:
            for n, record in enumerate(csv.DictReader(f), 1):
                yield Row(dict(record), Source(path, row=n))
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        for n, record in enumerate(pq.read_table(path).to_pylist(), 1):
            yield Row(record, Source(path, row=n))
    else:
        raise DataError(f"data file '{path}' has an unknown type '{suffix}'; use one of {', '.join(SUFFIXES)}")


def _read_json(path: str, problems: list[Problem]) -> Iterator[Row]:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg}); the whole file is one JSON list") from None
        for n, record in enumerate(records, 1):
            yield Row(record, Source(path, row=n))
        return
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield Row(json.loads(line), Source(path, line=n))
        except json.JSONDecodeError as exc:
            problems.append(Problem(Source(path, line=n), "invalid JSON", exc.msg))


def offline() -> bool:
    """Whether the Hugging Face hub must not be contacted (``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE``)."""
    return any(os.environ.get(k, "").upper() in ("1", "ON", "YES", "TRUE") for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def load_hub(spec: str):
    """The ``datasets.Dataset`` named ``org/name[:split]`` (split ``train`` by default)."""
    import datasets

    name, _, split = spec.partition(":")
    try:
        return datasets.load_dataset(name, split=split or "train")
    except Exception as exc:  # noqa: BLE001 - datasets raises many types; all mean "cannot read it"
        where = "it is not in the local datasets cache and HF_HUB_OFFLINE is set" if offline() else str(exc)
        raise DataError(f"'{spec}' is not a local file, and it could not be read as a `datasets` hub data set: "
                        f"{where}; give a file, a folder, a glob, or a cached hub name") from None


def file_digest(path: str) -> str:
    """sha256 of a data file (a hub data set: its `datasets` fingerprint)."""
    if not os.path.exists(path) and HUB_NAME.fullmatch(path):
        return "datasets:" + load_hub(path)._fingerprint
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclasses.dataclass
class Examples:
    """Formatted examples of one split and the accounting of how they were made."""

    examples: list[dict]
    files: list[str]
    rows: int
    problems: list[Problem]
    truncated: int = 0
    dropped: int = 0  # too long with data.truncation=drop

    def summary(self) -> dict:
        counts = collections.Counter(p.reason for p in self.problems)
        return {"files": self.files, "rows": self.rows, "examples": len(self.examples),
                "bad_rows": len(self.problems), "bad_rows_by_reason": dict(counts), "truncated": self.truncated,
                "dropped_too_long": self.dropped}


def load_rows(specs: list[str], limit: int | None = None) -> tuple[list[Row], list[str], list[Problem]]:
    """All rows of the files named by ``specs`` (at most ``limit``), the files, and read problems."""
    files = expand_paths(specs)
    problems: list[Problem] = []
    rows: list[Row] = []
    for path in files:
        for row in read_rows(path, problems):
            rows.append(row)
            if limit is not None and len(rows) >= limit:
                return rows, files, problems
    return rows, files, problems


def format_rows(rows: list[Row], formatter, options, tokenizer, run,
                problems: list[Problem]) -> tuple[list[dict], int, int]:
    """Examples for ``rows``, the number truncated and the number dropped as too long
    (``data.truncation=drop``); bad rows (including those left with nothing to learn) go to ``problems``."""
    data = run.config.data
    examples: list[dict] = []
    truncated = dropped = 0
    for row in rows:
        try:
            if not isinstance(row.values, dict):
                raise RowError("wrong type", f"a row must be an object, got {type(row.values).__name__}")
            produced = formatter.format(row.values, tokenizer, options, run)
            produced = produced if isinstance(produced, list) else [produced]
            fitted = []
            for example in produced:
                example, cut = fit_length(example, data.max_length, data.truncation)
                truncated += cut
                check_trainable(example, formatter.task)
                fitted.append(example)
        except RowError as exc:
            if exc.reason == "too long" and data.truncation == "drop":
                dropped += 1
            else:
                problems.append(Problem(row.source, exc.reason, exc.detail))
            continue
        examples.extend(fitted)
    return examples, truncated, dropped


SEQUENCE_KEYS = ("input_ids", "labels", "attention_mask")


def fit_length(example: dict, max_length: int, policy: str) -> tuple[dict, int]:
    """Apply the truncation policy to every token sequence of ``example``; returns (example, 1 if cut)."""
    seq_keys = [k for k, v in example.items() if isinstance(v, list) and k.endswith(SEQUENCE_KEYS)]
    too_long = max((len(example[k]) for k in seq_keys), default=0)
    if too_long <= max_length:
        return example, 0
    if policy in ("error", "drop"):
        raise RowError("too long", f"{too_long} tokens > data.max_length {max_length} (data.truncation={policy})")
    out = dict(example)
    for key in seq_keys:
        out[key] = out[key][:max_length] if policy == "right" else out[key][-max_length:]
    return out, 1


def check_trainable(example: dict, task: str) -> None:
    """A causal-LM example whose labels are all masked teaches nothing: a bad row, not a silent one."""
    for key, value in example.items():
        if key.endswith("labels") and isinstance(value, list) and value and all(v == -100 for v in value):
            raise RowError("no trainable token", "every label is masked (nothing to learn in this row, "
                                                 "or the prompt fills data.max_length)")


def write_problems(problems: list[Problem], path: str, per_reason: int = 20) -> None:
    """Write the counts per reason and the first rows of each reason (JSON) to ``path``."""
    counts = collections.Counter(p.reason for p in problems)
    first: dict[str, list] = collections.defaultdict(list)
    for p in problems:
        if len(first[p.reason]) < per_reason:
            first[p.reason].append(p.to_json())
    with open(path, "w") as f:
        json.dump({"total": len(problems), "by_reason": dict(counts), "examples": first}, f, indent=2)


def problems_message(problems: list[Problem], what: str, shown: int = 20) -> str:
    counts = collections.Counter(p.reason for p in problems)
    lines = [f"{len(problems)} bad row(s) in the {what} data ("
             + ", ".join(f"{reason}: {n}" for reason, n in counts.most_common()) + "):"]
    lines += [f"  {p}" for p in problems[:shown]]
    if len(problems) > shown:
        lines.append(f"  ... and {len(problems) - shown} more (`tunery data check` lists them all)")
    lines.append("Fix these rows, or set data.on_bad_row=skip to train without them (they are counted and reported).")
    return "\n".join(lines)
