"""The run folder: --overwrite removes only what a run wrote, failed runs record why and never
block the corrected re-run, and a failing plugin member is named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import write_jsonl
from tunery import Engine, hookimpl
from tunery.errors import ConfigError, DataError, ModelSourceError, PluginError
from tunery_lora import Lora

RECORD = "tunery-run.json"


def read_record(folder: Path) -> dict:
    return json.loads((folder / RECORD).read_text())


def quick(model, data, out, *extra, method="lora"):
    return ["train", "--model", model, "--method", method, "--format", "alpaca", "--data", data,
            "--output-dir", out, "--max-steps", 1, "--set", "evaluators=[]", *extra]


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_overwrite_removes_only_what_the_run_wrote(tiny_lm, alpaca_file, tmp_path, run_cli):
    proj = tmp_path / "proj"
    shutil.copytree(tiny_lm, proj / "model")  # the user's base model, inside the output folder
    base = tree(proj / "model")
    first = run_cli(*quick(proj / "model", alpaca_file, proj))
    assert first.exit_code == 0, first.output
    record = read_record(proj)
    assert record["status"] == "finished" and "adapter" in record["files"] and "metrics.json" in record["files"]
    assert not any(f.startswith("model") for f in record["files"])
    (proj / "evaluations").mkdir(exist_ok=True)
    (proj / "evaluations" / "mine.txt").write_text("my notes")
    again = run_cli(*quick(proj / "model", alpaca_file, proj, "--overwrite"))
    assert again.exit_code == 0, again.output
    assert tree(proj / "model") == base
    assert (proj / "evaluations" / "mine.txt").read_text() == "my notes"
    assert (proj / "adapter" / "adapter_model.safetensors").is_file()


def test_a_run_refuses_to_write_over_files_it_did_not_write(tiny_lm, alpaca_file, tmp_path, run_cli):
    proj = tmp_path / "proj"
    shutil.copytree(tiny_lm, proj / "model")
    base = tree(proj / "model")
    for extra in ((), ("--overwrite",)):  # full fine-tuning saves to model/: the user's model is in the way
        result = run_cli(*quick(proj / "model", alpaca_file, proj, *extra, method="full"))
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert f"output_dir '{proj}' holds model, which no tunery run recorded writing" in result.output
        assert "move them away" in result.output
    assert tree(proj / "model") == base


def test_overwrite_refuses_to_delete_the_model_it_trains(tiny_lm, alpaca_file, tmp_path, run_cli):
    proj = tmp_path / "proj"
    assert run_cli(*quick(tiny_lm, alpaca_file, proj, method="full")).exit_code == 0
    trained = tree(proj / "model")
    result = run_cli(*quick(proj / "model", alpaca_file, proj, "--overwrite", method="full"))
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"'{(proj / 'model').resolve()}' is read by this run but lies in" in result.output
    assert "--overwrite would delete" in result.output
    assert tree(proj / "model") == trained


@pytest.mark.parametrize("case", ["bad data", "late config error"])
def test_a_failed_run_records_why_and_does_not_block_the_rerun(tiny_lm, alpaca_file, tmp_path, run_cli, case):
    out = tmp_path / "run"
    if case == "bad data":
        bad = write_jsonl(tmp_path / "bad.jsonl", [{"instruction": "no output"}] * 3)
        failed, code, error = run_cli(*quick(tiny_lm, bad, out)), DataError.exit_code, f"{bad}:1: missing column"
    else:  # found only at the first evaluation during training
        failed = run_cli(*quick(tiny_lm, alpaca_file, out, "--set", "evaluators=[loss]", "--set", "training.eval_steps=1",
                                "--set", "early_stopping.metric=loss/nope"))
        code, error = ConfigError.exit_code, "config key 'early_stopping.metric': the evaluation has no metric 'loss/nope'"
    assert failed.exit_code == code, failed.output
    record = read_record(out)
    assert record["status"] == "failed" and error in record["error"]
    fixed = run_cli(*quick(tiny_lm, alpaca_file, out))  # no --overwrite needed: nothing was produced
    assert fixed.exit_code == 0, fixed.output
    assert read_record(out)["status"] == "finished" and not (out / "bad_rows.json").exists()


def test_a_run_that_left_a_result_still_needs_overwrite(tiny_lm, alpaca_file, tmp_path, run_cli):
    out = tmp_path / "run"
    assert run_cli(*quick(tiny_lm, alpaca_file, out)).exit_code == 0
    again = run_cli(*quick(tiny_lm, alpaca_file, out))
    assert again.exit_code == 2 and "already holds a run (adapter, metrics.json)" in again.output
    assert "--overwrite" in again.output


class Exploding(Lora):
    name = "exploding"

    def prepare(self, model, options, run):
        raise RuntimeError("boom")


class ExplodingPlugin:
    @hookimpl
    def tunery_register_methods(self, registry):
        registry.add(Exploding())


def test_a_method_failing_in_prepare_is_named_and_recorded(tiny_lm, alpaca_file, tmp_path):
    out = tmp_path / "run"
    config = {"model": tiny_lm, "method": "exploding", "format": "alpaca", "output_dir": str(out),
              "evaluators": [], "data": {"train": [str(alpaca_file)]}, "training": {"max_steps": 1}}
    engine = Engine(plugins=[ExplodingPlugin()])
    with pytest.raises(PluginError) as info:
        engine.train(config)
    plugin = engine.host.registries["methods"].entry("exploding").plugin
    assert str(info.value) == f"method 'exploding' (plugin '{plugin}') failed in prepare: RuntimeError: boom"
    assert read_record(out)["error"] == f"PluginError: {info.value}"
    assert Engine().train({**config, "method": "lora"}).metrics["train"]["steps"] == 1


def test_a_model_that_does_not_load_leaves_a_folder_that_does_not_block(tiny_lm, alpaca_file, tmp_path):
    out = tmp_path / "run"
    config = {"model": str(tmp_path / "no-such-model"), "method": "lora", "format": "alpaca",
              "output_dir": str(out), "evaluators": [], "data": {"train": [str(alpaca_file)]},
              "training": {"max_steps": 1}}
    with pytest.raises(ModelSourceError):
        Engine().train(config)
    assert read_record(out)["status"] == "failed"
    assert Engine().train({**config, "model": tiny_lm}).metrics["train"]["steps"] == 1


def test_a_run_in_progress_is_never_replaced(tiny_lm, alpaca_file, tmp_path):
    import socket
    import subprocess

    out = tmp_path / "run"
    out.mkdir()
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        (out / RECORD).write_text(json.dumps({"status": "running", "pid": sleeper.pid, "host": socket.gethostname(),
                                              "files": ["config.yaml", RECORD]}))
        (out / "config.yaml").write_text("model: x\n")
        config = {"model": tiny_lm, "method": "lora", "format": "alpaca", "output_dir": str(out),
                  "data": {"train": [str(alpaca_file)]}}
        with pytest.raises(ConfigError, match=f"is in use by a run in progress \\(process {sleeper.pid}\\)"):
            Engine().train(config)
        assert (out / "config.yaml").read_text() == "model: x\n"
    finally:
        sleeper.kill()
        sleeper.wait()


def test_an_edited_record_cannot_delete_outside_the_folder(tiny_lm, alpaca_file, tmp_path):
    from tunery.rundir import RunFolder

    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("model: x\n")
    (out / "link").symlink_to(outside)
    (out / RECORD).write_text(json.dumps({"status": "failed", "files": ["../outside.txt", str(outside), "link",
                                                                       "config.yaml"]}))
    config = Engine().config({"model": tiny_lm, "method": "lora", "format": "alpaca", "output_dir": str(out),
                              "data": {"train": [str(alpaca_file)]}, "overwrite": True})
    RunFolder.prepare(config, "adapter")
    assert outside.read_text() == "keep" and not (out / "link").is_symlink() and not (out / "config.yaml").exists()
    assert read_record(out)["status"] == "running"


class FailingEvaluator:
    @hookimpl
    def tunery_register_evaluators(self, registry):
        from tunery import Evaluator

        class Broken(Evaluator):
            name = "broken"
            tasks = frozenset({"causal_lm"})

            def evaluate(self, model, examples, options, run):
                raise ZeroDivisionError("division by zero")

        registry.add(Broken())


def test_an_evaluator_failing_is_named(tiny_lm, alpaca_file, tmp_path):
    config = {"model": tiny_lm, "method": "lora", "format": "alpaca", "output_dir": str(tmp_path / "run"),
              "evaluators": ["broken"], "data": {"train": [str(alpaca_file)], "val_split": 0.1},
              "training": {"max_steps": 1}}
    with pytest.raises(PluginError, match=r"^evaluator 'broken' \(plugin 'FailingEvaluator'\) failed in evaluate: "
                                          r"ZeroDivisionError: division by zero$"):
        Engine(plugins=[FailingEvaluator()]).train(config)
