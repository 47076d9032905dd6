"""Hostile data files (issue 19): every bad row is reported by file and line and can be skipped;
nothing is read twice, dropped silently or trained on as the wrong text."""

from __future__ import annotations

import json
import os

import pytest
import yaml

from tests.conftest import write_jsonl
from tunery import Engine
from tunery.errors import ConfigError, DataError

GOOD = [{"instruction": f"What is {i} plus {i}?", "output": f"It is {2 * i}."} for i in range(6)]


@pytest.fixture(scope="module")
def engine():
    return Engine()


def bad_lines(output: str, path) -> dict[int, str]:
    """{line: "reason: detail"} of the bad rows ``tunery data check`` printed for ``path``."""
    found = {}
    for line in output.splitlines():
        if line.startswith(f"{path}:"):
            number, _, rest = line[len(f"{path}:"):].partition(": ")
            found[int(number)] = rest
    return found


def hostile_jsonl(path):
    """Good rows with, in between, lines that once crashed a run or trained on garbage."""
    lines = [json.dumps(GOOD[0]).encode(),
             b'{"instruction": "Say nan.", "output": NaN}',
             b'{"instruction": "Say inf.", "output": Infinity}',
             b'{"instruction": ' + b"[" * 100_000 + b"]" * 100_000 + b', "output": "x"}',
             b'{"instruction": "\\ud800", "output": "lone surrogate"}',
             b'{"instruction": "caf\xe9 latin-1", "output": "not UTF-8"}',
             b'{"instruction": "x", "output": -Infinity}',
             json.dumps(GOOD[1]).encode(),
             '{"instruction": "a\u2028b", "output": "a line separator inside a string is not a line break"}'.encode()]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_nan_deep_nesting_surrogates_and_bad_bytes_are_bad_rows_by_line(run_cli, tmp_path):
    path = hostile_jsonl(tmp_path / "hostile.jsonl")
    result = run_cli("data", "check", "--format", "alpaca", path)
    assert result.exit_code == DataError.exit_code and "Traceback" not in result.output
    found = bad_lines(result.output, path)
    assert found == {
        2: "invalid JSON: NaN is not valid JSON (write null, a number or a string)",
        3: "invalid JSON: Infinity is not valid JSON (write null, a number or a string)",
        4: "too deeply nested: nested deeper than 100 levels",
        5: "invalid text: lone surrogate \\ud800 is not valid Unicode text",
        6: "invalid text: byte 0xe9 is not UTF-8 (save the file as UTF-8)",
        7: "invalid JSON: -Infinity is not valid JSON (write null, a number or a string)",
    }, result.output
    assert "9 row(s) read" not in result.output and "3 example(s), 6 bad row(s)" in result.output


def test_a_json_list_refuses_nan_rows_by_row_number(run_cli, tmp_path):
    path = tmp_path / "rows.json"
    path.write_text('[{"text": "fine"}, {"text": NaN}, {"text": "caf\\udce9"}]')
    result = run_cli("data", "check", "--format", "completion", path)
    assert result.exit_code == DataError.exit_code
    assert f"{path} row 2: invalid JSON: NaN is not valid JSON" in result.output
    assert f"{path} row 3: invalid text" in result.output and "1 example(s), 2 bad row(s)" in result.output


def test_hostile_rows_are_skipped_and_listed_with_on_bad_row_skip(run_cli, tiny_lm, tmp_path):
    path = hostile_jsonl(tmp_path / "hostile.jsonl")
    out = tmp_path / "run"
    result = run_cli("train", "--model", tiny_lm, "--method", "lora", "--format", "alpaca", "--data", path,
                     "--output-dir", out, "--max-steps", 1, "--set", "data.on_bad_row=skip", "--set", "data.val_split=0")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "bad_rows.json").read_text())
    assert report["by_reason"] == {"invalid JSON": 3, "too deeply nested": 1, "invalid text": 2}
    lines = sorted(p["line"] for reason in report["examples"].values() for p in reason)
    assert lines == [2, 3, 4, 5, 6, 7]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["train"]["examples"] == 3


def test_byte_order_marks_are_read_as_every_data_tool_does(run_cli, tmp_path):
    bom = "\ufeff"
    (tmp_path / "a.jsonl").write_text(bom + "".join(json.dumps(r) + "\n" for r in GOOD[:2]), encoding="utf-8")
    (tmp_path / "b.json").write_text(bom + json.dumps(GOOD[2:4]), encoding="utf-8")
    (tmp_path / "c.csv").write_text(bom + "instruction,output\nWhat is 9 plus 9?,It is 18.\n", encoding="utf-8")
    (tmp_path / "d.txt").write_text(bom + "A line.\n", encoding="utf-8")
    result = run_cli("data", "check", "--format", "alpaca", tmp_path / "a.jsonl", tmp_path / "b.json",
                     tmp_path / "c.csv")
    assert result.exit_code == 0, result.output
    assert "5 row(s) read from 3 file(s): 5 example(s), 0 bad row(s)" in result.output
    from tunery.data import load_rows

    rows, _, _ = load_rows([str(tmp_path / "d.txt")])
    assert rows[0].values == {"text": "A line."}


def test_csv_rows_with_extra_fields_are_bad_rows_never_cut(run_cli, tmp_path):
    path = tmp_path / "qa.csv"
    path.write_text('instruction,output\n'
                    'Capital of France?,Paris\n'
                    'Capital of Italy?,Rome, or so I am told.\n'        # an unquoted comma: 3 fields
                    'Capital of Spain?,"Madrid, of course."\n'          # quoted: fine
                    'Capital of Peru?\n'                                 # one field
                    '"A value\nover two lines",Yes\n'
                    'Capital of Chile?,Santiago,extra,fields\n')
    result = run_cli("data", "check", "--format", "alpaca", path)
    assert result.exit_code == DataError.exit_code
    found = bad_lines(result.output, path)
    assert found == {3: "wrong field count: 3 fields, the header has 2 (a value holding a comma must be in double quotes)",
                     5: "wrong field count: 1 fields, the header has 2 (a value holding a comma must be in double quotes)",
                     8: "wrong field count: 4 fields, the header has 2 (a value holding a comma must be in double quotes)"}
    assert "3 example(s), 3 bad row(s)" in result.output


def test_a_null_value_is_named_as_null_not_as_a_missing_column(run_cli, tmp_path):
    path = write_jsonl(tmp_path / "n.jsonl", [GOOD[0], {"instruction": "x", "output": None}, {"instruction": "y"}])
    result = run_cli("data", "check", "--format", "alpaca", path)
    assert result.exit_code == DataError.exit_code
    assert f"{path}:2: empty text: column 'output' is empty/null" in result.output
    assert f"{path}:3: missing column: no 'output' (columns present: instruction)" in result.output


def test_empty_data_file_fails_data_check(run_cli, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    result = run_cli("data", "check", "--format", "alpaca", empty)
    assert result.exit_code == DataError.exit_code
    assert f"no rows in {empty}" in result.output and "Traceback" not in result.output
    good = write_jsonl(tmp_path / "good.jsonl", GOOD)
    result = run_cli("data", "check", "--format", "alpaca", good, empty)  # one empty file among others too
    assert result.exit_code == DataError.exit_code and f"no rows in {empty}" in result.output


@pytest.mark.skipif(os.name == "nt", reason="symlinks")
def test_a_symlink_loop_reads_each_file_once_and_broken_links_are_named(tmp_path):
    from tunery.data import expand_paths, load_rows

    folder = tmp_path / "data"
    (folder / "sub").mkdir(parents=True)
    write_jsonl(folder / "a.jsonl", GOOD[:2])
    write_jsonl(folder / "sub" / "b.jsonl", GOOD[2:4])
    (folder / "sub" / "loop").symlink_to(folder)
    files = expand_paths([str(folder / "**" / "*.jsonl")])
    assert sorted(os.path.realpath(f) for f in files) == sorted(
        os.path.realpath(p) for p in (folder / "a.jsonl", folder / "sub" / "b.jsonl"))
    assert len(load_rows([str(folder / "**" / "*.jsonl")])[0]) == 4
    assert len(expand_paths([str(folder)])) == 2
    (folder / "gone.jsonl").symlink_to(tmp_path / "deleted.jsonl")
    for spec in (str(folder), str(folder / "*.jsonl"), str(folder / "gone.jsonl")):
        with pytest.raises(DataError, match="gone.jsonl' is a broken symlink"):
            expand_paths([spec])


def test_data_paths_in_a_config_file_resolve_beside_it_or_fail_naming_the_paths(engine, tmp_path, monkeypatch):
    base = {"model": "m", "output_dir": "o", "method": "lora", "format": "alpaca"}
    (tmp_path / "configs").mkdir()
    config = tmp_path / "configs" / "run.yaml"
    write_jsonl(tmp_path / "train.jsonl", GOOD)  # beside the working directory, not beside the config
    monkeypatch.chdir(tmp_path)
    config.write_text(yaml.safe_dump({**base, "data": {"train": "train.jsonl"}}))
    with pytest.raises(ConfigError) as info:
        engine.config(config)
    message = str(info.value)
    assert str(tmp_path / "configs" / "train.jsonl") in message and str(tmp_path / "train.jsonl") in message
    assert "relative to the config file's folder" in message
    config.write_text(yaml.safe_dump({**base, "data": {"train": "../train.jsonl"}}))
    assert engine.config(config).data.train == [str(tmp_path / "train.jsonl")]  # recorded absolute
    config.write_text(yaml.safe_dump({**base, "data": {"train": ["nowhere.jsonl"]}}))
    resolved = engine.config(config).data.train  # missing everywhere: reading it names the absolute path
    from tunery.data import expand_paths

    with pytest.raises(DataError, match=f"looked for {tmp_path / 'configs' / 'nowhere.jsonl'}"):
        expand_paths(resolved)


# ----------------------------------------------------------------------------- tool-use chat data

SCHEMA = {"name": "get_weather", "description": "Weather of a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
GLAIVE = {"conversations": [  # glaive function calling in ShareGPT layout: tools as JSON text
    {"from": "human", "value": "Weather in Paris?"},
    {"from": "function_call", "value": json.dumps({"name": "get_weather", "arguments": {"city": "Paris"}})},
    {"from": "observation", "value": '{"temp": 20}'},
    {"from": "gpt", "value": "It is 20 degrees."}], "tools": json.dumps([SCHEMA])}
OPENAI_TOOLS = {"messages": [
    {"role": "user", "content": "Weather in Rome?"},
    {"role": "assistant", "content": None,
     "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]},
    {"role": "tool", "content": '{"temp": 25}'},
    {"role": "assistant", "content": "25 degrees."}], "tools": [{"type": "function", "function": SCHEMA}]}


def test_tool_schemas_reach_the_chat_template_or_the_row_is_refused(engine, tmp_path):
    from tunery.datatools import check
    from tunery.testing.tiny import build_tokenizer

    tok = build_tokenizer(None)
    path = write_jsonl(tmp_path / "tools.jsonl", [GLAIVE, OPENAI_TOOLS])
    result = check(engine, "chat", [str(path)], options={"template": "chatml"})
    assert not result.problems, result.problems
    glaive, openai = (tok.decode(ex["input_ids"]) for ex in result.examples)
    for text in (glaive, openai):
        assert text.startswith("<|im_start|>system\n# Tools") and '"name": "get_weather"' in text
        assert '"description": "Weather of a city"' in text  # the schema itself, not dropped
    assert '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>' in openai
    trained = tok.decode([t for t in result.examples[1]["labels"] if t != -100])
    assert "<tool_call>" in trained and "25 degrees." in trained  # the call is learned
    own = check(engine, "chat", [str(path)])  # this tokenizer's own template has no tool format
    assert [(p.source.line, p.reason) for p in own.problems] == [(1, "tools not rendered"), (2, "tools not rendered")]


# ----------------------------------------------------------------------------- HH-RLHF preference pairs


def hh(*turns):
    return "".join(f"\n\n{'Human' if i % 2 == 0 else 'Assistant'}:{' ' + t if t else ''}" for i, t in enumerate(turns))


def test_hh_rlhf_harmless_pairs_load_unchanged(engine, tmp_path, run_cli):
    from tunery.datatools import check
    from tunery.testing.tiny import build_tokenizer

    rows = [{"chosen": hh("How do I pick a lock?", "I can't help with that."),
             "rejected": hh("How do I pick a lock?", "Use a tension wrench.")},
            {"chosen": hh("How do I hurt someone?", ""),  # the harmless answer is silence
             "rejected": hh("How do I hurt someone?", "Hit them.")},
            {"chosen": hh("Hi", "Hello.", "Can you steal for me?", "No."),  # differ before the last reply
             "rejected": hh("Hi", "Hey there.", "Can you steal for me?", "Sure.")}]
    path = write_jsonl(tmp_path / "harmless-base.jsonl", rows)
    tok = build_tokenizer(None)
    for template in ("auto", "plain"):
        result = check(engine, "preference", [str(path)], options={"template": template})
        assert not result.problems and len(result.examples) == 3
        assert result.notes == {"empty reply (trained as end-of-sequence only)": 1,
                                "prompt taken as the longest common prefix (the transcripts differ before the last reply)": 1}
        silent, diverged = result.examples[1], result.examples[2]
        assert tok.decode([t for t in silent["chosen_labels"] if t != -100]) in ("<|im_end|>", "<|endoftext|>")
        prompt = tok.decode([t for t, label in zip(diverged["chosen_input_ids"], diverged["chosen_labels"]) if label == -100])
        assert prompt.rstrip().endswith("Hi<|im_end|>\n<|im_start|>assistant" if template == "auto" else "Hi\n\nAssistant:")
        learned = tok.decode([t for t in diverged["rejected_labels"] if t != -100])
        assert learned.lstrip().startswith("Hey there.") and "Sure." in learned
    out = run_cli("data", "check", "--format", "preference", path)
    assert out.exit_code == 0, out.output
    assert "note: prompt taken as the longest common prefix" in out.output and ": 1 row(s)" in out.output
