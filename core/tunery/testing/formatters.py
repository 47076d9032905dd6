"""Conformance checks every data formatter passes, shipped so third-party formatters run them too.

:func:`check_formatter` takes good rows and bad rows (each with the reason it must be reported
with), and checks the whole path render -> tokens -> labels:

* each good row formats to well-formed examples of the formatter's data task (token ids in the
  vocabulary; causal-LM labels aligned with the ids, ``-100`` or the id itself, at least one
  trained token; a label id for classification; target ids for seq2seq; a label id or ``-100``
  per token for token classification), the same examples twice, without changing the row;
* when ``trained`` is given, the decoded loss-bearing tokens of each good row's first example
  are exactly that text (the loss falls on exactly the right tokens);
* written to a file (jsonl, json, csv or parquet) with the bad rows in between, the data
  pipeline yields the same examples and reports exactly the bad rows, by line or row number,
  with their reasons.

Example (pytest)::

    from tunery.testing.formatters import check_formatter

    def test_conformance(tmp_path, engine, tokenizer):
        check_formatter(engine, "myformat", tokenizer, tmp_path,
                        good=[{"text": "hello"}], bad=[({"txt": "oops"}, "missing column")],
                        trained=["hello<|endoftext|>"])
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from ..collate import IGNORE_INDEX
from ..datatools import format_split, formatting_context, label_names, read_split

LAYOUTS = ("jsonl", "json", "csv", "parquet")


def write_rows(path: Path, rows: list, layout: str) -> Path:
    """Write ``rows`` to ``path`` as ``layout``; in jsonl a row given as a string is written as is
    (a broken line)."""
    columns = list(dict.fromkeys(k for r in rows if isinstance(r, dict) for k in r))
    if layout == "jsonl":
        path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    elif layout == "json":
        path.write_text(json.dumps(rows, indent=1))
    elif layout == "csv":
        import csv

        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, columns)
            writer.writeheader()
            writer.writerows(rows)
    elif layout == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({c: [r.get(c) for r in rows] for c in columns}), path)
    else:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}")
    return path


def check_example(example: dict, task: str, tokenizer: Any, n_labels: int | None = None) -> None:
    """Assert that ``example`` is a well-formed example of data ``task``."""
    vocab = len(tokenizer)
    prefixes = [k[: -len("input_ids")] for k in example if k.endswith("input_ids")]
    assert prefixes, f"example has no input_ids: {sorted(example)}"
    if task == "preference":
        assert {"chosen_", "rejected_"} <= set(prefixes), f"preference example lacks chosen/rejected: {sorted(example)}"
    for prefix in prefixes:
        ids = example[prefix + "input_ids"]
        assert isinstance(ids, list) and ids and all(isinstance(i, int) and 0 <= i < vocab for i in ids), \
            f"{prefix}input_ids must be a non-empty list of token ids below {vocab}"
        labels = example.get(prefix + "labels")
        if task == "prompts":  # prompt-only data (online objectives): nothing is trained on the prompt
            assert labels is None, "a prompts example carries no labels"
            continue
        if task == "classification":
            assert isinstance(labels, int) and 0 <= labels < (n_labels or 0), f"label {labels!r} is not a label id"
            continue
        if task == "seq2seq":  # the decoder's target: its own token ids, any length
            assert isinstance(labels, list) and labels and all(
                isinstance(t, int) and (t == IGNORE_INDEX or 0 <= t < vocab) for t in labels), \
                f"{prefix}labels must be a non-empty list of target token ids below {vocab}"
            assert any(t != IGNORE_INDEX for t in labels), f"{prefix}labels: no trainable token"
            continue
        if task == "token_classification":
            assert isinstance(labels, list) and len(labels) == len(ids), f"{prefix}labels must align with the ids"
            assert all(t == IGNORE_INDEX or 0 <= t < (n_labels or 0) for t in labels), \
                f"{prefix}labels must be -100 or a label id below {n_labels}"
            first = example.get("_first", [])
            assert first and all(labels[p] != IGNORE_INDEX for p in first), "every word's first sub-token needs a label"
            continue
        assert isinstance(labels, list) and len(labels) == len(ids), f"{prefix}labels must align with the ids"
        assert all(label in (IGNORE_INDEX, i) for label, i in zip(labels, ids)), \
            f"{prefix}labels must be -100 or the token id itself"
        assert any(label != IGNORE_INDEX for label in labels), f"{prefix}labels: no trainable token"


def trained_text(tokenizer: Any, example: dict, prefix: str = "") -> str:
    """The decoded tokens that carry loss in ``example`` (joined)."""
    return tokenizer.decode([i for i, label in zip(example[prefix + "input_ids"], example[prefix + "labels"])
                             if label != IGNORE_INDEX])


def check_formatter(engine: Any, name: str, tokenizer: Any, folder: str | Path, *, good: list[dict],
                    bad: list[tuple[Any, str]] = (), options: dict | None = None, trained: list[str] | None = None,
                    layout: str = "jsonl", max_length: int = 256, truncation: str = "error",
                    file_name: str | None = None) -> list[list[dict]]:
    """Run the conformance checks (see the module docstring) for formatter ``name``; return the
    examples of each good row. ``bad`` pairs a row (in jsonl a string is a raw, broken line)
    with the reason it must be reported with; bad rows are placed between the good ones."""
    path = Path(folder) / (file_name or f"rows.{layout}")
    rows, expected = [], {}
    pending = list(bad)
    for row in good:
        rows.append(row)
        if pending:
            bad_row, reason = pending.pop(0)
            rows.append(bad_row)
            expected[len(rows)] = reason
    for bad_row, reason in pending:
        rows.append(bad_row)
        expected[len(rows)] = reason
    write_rows(path, rows, layout)

    run = formatting_context(engine, name, options, tokenizer, specs=[str(path)], max_length=max_length,
                             truncation=truncation)
    read, files, problems = read_split(run, [str(path)], "eval")  # eval: order kept, nothing mixed
    read = list(read)
    run.label_names = label_names(run, read)
    n_labels = len(run.label_names) if run.label_names else None
    result = format_split(run, read, files, problems)
    found = {(p.source.line if layout == "jsonl" else p.source.row): p.reason for p in result.problems}
    assert found == expected, f"bad rows reported {found}, expected {expected}: " + "; ".join(map(str, result.problems))

    formatter, parsed = run.formatter, run.config.format.options
    good_numbers = [n for n in range(1, len(rows) + 1) if n not in expected]
    by_number = {(r.source.line if layout == "jsonl" else r.source.row): r for r in read}
    per_row, flat = [], []
    for i, number in enumerate(good_numbers):
        values = by_number[number].values
        before = copy.deepcopy(values)
        first = formatter.format(values, tokenizer, parsed, run)
        again = formatter.format(copy.deepcopy(values), tokenizer, parsed, run)
        assert values == before, f"formatting good row {i + 1} changed the row"
        examples = first if isinstance(first, list) else [first]
        assert examples == (again if isinstance(again, list) else [again]), f"good row {i + 1} formats differently twice"
        for example in examples:
            check_example(example, formatter.task, tokenizer, n_labels)
        if trained is not None and trained[i] is not None:
            got = (tokenizer.decode([t for t in examples[0]["labels"] if t != IGNORE_INDEX])  # the decoder's target
                   if formatter.task == "seq2seq" else trained_text(tokenizer, examples[0]))
            assert got == trained[i], f"good row {i + 1}: loss falls on {got!r}, expected {trained[i]!r}"
        per_row.append(examples)
        flat += examples
    assert list(result.examples) == flat, "the pipeline's examples differ from formatting the good rows one by one"
    return per_row
