"""`tunery sweep`: Optuna search over config keys on a tiny model, pruning from the evaluations
during training, resuming after SIGKILL, parallel processes, and the Ray Tune backend."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import write_jsonl
from tunery import ConfigError, Engine


def sweep_config(tiny_lm, folder: Path, **sweep) -> Path:
    rows = [{"instruction": f"What is {i} plus {i}?", "input": "", "output": f"It is {2 * i}."} for i in range(24)]
    data = write_jsonl(folder / "train.jsonl", rows)
    config = {"model": tiny_lm, "output_dir": str(folder / "sweep"), "method": "lora", "format": "alpaca",
              "data": {"train": str(data), "val_split": 0.25}, "evaluators": ["loss"],
              "training": {"max_steps": 4, "eval_steps": 2, "batch_size": 4},
              "sweep": {"parameters": {"training.learning_rate": {"log_uniform": [1.0e-5, 5.0e-2]},
                                       "method.r": [2, 4, 8, 16]},
                        "metric": "loss/loss", "trials": 8, **sweep}}
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def finished_sweep(tiny_lm, tmp_path_factory):
    from click.testing import CliRunner

    from tunery.cli import cli

    folder = tmp_path_factory.mktemp("sweep")
    result = CliRunner().invoke(cli, ["sweep", str(sweep_config(tiny_lm, folder))], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return folder / "sweep", result.output


def test_sweep_beats_the_config_and_prunes_bad_trials(finished_sweep):
    folder, output = finished_sweep
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["trials"] == 8
    assert summary["pruned"] >= 1
    assert summary["config_trial"]["params"] == {"training.learning_rate": 2e-4, "method.r": 16}
    assert summary["best"]["value"] < summary["config_trial"]["value"]
    assert f"best: loss/loss = {summary['best']['value']:.6g}" in output
    for row in summary["rows"]:  # every trial is an ordinary run folder; pruned ones stop at an evaluation
        run = folder / row["folder"]
        assert (run / "config.yaml").is_file()
        assert (run / "metrics.json").is_file() == (row["state"] == "complete")
        if row["state"] == "pruned":
            assert row["pruned_at"] < 4
        else:
            metrics = json.loads((run / "metrics.json").read_text())
            assert metrics["after"]["loss/loss"] == pytest.approx(row["value"])


def test_sweep_summary_best_config_table_and_figures(finished_sweep):
    folder, _ = finished_sweep
    summary = json.loads((folder / "summary.json").read_text())
    best = yaml.safe_load((folder / "best.yaml").read_text())
    assert "sweep" not in best and best["output_dir"] == str((folder / "best").resolve())
    config = Engine().check(best)  # ready to train as it is
    assert config.training.learning_rate == summary["best"]["params"]["training.learning_rate"]
    assert config.method.options.r == summary["best"]["params"]["method.r"]
    report = (folder / "sweep.md").read_text()
    assert sum(line.startswith("| ") for line in report.splitlines()) == 1 + 8  # header + one row per trial
    for figure in ("objective.png", "importances.png", "parallel_coordinates.png", "intermediate.png"):
        assert (folder / figure).read_bytes()[:4] == b"\x89PNG"
        assert f"]({figure})" in report


def _study(folder: Path):
    import optuna

    return optuna.load_study(study_name="tunery-sweep", storage=f"sqlite:///{folder / 'sweep.db'}")


def test_sweep_resumes_after_sigkill_without_repeating_finished_trials(tiny_lm, tmp_path, run_cli):
    from optuna.trial import TrialState

    config = sweep_config(tiny_lm, tmp_path, trials=4)
    folder = tmp_path / "sweep"
    command = [sys.executable, "-m", "tunery.cli", "sweep", str(config)]
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            if (folder / "sweep.db").is_file():
                try:
                    states = [t.state for t in _study(folder).get_trials()]
                except KeyError:  # the database is there, the study not yet
                    states = []
                if states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) >= 2 and TrialState.RUNNING in states:
                    break
            assert process.poll() is None, process.stderr.read().decode()[-3000:]
            time.sleep(0.5)
        else:
            pytest.fail("the sweep did not finish two trials in time")
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    before = {t.number: (t.state, (folder / f"trial-{t.number:03d}" / "config.yaml").stat().st_mtime_ns)
              for t in _study(folder).get_trials() if t.state in (TrialState.COMPLETE, TrialState.PRUNED)}
    interrupted = [t.number for t in _study(folder).get_trials() if t.state == TrialState.RUNNING]
    assert interrupted

    result = run_cli("sweep", config, "--parallel", "2")  # the two trials left, in two processes
    assert result.exit_code == 0, result.output
    trials = _study(folder).get_trials()
    for number, (state, mtime) in before.items():  # finished trials are kept, not run again
        assert trials[number].state == state
        assert (folder / f"trial-{number:03d}" / "config.yaml").stat().st_mtime_ns == mtime
    retried = [t for t in trials if "retry_of" in t.user_attrs]
    assert sorted(t.user_attrs["retry_of"] for t in retried) == sorted(interrupted)
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in retried)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["trials"] == 4 and summary["complete"] + summary["pruned"] == 4
    assert sorted(p.name for p in folder.glob("trial-*")) == sorted(r["folder"] for r in summary["rows"])
    spans = sorted((t.datetime_start, t.datetime_complete) for t in trials if t.datetime_complete)
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:])), "no two trials ran at once"


def test_sweep_on_a_local_ray_instance_with_two_workers(tiny_lm, tmp_path, run_cli):
    config = sweep_config(tiny_lm, tmp_path, trials=2)
    result = run_cli("sweep", config, "--backend", "ray", "--parallel", "2")
    assert result.exit_code == 0, result.output
    folder = tmp_path / "sweep"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["trials"] == 2 and summary["complete"] == 2
    assert summary["config_trial"]["params"] == {"training.learning_rate": 2e-4, "method.r": 16}
    for row in summary["rows"]:
        metrics = json.loads((folder / row["folder"] / "metrics.json").read_text())
        assert metrics["after"]["loss/loss"] == pytest.approx(row["value"])
    assert (folder / "best.yaml").is_file()


def test_sweep_refuses_bad_sections_before_training(tiny_lm, tmp_path, run_cli):
    from tunery_sweep.study import prepare, start

    engine = Engine()
    raw = yaml.safe_load(sweep_config(tiny_lm, tmp_path).read_text())

    def refused(match, **changes):
        broken = json.loads(json.dumps(raw))
        broken["sweep"].update(changes)
        with pytest.raises(ConfigError, match=match):
            prepare(engine, broken)

    refused("unknown config key 'training.learning_rat' \\(did you mean 'learning_rate'",
            parameters={"training.learning_rat": [1e-4]})
    refused("'sweep.parameters.method.r' must be a list of choices or one of", parameters={"method.r": {"between": [1, 2]}})
    refused("low 0.1 must be below high 0.01", parameters={"training.learning_rate": {"uniform": [0.1, 0.01]}})
    refused("the grid sampler needs a list of choices", sampler="grid")
    refused("names evaluator 'accuracy', which the runs do not use", metric="accuracy/accuracy")
    with pytest.raises(ConfigError, match="has no 'sweep:' section"):
        prepare(engine, {k: v for k, v in raw.items() if k != "sweep"})

    start(engine, prepare(engine, raw))  # a study in the folder, no trial run yet
    other = json.loads(json.dumps(raw))
    other["sweep"]["parameters"]["method.r"] = [4, 8]
    with pytest.raises(ConfigError, match="holds a sweep of another config or search space; pass --overwrite"):
        start(engine, prepare(engine, other))
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="already holds files but no sweep"):
        start(engine, prepare(engine, raw, output_dir=str(tmp_path / "elsewhere")))
