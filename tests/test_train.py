"""End to end: the quick-form CLI and the Engine API train tiny models and write a complete run folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.conftest import write_jsonl
from tests.test_plugins import make_distribution
from tunery import Engine, hookimpl
from tunery.errors import DataError


def logits(model, tokenizer, text="What is 3 plus 3?"):
    import torch

    enc = tokenizer(text, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        return model(**enc).logits


def test_quick_form_lora_alpaca_writes_a_reloadable_run(run_cli, tiny_lm, alpaca_file, tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", "--model", tiny_lm, "--method", "lora", "--format", "alpaca", "--data", alpaca_file,
                     "--output-dir", out, "--max-steps", 12, "--set", "data.val_split=0.2",
                     "--set", "training.learning_rate=0.01", "--set", "method.r=4")
    assert result.exit_code == 0, result.output
    for name in ("adapter/adapter_model.safetensors", "adapter/tokenizer.json", "metrics.json", "train_log.jsonl",
                 "config.yaml", "manifest.json"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["after"]["loss/loss"] < metrics["before"]["loss/loss"]  # it learned
    assert metrics["train"]["steps"] == 12 and metrics["data"]["train"]["examples"] == 32
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == list(range(1, 13))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["plugins"]["method"] == {"name": "lora", "plugin": "lora", "distribution": "tunery",
                                             "version": manifest["tunery"]}
    assert manifest["plugins"]["format"]["plugin"] == "alpaca"
    assert manifest["plugins"]["quantizer"]["name"] == "none"
    assert [e["name"] for e in manifest["plugins"]["evaluators"]] == ["loss"]
    assert manifest["data"]["train"][0]["sha256"] and manifest["seed"] == 0
    assert {"torch", "transformers", "peft", "python"} <= set(manifest)
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert written["method"]["r"] == 4 and written["training"]["max_steps"] == 12


def test_adapter_reloads_with_peft_to_identical_logits(tiny_lm, alpaca_file, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = Engine().train({
        "model": tiny_lm, "output_dir": str(tmp_path / "run"), "method": {"name": "lora", "r": 4},
        "format": "alpaca", "data": {"train": [str(alpaca_file)]}, "training": {"max_steps": 5, "learning_rate": 0.01},
    })
    tokenizer = AutoTokenizer.from_pretrained(result.model_dir)
    trained = logits(result.model, tokenizer)
    base = AutoModelForCausalLM.from_pretrained(tiny_lm)
    untouched = logits(base, tokenizer)
    reloaded = logits(PeftModel.from_pretrained(base, result.model_dir), tokenizer)
    assert torch.equal(trained, reloaded)
    assert not torch.allclose(trained, untouched)  # the adapter changes the model


def test_full_fine_tuning_on_completion_text(run_cli, tiny_lm, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    data = tmp_path / "notes.txt"
    data.write_text("\n".join(f"the cat sat on mat number {i} and slept." for i in range(30)))
    out = tmp_path / "full"
    result = run_cli("train", "--model", tiny_lm, "--method", "full", "--format", "completion", "--data", data,
                     "--output-dir", out, "--max-steps", 10, "--set", "data.val_split=0.2",
                     "--set", "training.learning_rate=3e-3")
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["after"]["loss/perplexity"] < metrics["before"]["loss/perplexity"]
    model = AutoModelForCausalLM.from_pretrained(out / "model")  # a standalone model
    base = AutoModelForCausalLM.from_pretrained(tiny_lm)
    tokenizer = AutoTokenizer.from_pretrained(out / "model")
    assert not torch.allclose(logits(model, tokenizer), logits(base, tokenizer))


@pytest.mark.parametrize("method", ["lora", "full"])
def test_classification_on_an_encoder_keeps_label_names(run_cli, tiny_encoder, classification_file, tmp_path, method):
    out = tmp_path / method
    result = run_cli("train", "--model", tiny_encoder, "--method", method, "--format", "classification",
                     "--data", classification_file, "--output-dir", out, "--max-steps", 8,
                     "--set", "data.val_split=0.25", "--set", "training.learning_rate=0.005")
    assert result.exit_code == 0, result.output
    folder = out / ("adapter" if method == "lora" else "model")
    assert json.loads((folder / "labels.json").read_text()) == ["neg", "pos"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["labels"] == ["neg", "pos"]
    assert metrics["after"]["loss/loss"] < metrics["before"]["loss/loss"]
    loaded = Engine().load(str(out))
    assert loaded.task == "classification" and loaded.model.config.id2label == {0: "neg", 1: "pos"}


def test_bad_rows_are_reported_by_line_and_nothing_is_dropped_silently(run_cli, tiny_lm, tmp_path):
    rows = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(6)]
    rows[2] = '{"instruction": "broken json"'
    rows[4] = {"instruction": "no output here"}
    data = write_jsonl(tmp_path / "bad.jsonl", rows)
    result = run_cli("train", "--model", tiny_lm, "--method", "lora", "--format", "alpaca", "--data", data,
                     "--output-dir", tmp_path / "r", "--max-steps", 1)
    assert result.exit_code == DataError.exit_code
    assert f"{data}:3: invalid JSON" in result.output
    assert f"{data}:5: missing column: no 'output'" in result.output
    assert "Traceback" not in result.output
    skipped = run_cli("train", "--model", tiny_lm, "--method", "lora", "--format", "alpaca", "--data", data,
                      "--output-dir", tmp_path / "s", "--max-steps", 1, "--set", "data.on_bad_row=skip")
    assert skipped.exit_code == 0, skipped.output
    report = json.loads((tmp_path / "s" / "bad_rows.json").read_text())
    assert report["total"] == 2 and report["by_reason"] == {"invalid JSON": 1, "missing column": 1}
    metrics = json.loads((tmp_path / "s" / "metrics.json").read_text())
    assert metrics["data"]["train"]["rows"] == 5 and metrics["data"]["train"]["examples"] == 3
    assert metrics["data"]["eval"]["held_out_from_train"] == 1  # 4 examples: 1 held out for the loss evaluator


def test_an_existing_run_is_not_overwritten(run_cli, tiny_lm, alpaca_file, tmp_path):
    args = ["train", "--model", tiny_lm, "--method", "lora", "--format", "alpaca", "--data", alpaca_file,
            "--output-dir", tmp_path / "r", "--max-steps", 1]
    assert run_cli(*args).exit_code == 0
    again = run_cli(*args)
    assert again.exit_code == 2 and "already holds a run" in again.output and "--overwrite" in again.output
    assert run_cli(*args, "--overwrite").exit_code == 0


def test_errors_are_one_line_without_traceback(run_cli, tiny_lm, alpaca_file, tmp_path):
    result = run_cli("train", "--model", tiny_lm, "--method", "lorra", "--format", "alpaca", "--data", alpaca_file,
                     "--output-dir", tmp_path / "r")
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].startswith("error: config key 'method': no method named 'lorra'")
    missing = run_cli("train", "--model", tmp_path / "nowhere", "--method", "lora", "--format", "alpaca",
                      "--data", alpaca_file, "--output-dir", tmp_path / "r2")
    assert missing.exit_code != 0 and "Traceback" not in missing.output and "nowhere" in missing.output


class Recorder:
    """A platform observing a run through the lifecycle hooks."""

    def __init__(self):
        self.events = []

    @hookimpl
    def tunery_run_start(self, run):
        self.events.append(("start", run.config.method.name))

    @hookimpl
    def tunery_log(self, run, record):
        if "loss" in record:
            self.events.append(("log", record["step"]))

    @hookimpl
    def tunery_evaluation(self, run, phase, metrics):
        self.events.append(("eval", phase, round(metrics["loss/loss"], 6)))

    @hookimpl
    def tunery_checkpoint_saved(self, run, path, step):
        self.events.append(("saved", os.path.basename(path)))

    @hookimpl
    def tunery_run_end(self, run, result):
        self.events.append(("end", result.metrics["train"]["steps"]))

    @hookimpl
    def tunery_run_failed(self, run, error):
        self.events.append(("failed", type(error).__name__))


def test_lifecycle_hooks_see_every_phase(tiny_lm, alpaca_file, tmp_path):
    recorder = Recorder()
    engine = Engine(plugins=[recorder])
    engine.train({"model": tiny_lm, "output_dir": str(tmp_path / "a"), "method": "lora", "format": "alpaca",
                  "data": {"train": [str(alpaca_file)], "val_split": 0.1}, "training": {"max_steps": 3}})
    kinds = [e[0] for e in recorder.events]
    assert kinds == ["start", "eval", "log", "log", "log", "saved", "eval", "end"]
    assert recorder.events[-1] == ("end", 3) and recorder.events[5] == ("saved", "adapter")

    recorder.events.clear()
    broken = tmp_path / "broken.jsonl"
    broken.write_text("not json\n")
    with pytest.raises(DataError):
        engine.train({"model": tiny_lm, "output_dir": str(tmp_path / "b"), "method": "lora", "format": "alpaca",
                      "data": {"train": [str(broken)]}})
    assert recorder.events == [("start", "lora"), ("failed", "DataError")]


def test_a_broken_plugin_installed_beside_does_not_stop_training(tiny_lm, alpaca_file, tmp_path):
    fake = tmp_path / "site"
    fake.mkdir()
    make_distribution(fake, "tunery-broken", {"broken_mod": "raise ImportError('half-installed')\n"},
                      {"broken": "broken_mod"})
    env = {**os.environ, "PYTHONPATH": str(fake)}
    cmd = [sys.executable, "-m", "tunery.cli", "train", "--model", tiny_lm, "--method", "lora", "--format", "alpaca",
           "--data", str(alpaca_file), "--output-dir", str(tmp_path / "run"), "--max-steps", "2"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
    plugins = subprocess.run([sys.executable, "-m", "tunery.cli", "plugins"], capture_output=True, text=True, env=env)
    assert "failed: ImportError: half-installed" in plugins.stdout
