"""A run's data, start to end, and the tools that show it: ``tunery data check`` and
``tunery data preview`` go through exactly the steps a training run takes.

read rows (files, folders, globs, hub names) -> formatter.prepare_rows -> label names
(classification) -> formatter.format -> length policy -> examples, with every bad row counted.
The examples of a run are cached by fingerprint (data files' hashes, tokenizer, formatter and its
options, length settings, seed) under ``<cache>/data/<fingerprint>/`` as JSON: a second run with
the same inputs skips reading and tokenisation.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import inspect
import json
import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import data as datapipe
from .errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    from .engine import Engine
    from .context import RunContext

MARK_OPEN, MARK_CLOSE = "\u27e6", "\u27e7"  # ⟦trained⟧ spans in previews
CACHE_VERSION = "2"


@dataclasses.dataclass
class Prepared:
    """The formatted splits of a run, the label names (classification) and whether they came
    from the cache."""

    train: datapipe.Examples
    eval: datapipe.Examples
    labels: list[str] | None
    cached: bool = False


def formatting_context(engine: Engine, format_name: str, options: dict | None, tokenizer: Any, *,
                       specs: list[str] = (), max_length: int = 512, truncation: str = "right",
                       seed: int = 0, model: str = "") -> RunContext:
    """A :class:`~tunery.run.RunContext` that can format data outside a training run (for the
    data tools and the formatter conformance kit)."""
    from .config import Choice, DataConfig, GenerationConfig, RunConfig, TrainingConfig
    from .context import RunContext

    formatter = engine.formatters.get(format_name)
    config = RunConfig(
        model=model, output_dir="", method=Choice("", None), objective=Choice("", None),
        quantizer=Choice("none", None), extensions=[], evaluators=[],
        format=Choice(format_name, formatter.parse_options(options, "format")),
        data=DataConfig(train=list(specs), max_length=max_length, truncation=truncation),
        training=TrainingConfig(), generation=GenerationConfig(), seed=seed,
    )
    return RunContext(config=config, output_dir=Path("."), engine=engine, data_task=formatter.task,
                      model_task=formatter.task, tokenizer=tokenizer)


def read_split(run: RunContext, specs: list[str], split: str) -> tuple[list, list[str], list]:
    """Rows of ``specs`` (``data.limit`` applies to train) after the formatter's ``prepare_rows``,
    the files read, and the rows that could not be read."""
    limit = run.config.data.limit if split == "train" else None
    rows, files, problems = datapipe.load_rows(specs, limit) if specs else ([], [], [])
    rows = run.formatter.prepare_rows(rows, run.config.format.options, run, split)
    return rows, files, problems


def label_names(run: RunContext, rows: list) -> list[str] | None:
    """Classification: the formatter's label names for the training rows (a DataError when none)."""
    if run.data_task != "classification":
        return None
    formatter = run.formatter
    names = formatter.label_names([r.values for r in rows if isinstance(r.values, dict)], run.config.format.options)
    if not names:
        raise DataError(f"formatter '{formatter.name}' found no labels in the training data")
    return list(names)


def format_split(run: RunContext, rows: list, files: list[str], problems: list) -> datapipe.Examples:
    notes = collections.Counter()
    examples, truncated, dropped = datapipe.format_rows(rows, run.formatter, run.config.format.options,
                                                        run.tokenizer, run, problems, notes)
    return datapipe.Examples(examples, files, len(rows), problems, truncated, dropped, dict(notes))


def prepare_data(run: RunContext) -> Prepared:
    """The train and eval examples of ``run`` (from the cache when ``data.cache`` and the inputs
    are unchanged); ``run.label_names`` is set for classification."""
    cfg = run.config.data
    folder = run.engine.cache_dir / "data" / fingerprint(run) if cfg.cache else None
    if folder is not None and (folder / "meta.json").is_file():
        prepared = _load(folder)
        run.label_names = prepared.labels
        return prepared
    rows, files, problems = read_split(run, cfg.train, "train")
    eval_rows, eval_files, eval_problems = read_split(run, cfg.eval, "eval")
    run.label_names = label_names(run, rows)
    prepared = Prepared(format_split(run, rows, files, problems),
                        format_split(run, eval_rows, eval_files, eval_problems), run.label_names)
    if folder is not None:
        _save(folder, prepared)
    return prepared


# ----------------------------------------------------------------------------- cache


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 of what decides how a tokenizer encodes: its vocabulary and rules, special
    tokens and chat template."""
    h = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    h.update(backend.to_str().encode() if backend is not None else
             json.dumps(tokenizer.get_vocab(), sort_keys=True).encode())
    h.update(json.dumps([tokenizer.special_tokens_map, getattr(tokenizer, "chat_template", None)],
                        sort_keys=True, default=str).encode())
    return h.hexdigest()


def _code_fingerprint(engine: Engine) -> str:
    """sha256 of the formatting code: every formatter's module and tunery's data helpers."""
    from . import chat, text

    modules = {sys.modules[type(f).__module__] for f in engine.formatters} | {datapipe, chat, text}
    h = hashlib.sha256(CACHE_VERSION.encode())
    for path in sorted(filter(None, (inspect.getsourcefile(m) for m in modules))):
        h.update(Path(path).read_bytes())
    return h.hexdigest()


def fingerprint(run: RunContext) -> str:
    """The cache key of a run's examples."""
    cfg = run.config.data
    key = {
        "files": {split: [(f, datapipe.file_digest(f)) for f in datapipe.expand_paths(specs)] if specs else []
                  for split, specs in (("train", cfg.train), ("eval", cfg.eval))},
        "tokenizer": tokenizer_fingerprint(run.tokenizer),
        "format": run.config.format.to_dict(),
        "data": [cfg.max_length, cfg.truncation, cfg.limit, run.config.seed, cfg.control],
        "code": _code_fingerprint(run.engine),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _save(folder: Path, prepared: Prepared) -> None:
    tmp = folder.with_name(f"{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    meta = {"labels": prepared.labels}
    for split in ("train", "eval"):
        part: datapipe.Examples = getattr(prepared, split)
        with open(tmp / f"{split}.jsonl", "w") as f:
            f.writelines(json.dumps(ex) + "\n" for ex in part.examples)
        meta[split] = {"files": part.files, "rows": part.rows, "truncated": part.truncated,
                       "dropped": part.dropped, "notes": part.notes, "problems": [p.to_json() for p in part.problems]}
    (tmp / "meta.json").write_text(json.dumps(meta))
    try:
        os.rename(tmp, folder)
    except OSError:  # another run wrote it first
        shutil.rmtree(tmp, ignore_errors=True)


def _load(folder: Path) -> Prepared:
    meta = json.loads((folder / "meta.json").read_text())
    parts = {}
    for split in ("train", "eval"):
        m = meta[split]
        with open(folder / f"{split}.jsonl") as f:
            examples = [json.loads(line) for line in f]
        problems = [datapipe.Problem(datapipe.Source(p["file"], p["line"], p["row"]), p["reason"], p["detail"])
                    for p in m["problems"]]
        parts[split] = datapipe.Examples(examples, m["files"], m["rows"], problems, m["truncated"], m["dropped"],
                                         m["notes"])
    return Prepared(parts["train"], parts["eval"], meta["labels"], cached=True)


# ----------------------------------------------------------------------------- check and preview


def load_tokenizer_for(engine: Engine, model: str | None):
    """The tokenizer of ``model``; without one, a small built-in byte-level tokenizer with a
    ChatML template (enough to check a file's structure)."""
    if model:
        from .loading import load_tokenizer

        return load_tokenizer(engine.resolve_model(model))
    from .testing.tiny import build_tokenizer

    return build_tokenizer(None)


def check(engine: Engine, format_name: str, specs: list[str], *, options: dict | None = None,
          model: str | None = None, max_length: int | None = None, truncation: str = "error") -> datapipe.Examples:
    """Format every row of ``specs`` as a run would; the result's ``problems`` lists every bad row.
    Without ``model`` (and ``max_length``) no length limit applies."""
    tokenizer = load_tokenizer_for(engine, model)
    limit = max_length or (512 if model else sys.maxsize)
    run = formatting_context(engine, format_name, options, tokenizer, specs=specs, max_length=limit,
                             truncation=truncation, model=model or "")
    rows, files, problems = read_split(run, list(specs), "train")
    run.label_names = label_names(run, rows)
    return format_split(run, rows, files, problems)


def check_report(result: datapipe.Examples) -> list[str]:
    """The lines ``tunery data check`` prints: each bad row, then the counts per reason."""
    lines = [str(p) for p in result.problems]
    counts = collections.Counter(p.reason for p in result.problems)
    lines.append(f"{result.rows} row(s) read from {len(result.files)} file(s): {len(result.examples)} example(s), "
                 f"{len(result.problems)} bad row(s)")
    lines += [f"  {reason}: {n}" for reason, n in counts.most_common()]
    lines += [f"  note: {what}: {n} row(s)" for what, n in result.notes.items()]
    return lines


def preview(engine: Engine, format_name: str, specs: list[str], model: str, *, options: dict | None = None,
            n: int = 3, max_length: int = 512, truncation: str = "right") -> list[str]:
    """The first ``n`` examples of ``specs`` as text, trained (loss-bearing) spans marked ⟦so⟧;
    bad rows met on the way are listed too."""
    tokenizer = load_tokenizer_for(engine, model)
    run = formatting_context(engine, format_name, options, tokenizer, specs=specs, max_length=max_length,
                             truncation=truncation, model=model)
    rows, _, problems = read_split(run, list(specs), "train")
    run.label_names = label_names(run, rows)
    blocks: list[str] = []
    for row in rows:
        if len(blocks) >= n:
            break
        found: list = []
        examples, _, _ = datapipe.format_rows([row], run.formatter, run.config.format.options, tokenizer, run, found)
        problems += found
        for example in examples[: n - len(blocks)]:
            blocks.append(f"--- example {len(blocks) + 1} ({row.source})\n" + marked_text(tokenizer, example, run.label_names))
    blocks += [f"bad row {p}" for p in problems]
    return blocks


def marked_text(tokenizer: Any, example: dict, label_names: list[str] | None = None) -> str:
    """Decoded token sequences of ``example`` with the tokens that carry loss inside ⟦ ⟧."""
    out = []
    for key in [k for k in example if k.endswith("input_ids")]:
        prefix = key[: -len("input_ids")]
        ids, labels = example[key], example.get(prefix + "labels")
        title = f"[{prefix.rstrip('_')}] " if prefix else ""
        if not isinstance(labels, list):
            label = labels if label_names is None or not isinstance(labels, int) else label_names[labels]
            out.append(f"{title}{tokenizer.decode(ids)}\n=> label: {label}")
            continue
        pieces, start = [], 0
        for i in range(1, len(ids) + 1):
            if i == len(ids) or (labels[i] != -100) != (labels[start] != -100):
                text = tokenizer.decode(ids[start:i])
                pieces.append(f"{MARK_OPEN}{text}{MARK_CLOSE}" if labels[start] != -100 else text)
                start = i
        out.append(title + "".join(pieces))
    return "\n".join(out)


def summary_lines(summary: dict, output_dir: str | os.PathLike) -> list[str]:
    """What a run's data summary (``metrics.json`` "data") says, for the end of ``tunery train``."""
    lines = []
    for split in ("train", "eval"):
        s = summary.get(split) or {}
        if not s.get("rows") and not s.get("examples"):
            continue
        line = f"{split} data: {s['rows']} rows -> {s['examples']} examples"
        if s.get("held_out_from_train"):
            line = (f"eval data: {s['held_out_from_train']} examples held out from the training data"
                    + (" (automatically; data.val_split=0 turns this off)" if s.get("held_out_auto") else ""))
        extras = [f"{s[k]} {label}" for k, label in (("truncated", "truncated"), ("dropped_too_long", "dropped as too long"))
                  if s.get(k)]
        extras += [f"{n} rows: {what}" for what, n in (s.get("notes") or {}).items()]
        if s.get("bad_rows"):
            reasons = ", ".join(f"{r}: {c}" for r, c in s["bad_rows_by_reason"].items())
            extras.append(f"{s['bad_rows']} bad rows skipped ({reasons}; see {Path(output_dir) / 'bad_rows.json'})")
        lines.append(line + (f"; {'; '.join(extras)}" if extras else "") + (" [cached]" if summary.get("cached") else ""))
    return lines
