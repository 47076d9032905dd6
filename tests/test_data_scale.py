"""Data at scale: rows stream from the files, chunks are formatted in worker processes into a
memory-mapped Arrow file (the cache), and none of it changes what a run trains on: the same
examples, bad rows with the same numbers, whatever the number of workers, cached or not; the
same packed rows as the in-memory best fit. (That memory does not grow with the rows is
measured by benchmarks/data_scale.py.)"""

from __future__ import annotations

import bisect
import json
import pickle
import random

import pytest

from tests.conftest import write_jsonl
from tunery import hookimpl


def _rows(n: int, seed: int = 0) -> list:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = " ".join(rng.choice(["sea", "moon", "bread", "river", "blue", "seven"]) for _ in range(rng.randint(1, 12)))
        rows.append({"instruction": f"Say {words}?", "input": "" if i % 3 else f"ctx {i}", "output": f"{words} {i}."})
    return rows


def _config(tiny_lm, tmp_path, path, **data):
    return {"model": tiny_lm, "output_dir": str(tmp_path / "run"), "method": "lora",
            "format": {"name": "alpaca", "template": "alpaca"},
            "data": {"train": [str(path)], "max_length": 256, "on_bad_row": "skip", **data}}


def test_a_json_list_is_read_element_by_element_and_bad_elements_keep_their_numbers(tmp_path, monkeypatch):
    from tunery import data as datapipe
    from tunery.errors import DataError

    monkeypatch.setattr(datapipe, "BLOCK", 7)  # elements and numbers cut across blocks
    good = [{"text": f"row number {i} " + "x" * (i % 5)} for i in range(30)]
    elements = [json.dumps(r) for r in good]
    elements[4], elements[11], elements[20] = '{"text": NaN}', '"just a string"', '{"text": 12345678901}'
    path = tmp_path / "rows.json"
    path.write_text("[\n  " + ",\n  ".join(elements) + "\n]\n")
    problems: list = []
    rows = list(datapipe.read_rows(str(path), problems))
    assert [str(p.source) for p in problems] == [f"{path} row 5"]
    assert problems[0].reason == "invalid JSON"
    assert [r.source.row for r in rows] == [n for n in range(1, 31) if n != 5]
    assert rows[10].values == "just a string" and rows[19].values == {"text": 12345678901}
    assert [r.values for r in rows if isinstance(r.values, dict) and r.source.row not in (21,)] == \
           [g for n, g in enumerate(good, 1) if n not in (5, 12, 21)]

    raw = tmp_path / "raw.json"  # a byte that is not UTF-8, a lone surrogate, deep nesting: by element
    raw.write_bytes(b'[{"text": "ok"}, {"text": "caf\xe9"}, {"text": "\\ud800"}, ' + b"[" * 150 + b"]" * 150
                    + b', {"text": "ok"}]')
    found: list = []
    assert [r.source.row for r in datapipe.read_rows(str(raw), found)] == [1, 5]
    assert [(p.source.row, p.reason) for p in found] == [(2, "invalid text"), (3, "invalid text"),
                                                         (4, "too deeply nested")]

    broken = tmp_path / "broken.json"  # the first rows come before the end of the file is read
    broken.write_text("[" + ",\n".join(elements[:3]) + ",\n{oops}\n]")
    stream = datapipe.read_rows(str(broken), [])
    assert next(stream).values == good[0]
    with pytest.raises(DataError, match=r"broken.json:4: invalid JSON"):
        list(stream)
    for text, line in (("[1, 2", 1), ('[{"a": 1}\n\n{"b": 2}]', 3), ("[1]\n[2]", 2), ("[]", None)):
        broken.write_text(text)
        if line is None:
            assert list(datapipe.read_rows(str(broken), [])) == []
            continue
        with pytest.raises(DataError, match=rf"broken.json:{line}: invalid JSON"):
            list(datapipe.read_rows(str(broken), []))


def test_one_or_two_workers_give_the_same_examples_bad_rows_and_notes(tiny_lm, tmp_path, monkeypatch):
    from tunery import Engine, datastore

    monkeypatch.setattr(datastore, "CHUNK", 4)  # 23 rows: 6 chunks
    rows = _rows(23)
    rows[2] = {"instruction": "no output"}
    rows[9] = '{"instruction": broken'
    rows[17] = {"instruction": "empty", "output": ""}
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    engine = Engine()
    results = {}
    for workers in (1, 2):
        prepared = engine.prepare_data(_config(tiny_lm, tmp_path, path, workers=workers, cache=False))
        train = prepared.train
        results[workers] = (list(train.examples), [str(p) for p in train.problems], train.rows, train.notes)
    assert results[1] == results[2]
    examples, problems, n_rows, _ = results[1]
    assert problems == [f"{path}:10: invalid JSON: Expecting value", f"{path}:3: missing column: no 'output' "
                        "(columns present: instruction)", f"{path}:18: empty text: 'output' is empty"]
    assert n_rows == 22 and len(examples) == 20


def test_a_second_prepare_maps_the_cache_and_gives_the_same_examples(tiny_lm, tmp_path):
    from tunery import Engine
    from tunery.datastore import ArrowExamples

    path = write_jsonl(tmp_path / "rows.jsonl", [*_rows(12), {"instruction": "x"}])
    engine = Engine()
    first = engine.prepare_data(_config(tiny_lm, tmp_path, path))
    second = engine.prepare_data(_config(tiny_lm, tmp_path, path))
    assert (first.cached, second.cached) == (False, True)
    assert isinstance(second.train.examples, ArrowExamples)
    assert list(second.train.examples) == list(first.train.examples) and len(first.train.examples) == 12
    assert [str(p) for p in second.train.problems] == [str(p) for p in first.train.problems] == \
           [f"{path}:13: missing column: no 'output' (columns present: instruction)"]
    examples = second.train.examples
    assert examples[-1] == list(examples)[11] and examples[2:4] == list(examples)[2:4]
    view = examples.select([5, 1])
    assert list(view) == [examples[5], examples[1]] and view.lengths().tolist() == [
        len(examples[5]["input_ids"]), len(examples[1]["input_ids"])]
    assert list(pickle.loads(pickle.dumps(view))) == list(view)  # a data loader worker maps the same file
    with pytest.raises(IndexError):
        examples[12]

    # values an objective computes once per example (reference log-probabilities) travel with them
    from tunery import add_example_values

    add_example_values(examples, "ref_logps", [float(-i) for i in range(12)])
    assert examples[3]["ref_logps"] == -3.0 and examples[-1]["ref_logps"] == -11.0
    assert [e["ref_logps"] for e in examples] == [float(-i) for i in range(12)]
    assert [e["ref_logps"] for e in examples.select([7, 2])] == [-7.0, -2.0]
    assert pickle.loads(pickle.dumps(examples))[4]["ref_logps"] == -4.0
    with pytest.raises(ValueError, match="3 values for 12 examples"):
        add_example_values(examples, "short", [1, 2, 3])


def test_opening_a_split_reads_its_index_only_and_datasets_reads_the_file(tiny_lm, tmp_path, monkeypatch):
    """A million-row split opens without touching its examples: the count and lengths come from
    the index beside the file; an example's batch is decoded when it is read."""
    import datasets

    from tunery import Engine, datastore

    monkeypatch.setattr(datastore, "CHUNK", 4)  # 10 rows: 3 batches
    path = write_jsonl(tmp_path / "rows.jsonl", _rows(10))
    prepared = Engine().prepare_data(_config(tiny_lm, tmp_path, path))
    written = list(prepared.train.examples)
    fresh = datastore.ArrowExamples(prepared.train.examples.path, True)
    assert len(fresh) == 10 and fresh.lengths().tolist() == [len(e["input_ids"]) for e in written]
    assert fresh.select(range(10))._mapped is fresh._mapped and fresh._mapped.batches == [None] * 3
    assert fresh[9] == written[9] and [b is not None for b in fresh._mapped.batches] == [False, False, True]
    table = datasets.Dataset.from_file(fresh.path)  # a plain Arrow IPC stream, token lists typed
    assert table.features["tokens"].feature.feature.dtype == "int32"
    assert table["tokens"] == [[e["input_ids"], e["labels"]] for e in written]
    assert table["length"] == fresh.lengths().tolist() and table["rest"] == [None] * 10


def _old_pack(examples, max_length):
    """The in-memory best fit (longest first) that packing was before it streamed."""
    from tunery.packing import _join

    order = sorted(range(len(examples)), key=lambda i: (-len(examples[i]["input_ids"]), i))
    rows, room = [], []
    for i in order:
        n = len(examples[i]["input_ids"])
        at = bisect.bisect_left(room, (n, -1))
        if at == len(room):
            rows.append([i])
            if max_length - n > 0:
                bisect.insort(room, (max_length - n, len(rows) - 1))
            continue
        free, row = room.pop(at)
        rows[row].append(i)
        if free - n > 0:
            bisect.insort(room, (free - n, row))
    return [_join([examples[i] for i in sorted(members)]) for members in rows]


def test_packing_the_memory_mapped_examples_gives_the_rows_it_gave_in_memory(tiny_lm, tmp_path):
    from tunery import Engine
    from tunery.packing import can_pack, pack

    path = write_jsonl(tmp_path / "rows.jsonl", _rows(60, seed=3))
    examples = Engine().prepare_data(_config(tiny_lm, tmp_path, path)).train.examples
    assert can_pack(examples)
    for max_length in (64, 150, 400):
        expected = _old_pack(list(examples), max_length)
        assert list(pack(examples, max_length)) == expected
        assert list(pack(list(examples), max_length)) == expected
    rng = random.Random(1)
    varied = [{"input_ids": [1] * (n := rng.randint(1, 40)), "labels": [2] * n} for _ in range(300)]
    assert list(pack(varied, 40)) == _old_pack(varied, 40)


def test_writing_a_split_holds_one_chunk_at_a_time(tmp_path, monkeypatch):
    """The writer keeps nothing of a chunk but its lengths: the memory it holds while writing
    does not grow with the number of chunks (a view into each chunk once kept them all)."""
    import tracemalloc

    from tunery import datastore

    def chunks(n):
        for k in range(n):
            batch = datastore.examples_batch([{"input_ids": [k] * 300, "labels": [k] * 300}] * 200)
            yield batch.serialize().to_pybytes(), [], 0, 0, {}, True

    peaks = {}
    for n in (2, 4, 40):  # the first writes once-only things (lazy imports)
        monkeypatch.setattr(datastore, "_run_chunks", lambda rows, workers, n=n: chunks(n))
        tracemalloc.start()
        written = datastore._format_to_arrow([], tmp_path / f"{n}.arrow", 1, None, None)
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert len(written.examples) == 200 * n and written.examples[-1]["input_ids"][0] == n - 1
    assert peaks[40] < 2 * peaks[4], peaks  # 10x the chunks, not 10x the memory


class _Formatters:
    """A plugin object that registers the given formatters."""

    def __init__(self, *formatters):
        self.formatters = formatters

    @hookimpl
    def tunery_register_formatters(self, registry):
        for formatter in self.formatters:
            registry.add(formatter)


def _text_config(tiny_lm, tmp_path, path, name, **data):
    return {"model": tiny_lm, "output_dir": str(tmp_path / "run"), "method": "lora", "format": name,
            "data": {"train": [str(path)], "max_length": 64, "on_bad_row": "skip", "cache": False, **data}}


def test_a_formatters_format_batch_gets_whole_chunks_and_its_row_errors_keep_their_numbers(tiny_lm, tmp_path,
                                                                                              monkeypatch):
    from tunery import Engine, Formatter, RowError, datastore, encode_batch

    class Batched(Formatter):
        name, task, calls = "batched", "causal_lm", []

        def format_batch(self, rows, tokenizer, options, run):
            self.calls.append(len(rows))
            texts = [row.get("text") for row in rows]
            ids = iter(encode_batch(tokenizer, [t for t in texts if isinstance(t, str)]))
            return [RowError("no text", "the row has no 'text'") if not isinstance(t, str) else
                    {"input_ids": (i := next(ids)), "labels": list(i)} for t in texts]

    monkeypatch.setattr(datastore, "CHUNK", 4)
    rows = [{"text": f"row {n} of the file"} for n in range(1, 11)]
    rows[5] = {"other": 1}
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    prepared = Engine(plugins=[_Formatters(Batched())]).prepare_data(
        _text_config(tiny_lm, tmp_path, path, "batched", workers=1))
    assert Batched.calls == [4, 4, 2]
    assert [str(p) for p in prepared.train.problems] == [f"{path}:6: no text: the row has no 'text'"]
    assert len(prepared.train.examples) == 9 and prepared.train.examples[5]["input_ids"]


def test_a_formatter_that_crashes_is_named_with_the_row_it_failed_on(tiny_lm, tmp_path, monkeypatch):
    from tunery import Engine, Formatter, PluginError, datastore

    class Crashy(Formatter):
        name, task = "crashy", "causal_lm"

        def format(self, row, tokenizer, options, run):
            return {"input_ids": [1, 2], "labels": [1, 2], "x": 1 / len(row["text"])}

    class Miscounts(Formatter):
        name, task = "miscounts", "causal_lm"

        def format_batch(self, rows, tokenizer, options, run):
            return [{"input_ids": [1, 2], "labels": [1, 2]}]

    class Nothing(Formatter):
        name, task = "nothing", "causal_lm"

        def format(self, row, tokenizer, options, run):
            return None

    monkeypatch.setattr(datastore, "CHUNK", 4)
    path = write_jsonl(tmp_path / "rows.jsonl", [{"text": "ab"}] * 6 + [{"text": ""}] + [{"text": "c"}] * 3)
    engine = Engine(plugins=[_Formatters(Crashy(), Miscounts(), Nothing())])
    with pytest.raises(PluginError, match=rf"formatter 'crashy' \(plugin '.*'\) failed on {path}:7: "
                                          "ZeroDivisionError: division by zero"):
        engine.prepare_data(_text_config(tiny_lm, tmp_path, path, "crashy", workers=2))  # in a worker process
    with pytest.raises(PluginError, match="formatter 'miscounts' .* returned 1 results from format_batch for 4 rows"):
        engine.prepare_data(_text_config(tiny_lm, tmp_path, path, "miscounts", workers=1))
    with pytest.raises(PluginError, match=rf"formatter 'nothing' .* gave None for {path}:1; a row's result must be"):
        engine.prepare_data(_text_config(tiny_lm, tmp_path, path, "nothing", workers=1))


def test_token_lists_are_stored_typed_and_anything_else_exactly_as_the_formatter_returned_it():
    """int32 token lists go to the typed column; a float (pyarrow would truncate it), a bool, null,
    text, a number too large for int32, or a key that is not a token list come back unchanged."""
    import pyarrow as pa

    from tunery import datastore

    def stored(examples):
        batch = datastore.examples_batch(examples)
        read = datastore._Batch(pa.ipc.read_record_batch(batch.serialize(), datastore._schema()))
        return batch.column(0).to_pylist(), [read.example(i) for i in range(len(examples))]

    typed = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"_tag": "x", "input_ids": [1], "labels": 3}]
    column, back = stored(typed)
    assert column == [[[5, 6, 7], [-100, 6, 7]], [[1]]] and back == typed
    assert [list(e) for e in back] == [list(e) for e in typed]  # the keys keep their order
    for odd in ([0.5, 1], [1, 2.0], [True, 1], [None], ["7"], [2 ** 31], [[1]]):
        examples = [{"input_ids": [1, 2], "labels": [1, 2]}, {"input_ids": [3], "soft_labels": odd}]
        column, back = stored(examples)
        assert back == examples and [type(v) for v in back[1]["soft_labels"]] == [type(v) for v in odd], odd
        assert column == [[], []], odd  # the chunk is kept as JSON
