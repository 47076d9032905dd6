"""The data pipeline end to end: `tunery data check` / `preview`, bad rows in a run, truncation
counts, hub names, length grouping, per-task evaluation and the tokenised-data cache."""

from __future__ import annotations

import json

import pytest

from tests.conftest import write_jsonl

CHAT_ROWS = [{"messages": [{"role": "user", "content": f"What is {i} plus {i}?"},
                           {"role": "assistant", "content": f"It is {2 * i}."}]} for i in range(12)]


def test_data_check_lists_exactly_the_broken_lines(run_cli, tmp_path):
    rows = list(CHAT_ROWS[:6])
    rows[1] = '{"messages": [ broken'
    rows[3] = {"messages": [{"role": "user", "content": "no answer"}]}
    rows[4] = {"conversations": [{"from": "robot", "value": "beep"}]}
    path = write_jsonl(tmp_path / "chat.jsonl", rows)
    result = run_cli("data", "check", "--format", "chat", path)
    assert result.exit_code == 5
    bad = [line for line in result.output.splitlines() if line.startswith(str(path))]
    assert [line.split(":")[1] for line in bad] == ["2", "4", "5"]
    assert "invalid JSON: 1" in result.output and "no trainable token: 1" in result.output
    assert "unknown role: 1" in result.output
    good = write_jsonl(tmp_path / "good" / "ok.jsonl", CHAT_ROWS) if (tmp_path / "good").mkdir() is None else None
    clean = run_cli("data", "check", "--format", "chat", str(good.parent))
    assert clean.exit_code == 0, clean.output
    assert "12 example(s), 0 bad row(s)" in clean.output


def test_data_check_numbers_rows_of_a_json_list_and_globs(run_cli, tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([{"text": "fine"}, {"text": ""}, {"txt": "x"}]))
    (tmp_path / "b.json").write_text(json.dumps([{"text": "also fine"}]))
    result = run_cli("data", "check", "--format", "completion", str(tmp_path / "*.json"))
    assert result.exit_code == 5
    assert f"{tmp_path / 'a.json'} row 2: empty text" in result.output
    assert f"{tmp_path / 'a.json'} row 3: missing column" in result.output
    assert "4 row(s) read from 2 file(s): 2 example(s), 2 bad row(s)" in result.output


def test_data_check_reports_too_long_rows_with_a_limit(run_cli, tmp_path):
    rows = [{"text": "short"}, {"text": " ".join(["word"] * 200)}]
    path = write_jsonl(tmp_path / "t.jsonl", rows)
    result = run_cli("data", "check", "--format", "completion", "--set", "stride=4", "--max-length", "64",
                     "--truncation", "error", path)
    assert result.exit_code == 0  # completion splits long texts into windows: nothing is too long
    alpaca = write_jsonl(tmp_path / "a.jsonl", [{"instruction": " ".join(["word"] * 200), "output": "x"}])
    result = run_cli("data", "check", "--format", "alpaca", "--max-length", "64", "--truncation", "error", alpaca)
    assert result.exit_code == 5 and f"{alpaca}:1: too long" in result.output
    result = run_cli("data", "check", "--format", "alpaca", "--max-length", "64", alpaca)  # as training: cut, kept
    assert result.exit_code == 5 and "cut off every trained token; set data.truncation=left" in result.output


def test_data_preview_marks_the_trained_spans(run_cli, tmp_path, tiny_lm):
    path = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS[:3])
    result = run_cli("data", "preview", "--format", "chat", "--model", tiny_lm, "-n", "2", path)
    assert result.exit_code == 0, result.output
    assert "--- example 2" in result.output and "--- example 3" not in result.output
    assert "<|im_start|>user\nWhat is 0 plus 0?<|im_end|>\n<|im_start|>assistant\n⟦It is 0.<|im_end|>⟧" in result.output


def test_truncation_policies_are_counted(tmp_path):
    from tunery import Engine
    from tunery.datatools import check

    long = {"instruction": " ".join(["word"] * 40), "output": "The answer."}
    path = write_jsonl(tmp_path / "a.jsonl", [long, {"instruction": "Hi", "output": "Hello."}])
    engine = Engine()
    dropped = check(engine, "alpaca", [str(path)], max_length=32, truncation="drop", options={"template": "alpaca"})
    assert (dropped.dropped, len(dropped.examples), dropped.problems) == (1, 1, [])
    assert dropped.summary()["dropped_too_long"] == 1
    left = check(engine, "alpaca", [str(path)], max_length=32, truncation="left", options={"template": "alpaca"})
    assert left.truncated == 1 and len(left.examples[0]["input_ids"]) == 32
    right = check(engine, "alpaca", [str(path)], max_length=32, truncation="right", options={"template": "alpaca"})
    assert [p.reason for p in right.problems] == ["no trainable token"]  # the answer was cut off: said, not hidden


def test_hub_names_read_offline_or_fail_fast(tmp_path, monkeypatch):
    import datasets

    from tunery import DataError
    from tunery.data import load_rows

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(DataError, match="not in the local datasets cache"):
        load_rows(["nobody/not-cached-anywhere"])
    seen = []

    def cached(name, split):
        seen.append((name, split))
        return datasets.Dataset.from_list([{"text": "one"}, {"text": "two"}])

    monkeypatch.setattr(datasets, "load_dataset", cached)
    rows, files, problems = load_rows(["tiny/demo:validation"])
    assert seen == [("tiny/demo", "validation")] and files == ["tiny/demo:validation"] and not problems
    assert [(r.values["text"], str(r.source)) for r in rows] == [("one", "tiny/demo:validation row 1"),
                                                                  ("two", "tiny/demo:validation row 2")]


def test_group_by_length_uses_the_length_grouped_sampler(tmp_path, tiny_lm):
    from transformers import AutoModelForCausalLM
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from tunery import Engine, RunContext
    from tunery.loading import load_tokenizer
    from tunery.trainer import build_trainer
    from tunery.training import training_arguments

    engine = Engine()
    config = engine.config({"model": tiny_lm, "output_dir": str(tmp_path / "run"), "method": "full",
                            "format": "completion", "data": {"train": ["x.txt"], "group_by_length": True}})
    run = RunContext.create(engine, config, tokenizer=load_tokenizer(engine.resolve_model(tiny_lm)))
    examples = [{"input_ids": [5] * n, "labels": [5] * n} for n in (3, 9, 4, 8)]
    trainer = build_trainer(run, AutoModelForCausalLM.from_pretrained(tiny_lm), examples, [],
                            training_arguments(run), evaluate=None)
    assert isinstance(trainer._get_train_sampler(), LengthGroupedSampler)


def test_multitask_run_skips_bad_rows_reports_each_task_and_caches(run_cli, tmp_path, tiny_lm):
    qa = [{"instruction": f"Add {i} and {i}.", "output": f"It is {2 * i}."} for i in range(10)]
    qa[2] = '{"instruction": broken'
    write_jsonl(tmp_path / "qa.jsonl", qa)
    write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS[:10])
    config = {
        "model": tiny_lm, "output_dir": str(tmp_path / "run"), "method": "full",
        "format": {"name": "multitask", "mixing": "interleave", "tasks": [
            {"name": "qa", "files": ["qa.jsonl"], "format": {"name": "alpaca", "template": "alpaca"}},
            {"name": "talk", "files": ["chat.jsonl"], "format": "chat"}]},
        "data": {"train": [str(tmp_path / "qa.jsonl"), str(tmp_path / "chat.jsonl")], "val_split": 0.3,
                 "on_bad_row": "skip", "group_by_length": True},
        "training": {"max_steps": 2, "batch_size": 4}, "evaluators": ["loss"],
    }
    (tmp_path / "run.yaml").write_text(json.dumps(config))
    result = run_cli("train", tmp_path / "run.yaml")
    assert result.exit_code == 0, result.output
    assert "train data: 19 rows -> 13 examples; 1 bad rows skipped (invalid JSON: 1" in result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {"loss/qa/loss", "loss/talk/loss", "loss/loss"} <= set(metrics["after"])
    assert metrics["data"]["train"]["bad_rows_by_reason"] == {"invalid JSON": 1} and not metrics["data"]["cached"]
    bad = json.loads((tmp_path / "run" / "bad_rows.json").read_text())
    assert bad["by_reason"] == {"invalid JSON": 1} and bad["examples"]["invalid JSON"][0]["line"] == 3

    again = run_cli("train", tmp_path / "run.yaml", "--overwrite")
    assert again.exit_code == 0, again.output
    second = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert second["data"]["cached"] and "[cached]" in again.output
    assert second["before"] == metrics["before"]  # the same examples, read back from the cache


def test_cache_key_follows_files_tokenizer_and_options(tmp_path):
    from tunery import Engine
    from tunery.datatools import fingerprint, formatting_context
    from tunery.testing.tiny import build_tokenizer

    engine, tok = Engine(), build_tokenizer(None)
    path = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS[:3])

    def key(options=None, tokenizer=tok):
        return fingerprint(formatting_context(engine, "chat", options, tokenizer, specs=[str(path)]))

    first = key()
    assert key() == first
    assert key({"train_on": "all"}) != first
    other = build_tokenizer(None)
    other.chat_template = "{{ messages }}"
    assert key(tokenizer=other) != first
    write_jsonl(path, CHAT_ROWS[1:4])
    assert key() != first


def test_classification_run_saves_the_label_map(run_cli, tmp_path, tiny_encoder):
    import csv

    path = tmp_path / "pairs.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["premise", "hypothesis", "label"])
        for i in range(12):
            writer.writerow([f"the cat sleeps {i}", "an animal rests" if i % 2 else "the cat runs", 1 if i % 2 else 0])
    result = run_cli("train", "--model", tiny_encoder, "--method", "full", "--format", "classification",
                     "--data", path, "--output-dir", tmp_path / "run", "--max-steps", "1",
                     "--set", "format.text=premise", "--set", "format.text_pair=hypothesis")
    assert result.exit_code == 0, result.output
    model_dir = tmp_path / "run" / "model"
    assert json.loads((model_dir / "labels.json").read_text()) == ["0", "1"]
    assert json.loads((model_dir / "config.json").read_text())["id2label"] == {"0": "0", "1": "1"}
