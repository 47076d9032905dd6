"""Every registered formatter, fed generated rows: each row either becomes examples or is reported
as a bad row with its file and row number; never an uncaught exception, never a silently dropped row.
A chunk of rows formats as the rows do one by one, and is stored and read back unchanged.

Row shapes per formatter are registered in ROWS (one place); a formatter without an entry gets the
generic rows. A new formatter joins automatically once its plugin is installed.
"""

from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunery import Engine, datastore
from tunery.data import Problem, Row, Source, format_rows
from tunery.errors import DataError
from tunery import RunContext

# Any JSON value a data file can hold.
scalar = st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True) | st.text(max_size=60)
json_value = st.recursive(scalar, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                          max_leaves=8)
text = st.text(max_size=120) | st.sampled_from(["", " ", "\n", "<|im_end|>", "<pad>", "{instruction}", "{0}"])
text_or_junk = text | json_value


def columns(**fields) -> st.SearchStrategy:
    """Rows with these columns (each may be missing, junk, or a wrong type) plus stray columns."""
    return st.fixed_dictionaries({}, optional={k: v for k, v in fields.items()}).flatmap(
        lambda row: st.dictionaries(st.text(max_size=8), json_value, max_size=2).map(lambda extra: {**extra, **row}))


ROWS = {
    "alpaca": columns(instruction=text_or_junk, input=text_or_junk, output=text_or_junk, system=text_or_junk,
                      history=st.lists(st.lists(text, min_size=1, max_size=3), max_size=2) | json_value),
    "completion": columns(text=text_or_junk),
    "classification": columns(text=text_or_junk, label=st.sampled_from(["pos", "neg", "0", "1"]) | json_value),
    "chat": columns(messages=st.lists(columns(role=st.sampled_from(["system", "user", "assistant", "tool", "x"])
                                              | json_value, content=text_or_junk), max_size=4) | json_value),
    "preference": columns(prompt=text_or_junk, chosen=text_or_junk, rejected=text_or_junk),
    "multitask": columns(_task=st.sampled_from(["qa", "nope"]) | json_value, instruction=text_or_junk,
                         answer=text_or_junk, input=text_or_junk),
}
# Options a formatter cannot run without (the defaults are used otherwise).
OPTIONS = {
    "multitask": {"tasks": [{"name": "qa", "files": ["*.jsonl"], "format": "alpaca",
                             "template": {"output": "{answer}"}}]},
}
GENERIC = st.dictionaries(st.sampled_from(["text", "prompt", "instruction", "input", "output", "label", "messages",
                                           "chosen", "rejected", "response", "task"]) | st.text(max_size=8),
                          json_value, max_size=6)
ANY_ROW = json_value  # a row need not even be an object

FORMATTERS = sorted(Engine().formatters.names())


@pytest.fixture(scope="module")
def setups(tiny_lm, tiny_encoder, tmp_path_factory):
    """formatter name -> (RunContext, tokenizer) with the formatter's default options."""
    from transformers import AutoTokenizer

    engine, out = Engine(), tmp_path_factory.mktemp("fuzz")
    tokenizers = {"causal_lm": AutoTokenizer.from_pretrained(tiny_lm),
                  "classification": AutoTokenizer.from_pretrained(tiny_encoder)}

    def setup(name: str):
        formatter = engine.formatters.get(name)
        able = [o for o in engine.objectives if formatter.task in o.tasks]
        objective = next((o for o in able if o.default), able[0]).name
        config = engine.config({"model": tiny_lm, "method": "full", "objective": objective,
                                "format": {"name": name, **OPTIONS.get(name, {})},
                                "output_dir": str(out),
                                "evaluators": [], "data": {"train": ["unused.jsonl"], "max_length": 24}})
        run = RunContext(config=config, output_dir=out, engine=engine, data_task=formatter.task)
        run.tokenizer = tokenizers.get(formatter.task, tokenizers["causal_lm"])
        return formatter, config.format.options, run

    return setup


@pytest.mark.parametrize("name", FORMATTERS)
def test_every_row_formats_or_is_reported_with_its_number(setups, name):
    formatter, options, run = setups(name)

    @settings(max_examples=60, derandomize=True, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(st.lists(ROWS.get(name, GENERIC) | GENERIC | ANY_ROW, min_size=1, max_size=6))
    def check(values):
        rows = [Row(v, Source("fuzz.jsonl", line=n)) for n, v in enumerate(values, 1)]
        if formatter.task == "classification":
            try:
                run.label_names = formatter.label_names([r.values for r in rows if isinstance(r.values, dict)],
                                                        options) or ["neg", "pos"]
            except DataError:
                return  # a typed, user-facing error about the whole data set
        one_by_one: tuple[list, list] = ([], [])
        for row in rows:
            problems: list[Problem] = []
            examples, _, dropped = format_rows([row], formatter, options, run.tokenizer, run, problems)
            one_by_one[0].extend(examples)
            one_by_one[1].extend(map(str, problems))
            outcomes = [bool(examples), bool(problems), bool(dropped)]  # dropped: too long, counted (truncation=drop)
            assert outcomes.count(True) == 1, f"row {row.values!r}: examples={examples} problems={problems}"
            if problems:
                assert problems[0].source == row.source and str(problems[0]).startswith(f"fuzz.jsonl:{row.source.line}: ")
            for example in examples:
                ids = [v for k, v in example.items() if k.endswith("input_ids")]
                assert ids and all(seq and all(isinstance(i, int) for i in seq) for seq in ids)
        # the pipeline formats a chunk of rows at once (format_batch): the same as one by one
        problems = []
        together, _, _ = format_rows(rows, formatter, options, run.tokenizer, run, problems)
        assert (together, [str(p) for p in problems]) == one_by_one
        # and stores them (token lists typed, the rest as JSON) exactly as they were
        stored = datastore._Batch(pa.ipc.read_record_batch(datastore.examples_batch(together).serialize(),
                                                           datastore._schema()))
        assert list(stored.examples()) == together and [stored.example(i) for i in range(len(together))] == together

    check()

