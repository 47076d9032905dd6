"""A run's data, start to end, and the tools that show it: ``tunery data check`` and
``tunery data preview`` go through exactly the steps a training run takes.

read rows (files, folders, globs, hub names) -> formatter.prepare_rows -> label names
(classification) -> formatter.format -> length policy -> examples, with every bad row counted.
Rows stream from the files and are formatted in chunks, in worker processes
(:mod:`tunery.datastore`), into one Arrow file per split that training reads memory-mapped. The
examples of a run are cached by fingerprint (data files' hashes, tokenizer, formatter and its
options, length settings, seed) under ``<cache>/data/<fingerprint>/``: a second run with the
same inputs maps the same files, skipping reading and tokenisation.
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
import logging
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from . import data as datapipe
from .errors import DataError
from .members import LABELLED_TASKS

if TYPE_CHECKING:  # pragma: no cover
    from .engine import Engine
    from .context import RunContext

log = logging.getLogger("tunery")
MARK_OPEN, MARK_CLOSE = "\u27e6", "\u27e7"  # ⟦trained⟧ spans in previews
CACHE_VERSION = "5"  # 3: Arrow files; 4: with their index (offsets, lengths); 5: typed token lists


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


def read_split(run: RunContext, specs: list[str], split: str) -> tuple[Iterable, list[str], list]:
    """Rows of ``specs`` (``data.limit`` applies to train) after the formatter's ``prepare_rows``
    and the extensions' ``transform_rows``, the files read, and the rows that could not be read
    (filled in as the rows are read). The rows stream from the files (any number of them) unless
    a step needs the whole split at once: a formatter's own ``prepare_rows`` or ``label_names``
    (classification), an extension's ``transform_rows``; then they are a list in memory."""
    from .members import Extension, Formatter

    limit = run.config.data.limit if split == "train" else None
    formatter, options = run.formatter, run.config.format.options
    reader = lambda path, found: formatter.read_file(path, options, found)  # noqa: E731
    files = datapipe.expand_paths(specs) if specs else []
    problems: list = []
    rows: Iterable = datapipe.stream_rows(files, problems, limit, reader)
    whole = (type(formatter).prepare_rows is not Formatter.prepare_rows or run.data_task in LABELLED_TASKS
             or any(type(ext).transform_rows is not Extension.transform_rows for ext, _ in run.extensions))
    if whole:
        rows = formatter.prepare_rows(list(rows), options, run, split)
        for extension, ext_options in run.extensions:
            rows = extension.transform_rows(rows, ext_options, run, split)
    return rows, files, problems


def label_names(run: RunContext, rows: list) -> list[str] | None:
    """Classification and token classification: the formatter's label names for the training rows (a DataError when none)."""
    if run.data_task not in LABELLED_TASKS:
        return None
    formatter = run.formatter
    names = formatter.label_names([r.values for r in rows if isinstance(r.values, dict)], run.config.format.options)
    if not names:
        raise DataError(f"formatter '{formatter.name}' found no labels in the training data")
    return list(names)


def format_split(run: RunContext, rows: Iterable, files: list[str], problems: list, split: str = "",
                 path: Path | None = None) -> datapipe.Examples:
    """Format ``rows`` (a stream or a list) into the Arrow file ``path`` (a temporary one when
    None, removed with the examples); ``problems`` gets the bad rows after the unreadable ones."""
    from .datastore import TempFolder, format_to_arrow

    owner = None
    if path is None:
        owner = TempFolder(run.engine.cache_dir / "data")
        path = owner.path / "examples.arrow"
    what = f"tokenising the {split} data ({run.formatter.name})" if split else None
    done = format_to_arrow(run, rows, path, what=what, owner=owner)
    problems.extend(done.problems)
    return datapipe.Examples(done.examples, files, done.rows, problems, done.truncated, done.dropped, done.notes)


def prepare_data(run: RunContext) -> Prepared:
    """The train and eval examples of ``run``, memory-mapped from Arrow files (from the cache
    when ``data.cache`` and the inputs are unchanged); ``run.label_names`` is set for
    classification."""
    cfg = run.config.data
    folder = run.engine.cache_dir / "data" / fingerprint(run) if cfg.cache else None
    if folder is not None and (folder / "meta.json").is_file():
        prepared = _load(folder)
        run.label_names = prepared.labels
        log.info("data: tokenised examples reused from the cache (%s)", folder)
        return prepared
    log.info("reading the data: %s", ", ".join(cfg.train + cfg.eval))
    rows, files, problems = read_split(run, cfg.train, "train")
    run.label_names = label_names(run, rows)
    if folder is None:
        return Prepared(format_split(run, rows, files, problems, "training"),
                        format_split(run, *read_split(run, cfg.eval, "eval"), "evaluation"), run.label_names)
    tmp = folder.with_name(f"{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        train = format_split(run, rows, files, problems, "training", tmp / "train.arrow")
        evaluation = format_split(run, *read_split(run, cfg.eval, "eval"), "evaluation", tmp / "eval.arrow")
        _save(tmp, folder, Prepared(train, evaluation, run.label_names))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dataclasses.replace(_load(folder), cached=False)


def other_format(run: RunContext, specs: list[str], sample: int = 5) -> tuple[str, list[str]] | None:
    """When the chosen formatter reads none of the rows: another installed formatter (with its
    default options) that reads the first ``sample`` rows of ``specs``, and those rows' columns."""
    rows, _, _ = datapipe.load_rows(specs, sample)
    rows = [r for r in rows if isinstance(r.values, dict)]
    if not rows:
        return None
    columns = list(dict.fromkeys(k for r in rows for k in r.values))
    candidates = sorted(run.engine.formatters, key=lambda f: f.task != run.formatter.task)
    for formatter in candidates:
        if formatter.name == run.formatter.name:
            continue
        try:
            options = formatter.parse_options({}, "format")
            for row in rows:
                formatter.format(row.values, run.tokenizer, options, run)
        except Exception:  # noqa: BLE001 - any failure means "not this format"
            continue
        return formatter.name, columns
    return None


def wrong_format_error(run: RunContext, part: datapipe.Examples, specs: list[str], key: str = "format") -> DataError | None:
    """A DataError saying which formatter the rows look like, when every row of ``part`` is bad
    and another formatter reads them; None otherwise."""
    if part.examples or not part.problems or len(part.problems) < part.rows:
        return None
    found = other_format(run, specs)
    if found is None:
        return None
    name, columns = found
    first = part.problems[0]
    return DataError(f"none of the {part.rows} rows of {', '.join(part.files)} is '{run.formatter.name}' data "
                     f"(first: {first}); their columns ({', '.join(columns)}) look like '{name}' data: "
                     f"set {key}: {name} (--format {name})", part.problems)


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
    """sha256 of the formatting code: every formatter's module and tunery's data helpers (the
    formatter base class and the Arrow store among them)."""
    from . import chat, datastore, members, text

    modules = ({sys.modules[type(m).__module__] for m in engine.formatters}
               | {sys.modules[type(m).__module__] for m in engine.extensions if _on_rows(m)}
               | {datapipe, chat, text, members, datastore})
    h = hashlib.sha256(CACHE_VERSION.encode())
    for path in sorted(filter(None, (inspect.getsourcefile(m) for m in modules))):
        h.update(Path(path).read_bytes())
    return h.hexdigest()


def _on_rows(extension: Any) -> bool:
    """Whether an extension changes rows before formatting (so it is part of the cache key)."""
    from .members import Extension

    return type(extension).transform_rows is not Extension.transform_rows


def fingerprint(run: RunContext) -> str:
    """The cache key of a run's examples."""
    cfg = run.config.data
    key = {
        "files": {split: [(f, datapipe.file_digest(f)) for f in datapipe.expand_paths(specs)] if specs else []
                  for split, specs in (("train", cfg.train), ("eval", cfg.eval))},
        "tokenizer": tokenizer_fingerprint(run.tokenizer),
        "format": run.config.format.to_dict(),
        "extensions": [c.to_dict() for c, (ext, _) in zip(run.config.extensions, run.extensions) if _on_rows(ext)],
        "data": [cfg.max_length, cfg.truncation, cfg.limit, run.config.seed, cfg.control],
        "code": _code_fingerprint(run.engine),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _save(tmp: Path, folder: Path, prepared: Prepared) -> None:
    """Write the accounting next to the Arrow files in ``tmp`` and make it the cache ``folder``."""
    meta = {"labels": prepared.labels}
    for split in ("train", "eval"):
        part: datapipe.Examples = getattr(prepared, split)
        meta[split] = {"files": part.files, "rows": part.rows, "truncated": part.truncated,
                       "dropped": part.dropped, "notes": part.notes, "packable": part.examples.packable,
                       "problems": [p.to_json() for p in part.problems]}
    (tmp / "meta.json").write_text(json.dumps(meta))
    try:
        os.rename(tmp, folder)
    except OSError:  # another run wrote it first
        pass


def _load(folder: Path) -> Prepared:
    from .datastore import ArrowExamples

    meta = json.loads((folder / "meta.json").read_text())
    parts = {}
    for split in ("train", "eval"):
        m = meta[split]
        problems = [datapipe.Problem(datapipe.Source(p["file"], p["line"], p["row"]), p["reason"], p["detail"])
                    for p in m["problems"]]
        parts[split] = datapipe.Examples(ArrowExamples(folder / f"{split}.arrow", m["packable"]), m["files"],
                                         m["rows"], problems, m["truncated"], m["dropped"], m["notes"])
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


def check_config(engine: Engine, config: Any, specs: list[str] = ()) -> dict[str, datapipe.Examples]:
    """Format the data of a run's ``config`` (or ``specs`` instead of its training data) exactly as
    that run will: its model's tokenizer, format options, data.max_length and data.truncation
    (without ``specs``, through :func:`prepare_data`: the run then finds its data in the cache).
    Returns ``{"train": ..., "eval": ...}`` (eval only when the config has evaluation data)."""
    from .context import RunContext
    from .loading import load_tokenizer

    run = RunContext.create(engine, config)
    run.tokenizer = load_tokenizer(engine.resolve_model(config.model), config.trust_remote_code)
    if not specs:  # the run's own data: prepared (and cached) as training prepares it
        prepared = prepare_data(run)
        return {"train": prepared.train, **({"eval": prepared.eval} if config.data.eval else {})}
    rows, files, problems = read_split(run, list(specs), "train")
    run.label_names = label_names(run, rows)
    return {"train": format_split(run, rows, files, problems)}


def check(engine: Engine, format_name: str, specs: list[str], *, options: dict | None = None,
          model: str | None = None, max_length: int | None = None, truncation: str | None = None) -> datapipe.Examples:
    """Format every row of ``specs`` as a run would; the result's ``problems`` lists every bad row.
    Without ``model`` (and ``max_length``) no length limit applies; ``truncation`` defaults to
    the formatter's, as in training."""
    tokenizer = load_tokenizer_for(engine, model)
    truncation = truncation or engine.formatters.get(format_name).default_truncation
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
    if result.truncated:
        lines.append(f"  truncated to data.max_length: {result.truncated} example(s) (kept; data.truncation decides)")
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
            blocks.append(f"--- example {len(blocks) + 1} ({row.source})\n" + marked_text(tokenizer, example, run.label_names,
                                                                                         run.data_task))
    blocks += [f"bad row {p}" for p in problems]
    return blocks


def marked_text(tokenizer: Any, example: dict, label_names: list[str] | None = None, task: str | None = None) -> str:
    """Decoded token sequences of ``example`` with the tokens that carry loss inside ⟦ ⟧; a
    seq2seq example as its source and ⟦target⟧, a token-classification one as word/TAG."""
    if task == "seq2seq":
        target = tokenizer.decode([t for t in example["labels"] if t != -100])
        return f"{tokenizer.decode(example['input_ids'])}\n=> target: {MARK_OPEN}{target}{MARK_CLOSE}"
    if task == "token_classification":
        ids, labels, first = example["input_ids"], example["labels"], example.get("_first", [])
        ends = [*first[1:], len(ids)]
        names = label_names or []
        return " ".join(f"{tokenizer.decode(ids[a:b], skip_special_tokens=True).strip()}/"
                        f"{names[labels[a]] if labels[a] < len(names) else labels[a]}" for a, b in zip(first, ends))
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
