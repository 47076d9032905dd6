"""A new user's first hour (issue 20): the run says what it is doing, defaults that learn and
evaluate, data checks that predict training, run folders that travel."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import stat

import pytest
import yaml

from tests.conftest import write_jsonl
from tunery import Engine

PHASES = ["resolving the model", "reading the data", "tokenising the training data", "loading the weights",
          "expected memory: ~", "only 9 optimizer step(s) planned", "evaluating before training",
          "generating answers to 2 prompt(s) before training", "training: 9 optimizer step(s)", "step 1/9 done in",
          "saving the adapter", "evaluating after training", "generating answers to 2 prompt(s) after training"]


@pytest.fixture(scope="module")
def quick_run(tiny_lm, tmp_path_factory):
    """The quick form with no evaluation data and no settings beyond the step logging."""
    from click.testing import CliRunner

    from tunery.cli import cli

    folder = tmp_path_factory.mktemp("quick")
    rows = [{"instruction": f"What is {i} plus {i}?", "input": "", "output": f"It is {2 * i}."} for i in range(40)]
    data = write_jsonl(folder / "alpaca.jsonl", rows)
    old = os.umask(0o022)
    try:
        result = CliRunner().invoke(cli, ["train", "--model", str(tiny_lm), "--method", "lora", "--format", "alpaca",
                                          "--data", str(data), "--output-dir", str(folder / "run"),
                                          "--set", "training.logging_steps=4", "--set", "data.packing=false",
                                          "--set", "generation.max_new_tokens=4"], catch_exceptions=False)
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    return result.output, folder / "run"


def test_every_phase_says_what_it_is_doing_in_order(quick_run):
    output, _ = quick_run
    positions = [output.find(phase) for phase in PHASES]
    assert all(p >= 0 for p in positions), [ph for ph, p in zip(PHASES, positions) if p < 0]
    assert positions == sorted(positions)
    assert "learning rate 0.0002 (method lora's default" in output
    assert "raise training.epochs (now 1)" in output and "training.batch_size" in output


def test_quick_form_without_eval_data_has_before_after_and_samples(quick_run):
    output, run = quick_run
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["before"]["loss/loss"] and metrics["after"]["loss/loss"]
    samples = json.loads((run / "samples.json").read_text())
    assert len(samples["before"]) == len(samples["after"]) == 2
    assert "What is" in samples["after"][0]["prompt"]  # the prompt of a held-out example
    assert re.search(r"final loss \d+\.\d{1,4}(,|$| )", output)  # rounded, not 0.40508925914764404
    assert "eval data: 4 examples held out from the training data" in output
    assert set(metrics["memory"]) == {"expected_gib", "peak_rss_gib"} and metrics["memory"]["peak_rss_gib"] > 0
    assert yaml.safe_load((run / "config.yaml").read_text())["training"]["learning_rate"] == 2e-4
    assert not (run / "checkpoints").exists()  # no empty folder when no checkpoint is saved


def test_the_run_folder_is_portable(quick_run, tiny_lm):
    _, run = quick_run
    adapter = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(tiny_lm)  # the config's reference, not a cache folder
    for path in (run / "adapter").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    manifest = json.loads((run / "manifest.json").read_text())
    assert re.fullmatch(r"[0-9a-f]{64}", manifest["model_fingerprint"])
    card = yaml.safe_load((run / "adapter" / "README.md").read_text().split("---")[1])
    assert card["library_name"] == "peft"
    assert Engine().load(run).model is not None  # resolved again at load time, fingerprint matching


def test_a_full_model_card_does_not_claim_peft(tiny_lm, alpaca_file, tmp_path):
    result = Engine().train({"model": tiny_lm, "output_dir": str(tmp_path / "run"), "method": "full",
                             "format": "alpaca", "data": {"train": [str(alpaca_file)]}, "evaluators": [],
                             "training": {"max_steps": 1}})
    text = (result.model_dir / "README.md").read_text()
    assert yaml.safe_load(text.split("---")[1])["library_name"] == "transformers"
    assert "peft" not in text and 'AutoModelForCausalLM.from_pretrained("model")' in text
    assert result.metrics["train"]["steps"] == 1 and yaml.safe_load(
        (tmp_path / "run" / "config.yaml").read_text())["training"]["learning_rate"] == 2e-5


@pytest.mark.parametrize("method, rate", [("full", 2e-5), ("freeze", 1e-3), ("lora", 2e-4), ("ia3", 3e-3),
                                          ("prompt", 1e-2), ("prefix", 1e-2), ("ptuning", 1e-2)])
def test_methods_carry_their_default_learning_rate(method, rate):
    from tunery.run import new_context

    engine = Engine()
    raw = {"model": "m", "output_dir": "out", "method": method, "format": "alpaca", "data": {"train": ["x.json"]}}
    config = engine.config(raw)
    assert config.training.learning_rate is None
    assert new_context(engine, config).config.training.learning_rate == rate
    chosen = engine.config({**raw, "training": {"learning_rate": 0.5}})
    assert new_context(engine, chosen).config.training.learning_rate == 0.5


def test_track_shows_progress_in_a_log(caplog):
    from tunery import track

    class Log(io.StringIO):
        def isatty(self):
            return False

    with caplog.at_level(logging.INFO, logger="tunery"):
        assert list(track(range(3), 3, "tokenising", stream=Log(), every=0.0)) == [0, 1, 2]
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "tokenising: 3 to go" and "tokenising: 1/3, eta" in lines[1]
    assert lines[-1].startswith("tokenising: 3 done in")


def test_memory_estimate_counts_weights_and_optimizer(tiny_lm):
    from transformers import AutoModelForCausalLM

    from tunery.memory import estimate

    model = AutoModelForCausalLM.from_pretrained(tiny_lm)
    numel = sum(p.numel() for p in model.parameters())
    parts = estimate(model, batch_size=2, length=16)
    assert parts["weights"] >= 4 * numel and parts["optimizer"] == 12 * numel
    assert parts["activations"] > 0 and parts["total"] == sum(parts[k] for k in ("weights", "optimizer", "activations"))
    assert estimate(model, 2, 16, checkpointing=True)["activations"] < parts["activations"]


def test_smoothed_loss_follows_the_trend():
    from tunery.report import smooth

    values = [4.0, 1.0, 3.0, 0.5, 2.5, 0.3]
    smoothed = smooth(values, 0.6)
    assert smoothed[0] == values[0] and len(smoothed) == len(values)
    assert max(smoothed[1:]) < max(values[1:]) and smoothed[-1] < smoothed[0]


LONG_PROMPT = " ".join(["context"] * 60)


def test_preference_pairs_keep_their_responses_by_default(run_cli, tiny_lm, tmp_path):
    rows = [{"prompt": f"{LONG_PROMPT} question {i}?", "chosen": "Yes, gladly.", "rejected": "No."} for i in range(3)]
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    result = run_cli("data", "check", "--format", "preference", "--model", tiny_lm, "--max-length", "32", path)
    assert result.exit_code == 0, result.output
    assert "truncated to data.max_length: 3 example(s)" in result.output
    right = run_cli("data", "check", "--format", "preference", "--model", tiny_lm, "--max-length", "32",
                    "--truncation", "right", path)
    assert right.exit_code == 5 and "no trainable token" in right.output
    assert "set data.truncation=left" in right.output


def test_data_check_takes_the_runs_config(run_cli, tiny_lm, tmp_path):
    rows = [{"instruction": "Say hi.", "output": "Hi."}, {"instruction": LONG_PROMPT, "output": "Done."}]
    data = write_jsonl(tmp_path / "rows.jsonl", rows)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"model": str(tiny_lm), "output_dir": "out", "method": "lora", "format": "alpaca",
                                      "data": {"train": "rows.jsonl", "max_length": 32, "truncation": "error"}}))
    for args in (["data", "check", config], ["data", "check", "--config", config]):
        result = run_cli(*args)
        assert result.exit_code == 5, result.output
        assert f"{data}:2: too long" in result.output and "not checked" not in result.output
    result = run_cli("data", "check", config, "--set", "data.truncation=right")  # the run's keys, overridden
    assert result.exit_code == 5 and "cut off every trained token; set data.truncation=left" in result.output
    result = run_cli("data", "check", config, "--set", "data.truncation=left")
    assert result.exit_code == 0 and "truncated to data.max_length: 1 example(s)" in result.output
    plain = run_cli("data", "check", "--format", "alpaca", data)
    assert plain.exit_code == 0 and "not checked: token lengths" in plain.output


def test_wrong_format_says_what_the_rows_look_like(run_cli, tiny_lm, alpaca_file, tmp_path):
    result = run_cli("train", "--model", tiny_lm, "--method", "lora", "--format", "chat", "--data", alpaca_file,
                     "--output-dir", tmp_path / "run", "--max-steps", 1)
    assert result.exit_code == 5
    assert "none of the 40 rows" in result.output and "look like 'alpaca' data: set format: alpaca" in result.output
    assert "on_bad_row=skip" not in result.output and result.output.count(str(alpaca_file)) < 4


def test_too_long_rows_name_the_length_keys():
    from tunery.data import Problem, Source, problems_message

    text = problems_message([Problem(Source("a.json", 3, None), "too long", "600 tokens > data.max_length 512")],
                            "training")
    assert "raise data.max_length, or set data.truncation=right" in text.splitlines()[-1]


def test_a_long_phase_keeps_the_log_alive(caplog):
    import time

    from tunery import phase

    with caplog.at_level(logging.INFO, logger="tunery"):
        with phase("converting", every=0.05):
            time.sleep(0.3)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "converting" and any(line.startswith("still converting (0:00)") for line in lines[1:])
    count = len(caplog.records)
    time.sleep(0.2)
    assert len(caplog.records) == count  # quiet once the phase is over
