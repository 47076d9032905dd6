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
import contextvars
import dataclasses
import glob
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from .errors import DataError, PluginError, RowError, TuneryError
from .membercalls import member_label

SUFFIXES = (".json", ".jsonl", ".csv", ".parquet", ".txt", ".conll")
HUB_NAME = re.compile(r"[\w.-]+/[\w.-]+(:[\w.-]+)?")


@dataclasses.dataclass(frozen=True)
class Source:
    """Where a row came from: ``file`` and its 1-based ``line`` (JSONL/txt) or ``row`` (others)."""

    file: str
    line: int | None = None
    row: int | None = None

    def __reduce__(self):  # compact when rows go to the worker processes
        return Source, (self.file, self.line, self.row)

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
    #: Copied into each example of the row (keys start with ``_``: the collator leaves them out).
    #: ``_augmented``: made by an extension from another row; kept out of evaluation data.
    tags: dict = dataclasses.field(default_factory=dict)

    def __reduce__(self):
        return Row, (self.values, self.source, self.tags)


def is_hub_name(spec: str) -> bool:
    """Whether ``spec`` names a `datasets` hub data set (``org/name[:split]``, no such local path)."""
    return bool(HUB_NAME.fullmatch(spec)) and not os.path.lexists(spec) and Path(spec).suffix.lower() not in SUFFIXES


def absolute(spec: str) -> str:
    """``spec`` as an absolute path (a hub name as it is)."""
    return spec if is_hub_name(spec) else os.path.abspath(spec)


def expand_paths(specs: list[str]) -> list[str]:
    """Files named by ``specs`` (files, folders, globs), in a stable order, each file once (a
    symlink loop does not repeat it); a DataError for a missing file or a broken symlink."""
    files: list[str] = []
    for spec in specs:
        if any(ch in spec for ch in "*?["):
            matches = _data_files(sorted(glob.glob(spec, recursive=True)), f"glob '{spec}'", only_data=False)
            if not matches:
                raise DataError(f"no data file matches '{spec}'")
            files.extend(matches)
        elif os.path.isdir(spec):
            found = sorted(str(p) for p in Path(spec).rglob("*") if p.suffix in SUFFIXES)
            matches = _data_files(found, f"data folder '{spec}'", only_data=True)
            if not matches:
                raise DataError(f"data folder '{spec}' holds no {', '.join(SUFFIXES)} file")
            files.extend(matches)
        elif os.path.isfile(spec):
            files.append(spec)
        elif os.path.islink(spec):
            raise DataError(f"data file '{spec}' is a broken symlink (to '{os.readlink(spec)}'); fix or remove it")
        elif HUB_NAME.fullmatch(spec) and Path(spec).suffix.lower() not in SUFFIXES:
            files.append(spec)  # a `datasets` hub name, read by read_rows
        else:
            raise DataError(
                f"data file '{spec}' does not exist (looked for {os.path.abspath(spec)}; data paths in a config "
                "file are relative to the config file's folder, on the command line to the working directory); "
                "give a file, a folder, a glob, or a cached `datasets` name"
            )
    return files


def _data_files(paths: list[str], where: str, only_data: bool) -> list[str]:
    """The files among ``paths``, each real file once; a broken symlink is an error."""
    out, seen = [], set()
    for path in paths:
        if os.path.islink(path) and not os.path.exists(path):
            raise DataError(f"{where}: '{path}' is a broken symlink (to '{os.readlink(path)}'); fix or remove it")
        if not os.path.isfile(path) or (only_data and Path(path).suffix not in SUFFIXES):
            continue
        real = os.path.realpath(path)
        if real not in seen:
            seen.add(real)
            out.append(path)
    return out


MAX_DEPTH = 100  # nesting deeper than this in one row is refused (real data nests a handful of levels)


class _NotJSON:
    """What ``NaN``/``Infinity`` parse to, so the row holding one is refused."""

    def __init__(self, name: str):
        self.name = name


_DECODER = json.JSONDecoder(parse_constant=_NotJSON)  # one for every row (json.loads with options makes one per call)


def _json_loads(text: str):
    return _DECODER.decode(text)


def row_problem(value: Any) -> tuple[str, str] | None:
    """(reason, detail) when a parsed row cannot be trained on as it is: a NaN/Infinity constant
    (not JSON), a lone surrogate or undecodable byte in a string, nesting deeper than
    :data:`MAX_DEPTH`; None when it is fine."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return "too deeply nested", f"nested deeper than {MAX_DEPTH} levels"
        if isinstance(item, _NotJSON):
            return "invalid JSON", f"{item.name} is not valid JSON (write null, a number or a string)"
        if isinstance(item, str):
            bad = _bad_text(item)
            if bad:
                return "invalid text", bad
        elif isinstance(item, dict):
            stack.extend((k, depth + 1) for k in item)
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return None


def _bad_text(text: str) -> str | None:
    try:
        text.encode("utf-8")
        return None
    except UnicodeEncodeError as exc:
        char = ord(text[exc.start])
        if 0xDC80 <= char <= 0xDCFF:  # an undecodable byte, kept by errors="surrogateescape"
            return f"byte 0x{char - 0xDC00:02x} is not UTF-8 (save the file as UTF-8)"
        return f"lone surrogate \\u{char:04x} is not valid Unicode text"


BLOCK = 1 << 20  # characters read at a time from a data file


def _blocks(path: str) -> Iterator[str]:
    """The text of ``path`` in blocks (a leading UTF-8 BOM dropped; bytes that are not UTF-8 kept
    as surrogates so that the rows holding them are reported, not the whole file)."""
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        yield from iter(lambda: f.read(BLOCK), "")


def _lines(path: str) -> Iterator[tuple[int, str]]:
    """(1-based number, line) of the file ``path``, read as it goes, split at newlines only (not
    at U+2028 and friends)."""
    n, rest = 0, ""
    for block in _blocks(path):
        parts = (rest + block).split("\n")
        rest = parts.pop()
        for line in parts:
            n += 1
            yield n, line[:-1] if line.endswith("\r") else line
    yield n + 1, rest[:-1] if rest.endswith("\r") else rest


def read_rows(path: str, problems: list[Problem]) -> Iterator[Row]:
    """Rows of one file, read as they are needed (a file never sits in memory whole);
    unreadable rows (invalid JSON, bad text...) are appended to ``problems``."""
    suffix = Path(path).suffix.lower()
    if not os.path.exists(path) and HUB_NAME.fullmatch(path):
        for n, record in enumerate(load_hub(path), 1):
            yield Row(record, Source(path, row=n))
    elif suffix == ".txt":
        for n, text in _lines(path):
            if text.strip():
                bad = _bad_text(text)
                if bad:
                    problems.append(Problem(Source(path, line=n), "invalid text", bad))
                else:
                    yield Row({"text": text}, Source(path, line=n))
    elif suffix in (".jsonl", ".json"):
        yield from _read_json(path, problems)
    elif suffix == ".csv":
        yield from _read_csv(path, problems)
    elif suffix == ".conll":
        raise DataError(f"data file '{path}' is a CoNLL file: read it with a formatter that reads CoNLL (format: ner)")
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        n = 0
        for batch in pq.ParquetFile(path).iter_batches():
            for record in batch.to_pylist():
                n += 1
                yield Row(record, Source(path, row=n))
    else:
        raise DataError(f"data file '{path}' has an unknown type '{suffix}'; use one of {', '.join(SUFFIXES)}")


def _read_csv(path: str, problems: list[Problem]) -> Iterator[Row]:
    """CSV rows by header; a row with more or fewer fields than the header (an unquoted comma in
    a value...) is a bad row, never cut to fit."""
    import csv

    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader, None)
            if header is None:
                return
            n = 0
            for fields in reader:
                if not fields:  # a blank line
                    continue
                n += 1
                source = Source(path, line=reader.line_num, row=n)
                if len(fields) != len(header):
                    problems.append(Problem(source, "wrong field count",
                                            f"{len(fields)} fields, the header has {len(header)} "
                                            "(a value holding a comma must be in double quotes)"))
                    continue
                record = dict(zip(header, fields))
                bad = row_problem(record)
                if bad:
                    problems.append(Problem(source, *bad))
                else:
                    yield Row(record, source)
        except csv.Error as exc:
            raise DataError(f"{path}:{reader.line_num}: not valid CSV ({exc})") from None


def _read_json(path: str, problems: list[Problem]) -> Iterator[Row]:
    """A JSON list (its elements numbered as rows) or one JSON value per line."""
    blocks = _blocks(path)
    first = next((block.lstrip()[:1] for block in blocks if block.strip()), "")
    blocks.close()
    if first == "[":
        for n, (record, text) in enumerate(_json_list(path), 1):
            bad = None if _plain_line(text) and not _bad_text(text) else row_problem(record)
            if bad:
                problems.append(Problem(Source(path, row=n), *bad))
            else:
                yield Row(record, Source(path, row=n))
        return
    for n, line in _lines(path):
        if not line.strip():
            continue
        source = Source(path, line=n)
        bad = _bad_text(line)
        if bad:
            problems.append(Problem(source, "invalid text", bad))
            continue
        try:
            record = _json_loads(line)
        except json.JSONDecodeError as exc:
            problems.append(Problem(source, "invalid JSON", exc.msg))
            continue
        except RecursionError:
            problems.append(Problem(source, "too deeply nested", f"nested deeper than {MAX_DEPTH} levels"))
            continue
        bad = None if _plain_line(line) else row_problem(record)
        if bad:
            problems.append(Problem(source, *bad))
        else:
            yield Row(record, source)


def _plain_line(line: str) -> bool:
    """Whether a JSON line or list element (its text free of undecodable bytes) surely parses to a
    row :func:`row_problem` accepts: no ``\\u`` escape (a lone surrogate needs one), no NaN or
    Infinity, too few brackets to nest too deeply. Saves walking every row of a large file."""
    return ("\\u" not in line and "NaN" not in line and "Infinity" not in line
            and line.count("[") + line.count("{") < MAX_DEPTH)


_SPACE = re.compile(r"[ \t\n\r]*")


def _json_list(path: str) -> Iterator[tuple[Any, str]]:
    """The elements of the JSON list in ``path`` and their text, decoded one at a time from
    blocks of text (a list of a million rows never sits in memory); a DataError with the line
    where it is not JSON."""
    blocks = _blocks(path)
    buf, pos, line, ended = "", 0, 1, False  # line: the line number of buf[0]

    def fail(msg: str, at: int):
        where = line + buf.count("\n", 0, at)
        raise DataError(f"{path}:{where}: invalid JSON ({msg}); the whole file is one JSON list")

    def more() -> bool:
        nonlocal buf, pos, line, ended
        block = next(blocks, None)
        if block is None:
            ended = True
            return False
        line += buf.count("\n", 0, pos)
        buf, pos = buf[pos:] + block, 0
        return True

    def skip() -> str:  # the next character after white space ("" at the end of the file)
        nonlocal pos
        while True:
            pos = _SPACE.match(buf, pos).end()
            if pos < len(buf) or not more():
                return buf[pos:pos + 1]

    skip()
    pos += 1  # the "["
    if skip() == "]":
        pos += 1
    else:
        while True:
            if not skip():
                fail("Expecting value", pos)
            while True:
                try:
                    value, end = _DECODER.raw_decode(buf, pos)
                except json.JSONDecodeError as exc:
                    if ended or not more():
                        fail(exc.msg, exc.pos)
                    continue
                except RecursionError:
                    fail("nested too deeply", pos)
                if end < len(buf) or ended or not more():  # a value cut at the block's end reads on
                    break
            text, pos = buf[pos:end], end
            yield value, text
            after = skip()
            if after == "]":
                pos += 1
                break
            if after != ",":
                fail("Expecting ',' delimiter" if after else "Expecting ']'", pos)
            pos += 1
    if skip():
        fail("Extra data", pos)


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
    """Formatted examples of one split and the accounting of how they were made. ``examples`` is a
    sequence of dicts: memory-mapped from the split's Arrow file
    (:class:`~tunery.datastore.ArrowExamples`) after :func:`tunery.datatools.prepare_data`, a list
    where a step (an extension's ``transform_examples``...) made one."""

    examples: Sequence[dict]
    files: list[str]
    rows: int
    problems: list[Problem]
    truncated: int = 0
    dropped: int = 0  # too long with data.truncation=drop
    notes: dict = dataclasses.field(default_factory=dict)  # what the formatter changed: {note: rows}

    def summary(self) -> dict:
        counts = collections.Counter(p.reason for p in self.problems)
        out = {"files": self.files, "rows": self.rows, "examples": len(self.examples),
               "bad_rows": len(self.problems), "bad_rows_by_reason": dict(counts), "truncated": self.truncated,
               "dropped_too_long": self.dropped}
        if self.notes:
            out["notes"] = dict(self.notes)
        flags = getattr(self.examples, "augmented", None)  # memory-mapped: a column
        augmented = int(flags().sum()) if flags else sum(1 for ex in self.examples if ex.get("_augmented"))
        if augmented:
            out["augmented"] = augmented
        return out


def load_rows(specs: list[str], limit: int | None = None,
              reader: Any = None) -> tuple[list[Row], list[str], list[Problem]]:
    """All rows of the files named by ``specs`` (at most ``limit``), the files, and read problems
    (a list in memory: for a few rows; the training pipeline streams them).
    ``reader(path, problems)`` may read a file itself (the formatter's
    :meth:`~tunery.Formatter.read_file`); where it returns None, the file is read by its suffix."""
    files = expand_paths(specs)
    problems: list[Problem] = []
    return list(stream_rows(files, problems, limit, reader)), files, problems


def stream_rows(files: list[str], problems: list[Problem], limit: int | None = None,
                reader: Any = None) -> Iterator[Row]:
    """The rows of ``files`` one at a time (at most ``limit``), as :func:`load_rows` reads them;
    read problems are appended to ``problems`` as they are met."""
    count = 0
    for path in files:
        before = (count, len(problems))
        own = reader(path, problems) if reader is not None else None
        for row in own if own is not None else read_rows(path, problems):
            count += 1
            yield row
            if limit is not None and count >= limit:
                return
        if (count, len(problems)) == before:
            raise DataError(f"no rows in {path}: the file is empty; remove it from the data or fill it")


_NOTES: contextvars.ContextVar[collections.Counter | None] = contextvars.ContextVar("tunery_notes", default=None)


def note(what: str) -> None:
    """Count a change a formatter made to the row it is formatting (e.g. "prompt taken as the
    longest common prefix"); the counts appear in the data summary and in ``tunery data check``."""
    counter = _NOTES.get()
    if counter is not None:
        counter[what] += 1


def format_rows(rows: list[Row], formatter, options, tokenizer, run, problems: list[Problem],
                notes: collections.Counter | None = None, what: str | None = None) -> tuple[list[dict], int, int]:
    """Examples for ``rows``, the number truncated and the number dropped as too long
    (``data.truncation=drop``); bad rows (including those left with nothing to learn) go to
    ``problems``, the counts of what the formatter noted (:func:`note`) to ``notes``. With
    ``what`` (e.g. "tokenising the training data"), progress is shown."""
    token = _NOTES.set(collections.Counter() if notes is None else notes)
    if what and rows:
        from .phases import track

        rows = track(rows, len(rows), what)
    try:
        return _format_rows(rows, formatter, options, tokenizer, run, problems)
    finally:
        _NOTES.reset(token)


def _format_rows(rows, formatter, options, tokenizer, run, problems):
    data = run.config.data
    examples: list[dict] = []
    truncated = dropped = 0
    formatted = iter(_format_batch([row for row in rows if isinstance(row.values, dict)], formatter, options,
                                   tokenizer, run))
    for row in rows:
        try:
            if not isinstance(row.values, dict):
                raise RowError("wrong type", f"a row must be an object, got {type(row.values).__name__}")
            produced = next(formatted)
            if isinstance(produced, RowError):
                raise produced
            produced = produced if isinstance(produced, list) else [produced]
            if not produced or not all(isinstance(example, dict) for example in produced):
                odd = next((e for e in produced if not isinstance(e, dict)), produced)
                raise PluginError(f"{member_label(run, 'formatter', formatter)} gave {odd!r:.80} for {row.source}; "
                                  "a row's result must be an example (a dict), a non-empty list of them, or a RowError")
            if data.control:
                produced = [add_control(example, row.values, data.control, tokenizer) for example in produced]
            fitted = []
            for example in produced:
                example, cut = fit_length(example, data.max_length, data.truncation)
                truncated += cut
                try:
                    check_trainable(example, formatter.task)
                except RowError as exc:
                    if not cut:
                        raise
                    keeps = "start" if data.truncation == "right" else "end"
                    other = "left" if data.truncation == "right" else "right"
                    raise RowError(exc.reason, f"data.max_length={data.max_length} with data.truncation="
                                   f"{data.truncation} (keeps the {keeps}) cut off every trained token; set "
                                   f"data.truncation={other} or raise data.max_length") from None
                fitted.append({**example, **row.tags} if row.tags else example)
        except RowError as exc:
            if exc.reason == "too long" and data.truncation == "drop":
                dropped += 1
            else:
                problems.append(Problem(row.source, exc.reason, exc.detail))
            continue
        examples.extend(fitted)
    return examples, truncated, dropped


def _format_batch(rows: list[Row], formatter, options, tokenizer, run) -> list:
    """The formatter's ``format_batch`` for ``rows``: one entry per row. A formatter that fails
    with anything but a RowError is a PluginError naming it and the row it failed on."""
    if not rows:
        return []
    try:
        out = formatter.format_batch([row.values for row in rows], tokenizer, options, run)
    except (TuneryError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - a broken plugin is reported by name and row
        raise _formatter_failed(rows, formatter, options, tokenizer, run, exc) from exc
    if not isinstance(out, list) or len(out) != len(rows):
        got = f"{len(out)} results" if isinstance(out, list) else type(out).__name__
        raise PluginError(f"{member_label(run, 'formatter', formatter)} returned {got} from format_batch for "
                          f"{len(rows)} rows; it must return one entry per row (an example, a list of them, or a RowError)")
    return out


def _formatter_failed(rows: list[Row], formatter, options, tokenizer, run, exc: Exception) -> PluginError:
    """The PluginError for a formatter that crashed on a chunk: the first row ``format`` also
    fails on, else the chunk's span."""
    where, cause = f"the rows {rows[0].source} to {rows[-1].source}", exc
    for row in rows:
        try:
            formatter.format(row.values, tokenizer, options, run)
        except RowError:
            continue
        except Exception as found:  # noqa: BLE001
            where, cause = str(row.source), found
            break
    return PluginError(f"{member_label(run, 'formatter', formatter)} failed on {where}: "
                       f"{type(cause).__name__}: {cause}")


def add_control(example: dict, values: Mapping[str, Any], columns: list[str], tokenizer) -> dict:
    """``example`` with control tags (``<sentiment=positive>``, from the row's ``columns``) put
    in front of its tokens, unlearned (``data.control``); the values go to ``_control``."""
    from .generation import control_ids, control_start

    control = {}
    for column in columns:
        value = values.get(column)
        if value is None or isinstance(value, (dict, list)) or str(value).strip() == "":
            raise RowError("missing control value", f"data.control column '{column}' is missing or not a single "
                           f"value (got {value!r}); give every row a value or remove the column from data.control")
        control[column] = str(value).strip()
    if "input_ids" not in example:
        raise RowError("control codes", "data.control needs examples with input_ids (causal_lm or classification "
                       "data), not this formatter's; remove data.control")
    tags, start = control_ids(tokenizer, control), control_start(tokenizer, example["input_ids"])
    out = {**example, "_control": control}
    for key, fill in (("input_ids", None), ("labels", IGNORE), ("attention_mask", 1)):
        if isinstance(example.get(key), list):
            out[key] = [*example[key][:start], *(tags if fill is None else [fill] * len(tags)), *example[key][start:]]
    return out


IGNORE = -100

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
        if key.endswith("labels") and isinstance(value, list) and value and value.count(IGNORE) == len(value):
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
    fixes = [FIXES[reason] for reason in counts if reason in FIXES]
    if any("data.truncation=" in p.detail and "cut off every trained token" in p.detail for p in problems):
        fixes.insert(0, "set data.truncation as the rows say (or raise data.max_length)")
    lines.append("Fix: " + "; ".join(dict.fromkeys(fixes + ["fix these rows, or set data.on_bad_row=skip to train "
                                                            "without them (they are counted and reported)"])) + ".")
    return "\n".join(lines)


FIXES = {  # the config key that fixes a reason, before the last resort of skipping rows
    "too long": "raise data.max_length, or set data.truncation=right (keep the start) or left (keep the end)",
}
