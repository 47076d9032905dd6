"""Examples on disk: a split formatted chunk by chunk (in worker processes) into one Arrow file,
read back memory-mapped, so that a data set of a million rows never sits in memory.

A split's file ``<split>.arrow`` is an Arrow IPC stream (what ``datasets.Dataset.from_file``
reads) with one record batch per chunk of :data:`CHUNK` rows. An example's token lists (the
values of its keys ending in ``input_ids``, ``labels`` or ``attention_mask``) are the typed
column ``tokens`` (list of int32 lists), their names (and the key order) the JSON text ``keys``;
whatever else the formatter returned is the JSON text
``rest`` (null when nothing else). ``length`` is its longest token list and ``augmented`` says
an extension made it from another row. Chunks are formatted in ``data.workers`` processes and
written in row order, so the examples, their order and the bad rows' numbers do not depend on
the number of workers. Beside it, ``<split>.index.npz`` holds where each batch starts in the
file and every example's length and flag: opening a split reads that index only, and a batch's
pages are touched when one of its examples is read.
"""

from __future__ import annotations

import collections
import dataclasses
import gc
import json
import os
import shutil
import sys
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Iterable, Iterator

from . import data as datapipe

CHUNK = 2000  # rows formatted (and written) together
MAX_WORKERS = 8


def default_workers() -> int:
    """The processes that format data when ``data.workers`` is unset: the usable cores (at most 8)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(MAX_WORKERS, cores))


class _Mapped:
    """A split's Arrow file, memory-mapped, with its index (``<split>.index.npz``): where each
    record batch starts in the file, its first example, and every example's length and flag.
    Opening reads only the index; a batch is decoded (zero-copy) when one of its examples is read,
    so the file's pages are touched only as examples are."""

    def __init__(self, path: str):
        import numpy as np
        import pyarrow as pa

        with np.load(_index_path(path)) as index:
            self.offsets, self.starts = index["offsets"], index["starts"]
            self.length, self.augmented = index["length"], index["augmented"]
        self.buffer = pa.memory_map(path).read_buffer()
        self.batches: list[_Batch | None] = [None] * (len(self.starts) - 1)

    def batch(self, k: int) -> _Batch:
        """Record batch ``k``, decoded."""
        if self.batches[k] is None:
            import pyarrow as pa

            message = pa.ipc.read_message(self.buffer.slice(int(self.offsets[k])))
            self.batches[k] = _Batch(pa.ipc.read_record_batch(message, _schema()))
        return self.batches[k]


class _Batch:
    """One record batch's columns as numpy views of the mapped file: an example is rebuilt from
    its token lists (slices of one int32 buffer), their names and its JSON rest."""

    def __init__(self, batch: Any):
        tokens = batch.column(0)
        self.outer = tokens.offsets.to_numpy()  # example -> its token lists
        self.inner = tokens.values.offsets.to_numpy()  # token list -> its values
        self.values = tokens.values.values.to_numpy()
        self.keys, self.rest = batch.column(1), batch.column(2)
        self.entries: dict[str, list] = {}  # a keys entry -> [names, order]

    def example(self, i: int, rest: str | None = None, keys: str | None = None) -> dict:
        keys = self.keys[i].as_py() if keys is None else keys
        entry = self.entries.get(keys)
        if entry is None:
            entry = self.entries[keys] = json.loads(keys)
        names, order = entry
        inner, values, first = self.inner, self.values, int(self.outer[i])
        example = {name: values[inner[first + n]:inner[first + n + 1]].tolist() for n, name in enumerate(names)}
        rest = self.rest[i].as_py() if rest is None else rest
        if rest:
            example.update(json.loads(rest))
            if order:
                example = {key: example[key] for key in order}
        return example

    def examples(self) -> Iterator[dict]:
        for i, (keys, rest) in enumerate(zip(self.keys.to_pylist(), self.rest.to_pylist())):
            yield self.example(i, rest or "", keys)


def _index_path(path: str | os.PathLike) -> Path:
    return Path(path).with_suffix(".index.npz")


class ArrowExamples(Sequence):
    """A split's examples, memory-mapped from its Arrow file: a read-only sequence of dicts
    (each decoded when it is read), with the examples' lengths at hand without decoding."""

    def __init__(self, path: str | os.PathLike, packable: bool = False, index: Any = None, owner: Any = None,
                 mapped: _Mapped | None = None):
        import numpy as np

        self.path, self.packable, self._owner = str(path), packable, owner
        self._mapped = mapped  # opened when first needed; views of one split share it
        self._index = None if index is None else np.asarray(index, dtype=np.int64)
        self._added: dict[str, list] = {}  # values set by add_values, one per example of this view

    def _open(self) -> _Mapped:
        if self._mapped is None:
            self._mapped = _Mapped(self.path)
        return self._mapped

    def __len__(self) -> int:
        return int(self._open().starts[-1]) if self._index is None else len(self._index)

    def _position(self, i: int) -> int:
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"example {i} of {n}")
        return i if self._index is None else int(self._index[i])

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        import numpy as np

        mapped, at = self._open(), self._position(i)
        k = int(np.searchsorted(mapped.starts, at, side="right")) - 1
        example = mapped.batch(k).example(at - int(mapped.starts[k]))
        if self._added:
            i = i + len(self) if i < 0 else i
            example.update({name: values[i] for name, values in self._added.items()})
        return example

    def __iter__(self) -> Iterator[dict]:
        if self._index is not None or self._added:
            yield from (self[i] for i in range(len(self)))
            return
        mapped = self._open()
        for k in range(len(mapped.batches)):
            yield from mapped.batch(k).examples()

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and len(self) == len(other) and all(a == b for a, b in zip(self, other))

    __hash__ = None

    def __repr__(self) -> str:
        return f"ArrowExamples({self.path!r}, {len(self)} examples)"

    def __reduce__(self):  # another process (a data loader worker) maps the same file
        return _rebuild, (self.path, self.packable, self._index, self._added)

    def add_values(self, name: str, values: Sequence) -> None:
        """Give every example a key ``name`` with its value from ``values`` (in order): kept beside
        the read-only file, in memory, e.g. a reference model's log-probabilities."""
        if len(values) != len(self):
            raise ValueError(f"{len(values)} values for {len(self)} examples")
        self._added[name] = list(values)

    def _values(self, column: str):
        values = getattr(self._open(), column)
        return values if self._index is None else values[self._index]

    def lengths(self):
        """The longest token list of every example (numpy), read without decoding them."""
        return self._values("length")

    def augmented(self):
        """Which examples an extension made from another row (numpy booleans)."""
        return self._values("augmented")

    def select(self, indices: Iterable[int]) -> ArrowExamples:
        """The examples at ``indices``, in that order (the same file; nothing is copied)."""
        import numpy as np

        indices = np.asarray(list(indices) if not hasattr(indices, "__len__") else indices, dtype=np.int64)
        base = indices if self._index is None else self._index[indices]
        view = ArrowExamples(self.path, self.packable, base, self._owner, self._open())
        view._added = {name: [values[i] for i in indices] for name, values in self._added.items()}
        return view


def _rebuild(path: str, packable: bool, index: Any, added: dict) -> ArrowExamples:
    examples = ArrowExamples(path, packable, index)
    examples._added = added
    return examples


def add_example_values(examples: Sequence, name: str, values: Sequence) -> None:
    """Give every example of a split (a list of dicts, or the memory-mapped examples a run trains
    on) the key ``name`` with its value from ``values``, in order: how an objective attaches what
    it computes once per example before training (reference log-probabilities, prompt numbers)."""
    if isinstance(examples, ArrowExamples):
        examples.add_values(name, values)
        return
    if len(values) != len(examples):
        raise ValueError(f"{len(values)} values for {len(examples)} examples")
    for example, value in zip(examples, values):
        example[name] = value


def take(examples: Sequence, indices: Iterable[int]) -> Sequence:
    """The examples at ``indices``: a view of an :class:`ArrowExamples`, a list otherwise."""
    if isinstance(examples, ArrowExamples):
        return examples.select(indices)
    return [examples[i] for i in indices]


def lengths(examples: Sequence) -> list[int]:
    """The longest token list of each example (its ``input_ids`` for a causal-LM example), from
    the Arrow column or the packed rows' members where there is one, without decoding."""
    if hasattr(examples, "lengths"):
        return examples.lengths().tolist()
    return [max((len(v) for v in ex.values() if isinstance(v, list)), default=0) for ex in examples]


def augmented_flags(examples: Sequence) -> list[bool]:
    """Whether each example was made by an extension from another row (``_augmented``)."""
    if isinstance(examples, ArrowExamples):
        return examples.augmented().tolist()
    return [bool(ex.get("_augmented")) for ex in examples]


class TempFolder:
    """A folder removed when the last example sequence reading from it is gone."""

    def __init__(self, parent: Path):
        import tempfile

        parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix="tmp-", dir=parent))
        weakref.finalize(self, shutil.rmtree, str(self.path), True)


# ----------------------------------------------------------------------------- formatting


@dataclasses.dataclass
class Formatted:
    """What formatting a split gave: its examples on disk and the accounting."""

    examples: ArrowExamples
    rows: int
    problems: list
    truncated: int
    dropped: int
    notes: dict


_JOB: dict = {}  # what the worker processes format with (inherited when they fork)


def _format_chunk(rows: list) -> tuple:
    """Format one chunk of rows (in a worker, or in this process); returns the chunk's Arrow
    record batch (serialised) and its accounting."""
    from .packing import can_pack

    job = _JOB
    problems: list = []
    notes = collections.Counter()
    collecting = gc.isenabled()
    gc.disable()  # a chunk makes ~10 lists a row and few cycles: collecting during it costs ~15%
    try:
        examples, truncated, dropped = datapipe.format_rows(rows, job["formatter"], job["options"], job["tokenizer"],
                                                            job["run"], problems, notes)
    finally:
        if collecting:
            gc.enable()
    return (examples_batch(examples).serialize().to_pybytes(), problems, truncated, dropped, dict(notes),
            can_pack(examples) if examples else None)


def examples_batch(examples: list[dict]) -> Any:
    """The Arrow record batch (:func:`_schema`) that stores ``examples``: their token lists typed
    when every one of the chunk is a list of integers that fits int32, else all in ``rest``."""
    import pyarrow as pa

    split = [_split_example(example) for example in examples]
    tokens = _token_column([lists for _, lists, _ in split])
    if tokens is None:  # something that is not a token id: kept exactly, as JSON
        split = [(((), None), [], example) for example in examples]
        tokens = _token_column([[]] * len(examples))
    entries: dict = {}
    keys = pa.array([entries.get(names) or entries.setdefault(names, json.dumps(names)) for names, _, _ in split],
                    pa.string())
    rest = pa.array([json.dumps(r) if r else None for _, _, r in split], pa.string())
    return pa.record_batch([tokens, keys, rest, pa.array(lengths(examples), pa.int32()),
                            pa.array(augmented_flags(examples), pa.bool_())], schema=_schema())


def _split_example(example: dict) -> tuple:
    """(key entry, token lists, rest) of an example; the entry is (token list names, the key order
    when the rest would change it)."""
    names = [k for k, v in example.items() if isinstance(v, list) and k.endswith(datapipe.SEQUENCE_KEYS)]
    if len(names) == len(example):
        return (tuple(names), None), [example[k] for k in names], None
    rest = {k: v for k, v in example.items() if k not in names}
    order = list(example)
    keep = None if order == names + list(rest) else tuple(order)
    return (tuple(names), keep), [example[k] for k in names], rest


def _token_column(lists: list[list]) -> Any:
    """``lists`` (per example, its token lists) as a list<list<int32>> array, or None when a value
    is not a Python int (a float, a bool, null, text...) or does not fit int32."""
    import pyarrow as pa

    try:  # a list's sum is an int only when it holds ints (and bools, which pyarrow refuses)
        if not all(type(sum(seq)) is int for example in lists for seq in example):
            return None  # a float (pyarrow would truncate it without a word), a numpy number...
        return pa.array(lists, _schema().field(0).type)
    except (TypeError, pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return None  # null, text, a bool, too large for int32


def _schema():
    import pyarrow as pa

    return pa.schema([("tokens", pa.list_(pa.list_(pa.int32()))), ("keys", pa.string()),
                      ("rest", pa.string()), ("length", pa.int32()), ("augmented", pa.bool_())])


def _chunks(rows: Iterable, size: int) -> Iterator[list]:
    chunk: list = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def format_to_arrow(run: Any, rows: Iterable, path: Path, *, workers: int | None = None, what: str | None = None,
                    owner: Any = None) -> Formatted:
    """Format ``rows`` (any iterable of :class:`~tunery.data.Row`) with the run's formatter into
    the Arrow file ``path``, :data:`CHUNK` rows at a time, in ``workers`` processes when there is
    more than one chunk; bad rows (with their file and line) are returned in row order."""
    workers = workers or run.config.data.workers or default_workers()
    _JOB.update(run=run, formatter=run.formatter, options=run.config.format.options, tokenizer=run.tokenizer)
    try:
        return _format_to_arrow(rows, path, workers, what, owner)
    finally:
        _JOB.clear()


def _format_to_arrow(rows: Iterable, path: Path, workers: int, what: str | None, owner: Any) -> Formatted:
    import pyarrow as pa

    counted = _Counted(rows)
    chunks = _chunks(counted, CHUNK)
    if what:
        from .phases import track

        chunks = track(chunks, None, f"{what}, in chunks of {CHUNK} rows")
    problems: list = []
    totals = {"truncated": 0, "dropped": 0}
    notes = collections.Counter()
    packable: list = []
    offsets, counts, lengths_, flags = [], [], [], []
    schema = _schema()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as sink:  # an Arrow IPC stream: the schema, each chunk's batch, the end marker
        sink.write(schema.serialize())
        for data, found, truncated, dropped, noted, can in _run_chunks(chunks, workers):
            batch = pa.ipc.read_record_batch(pa.py_buffer(data), schema)
            offsets.append(sink.tell())
            sink.write(data)
            counts.append(batch.num_rows)
            lengths_.append(batch.column(3).to_numpy().copy())  # not a view that keeps the chunk alive
            flags.append(batch.column(4).to_numpy(zero_copy_only=False))
            problems.extend(found)
            totals["truncated"] += truncated
            totals["dropped"] += dropped
            notes.update(noted)
            if can is not None:
                packable.append(can)
        sink.write(b"\xff\xff\xff\xff\x00\x00\x00\x00")
    _write_index(path, offsets, counts, lengths_, flags)
    examples = ArrowExamples(path, bool(packable) and all(packable), owner=owner)
    return Formatted(examples, counted.n, problems, totals["truncated"], totals["dropped"], dict(notes))


def _write_index(path: Path, offsets: list, counts: list, lengths_: list, flags: list) -> None:
    import numpy as np

    np.savez(_index_path(path), offsets=np.asarray(offsets, dtype=np.int64),
             starts=np.cumsum([0, *counts], dtype=np.int64),
             length=np.concatenate(lengths_) if lengths_ else np.zeros(0, np.int32),
             augmented=np.concatenate(flags) if flags else np.zeros(0, bool))


class _Counted:
    """An iterable that counts what it gave."""

    def __init__(self, items: Iterable):
        self.items, self.n = items, 0

    def __iter__(self):
        for item in self.items:
            self.n += 1
            yield item


def _run_chunks(chunks: Iterator[list], workers: int) -> Iterator[tuple]:
    """Each chunk's result in order: here while there is one chunk (or one worker), else in a
    pool of forked processes with at most two chunks per worker waiting (rows are read as the
    workers need them)."""
    first = next(chunks, None)
    if first is None:
        return
    second = next(chunks, None)
    import multiprocessing

    if second is None or workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        yield _format_chunk(first)
        if second is not None:
            yield _format_chunk(second)
            for chunk in chunks:
                yield _format_chunk(chunk)
        return
    previous = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # each worker tokenises on its own core
    sys.stderr.flush()
    gc.freeze()  # the workers' collections skip what they inherit: half the copy-on-write page faults
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            pending: collections.deque = collections.deque()
            for chunk in _chain(first, second, chunks):
                pending.append(pool.apply_async(_format_chunk, (chunk,)))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().get()
            while pending:
                yield pending.popleft().get()
    finally:
        gc.unfreeze()
        if previous is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = previous


def _chain(first, second, rest):
    yield first
    yield second
    yield from rest
