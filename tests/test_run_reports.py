"""A quick-form run with evaluators: before/during/after metrics, early stopping that keeps the
best checkpoint, tensorboard events, report.md, loss.png, the model card; `tunery eval`
reproduces the run's after-metrics; `tunery eval --compare`; progress output."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from tests.conftest import write_jsonl
from tunery import ConfigError, Engine
from tunery.cli import cli

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "data" / "multiple_choice_sample.jsonl"


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def run_dir(tiny_lm, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    rows = [{"instruction": f"What is {i} plus {i}?", "output": f"It is {2 * i}."} for i in range(24)]
    data = write_jsonl(tmp / "train.jsonl", rows)
    out = tmp / "run"
    invoke("train", "--model", tiny_lm, "--method", "lora", "--format", "alpaca", "--data", data,
           "--output-dir", out, "--max-steps", 6,
           "--set", "evaluators=[loss,{name: generation, max_new_tokens: 3}]",
           "--set", "data.val_split=0.25", "--set", "training.eval_steps=2", "--set", "training.learning_rate=3e-3",
           "--set", "training.report_to=[tensorboard]", "--set", 'generation.prompts=["What is 2 plus 2?"]',
           "--set", "generation.max_new_tokens=3",
           # "higher loss is better" makes step 2 the best evaluation, so training stops at step 4
           "--set", "early_stopping={metric: loss/loss, patience: 1, greater_is_better: true}")
    return out


@pytest.fixture(scope="module")
def metrics(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


def test_before_during_after_metrics(metrics):
    for phase in ("before", "after"):
        assert set(metrics[phase]) >= {"loss/loss", "loss/perplexity", "generation/exact_match",
                                       "generation/token_f1", "generation/rouge_l"}
    assert metrics["after"]["loss/loss"] < metrics["before"]["loss/loss"]
    assert [d["step"] for d in metrics["during"]] == [2, 4]


def test_early_stopping_keeps_the_best_checkpoint(metrics, run_dir):
    assert metrics["train"]["steps"] == 4 and metrics["stopped_early"] is True
    best = metrics["best"]
    assert (best["checkpoint"], best["step"], best["metric"]) == ("checkpoints/checkpoint-2", 2, "loss/loss")
    at_2, at_4 = (d["loss/loss"] for d in metrics["during"])
    after = metrics["after"]["loss/loss"]
    assert abs(after - at_2) < abs(after - at_4)  # the saved adapter is the step-2 one
    assert "best checkpoint: `checkpoints/checkpoint-2`" in (run_dir / "report.md").read_text()


def test_report_and_evaluation_files(run_dir, metrics):
    report = (run_dir / "report.md").read_text()
    for heading in ("## Configuration", "## Data", "## Metrics", "### During training", "## Loss",
                    "## Sample generations", "## Worst examples (after training)", "### loss", "### generation"):
        assert heading in report
    assert "| loss/loss | " + f"{metrics['before']['loss/loss']:.4g} | {metrics['after']['loss/loss']:.4g} |" in report
    after = json.loads((run_dir / "evaluations" / "after.json").read_text())
    records = after["generation"]["records"]
    assert len(records) == metrics["after"]["generation/examples"] == 6
    assert set(records[0]) >= {"prompt", "reference", "output"} and "What is" in records[0]["prompt"]
    assert [w["loss"] for w in after["loss"]["worst"]] == sorted((w["loss"] for w in after["loss"]["worst"]), reverse=True)


def test_loss_png_is_a_plot_of_the_logged_losses(run_dir):
    import matplotlib.image
    import numpy as np

    image = matplotlib.image.imread(run_dir / "loss.png")
    assert image.shape[:2] == (400, 700)
    rgb = (image[..., :3] * 255).round()

    def pixels(color):
        return int((np.abs(rgb - np.array(color)).sum(-1) < 30).sum())

    assert pixels((31, 119, 180)) > 100  # tab:blue, the train loss line
    assert pixels((255, 127, 14)) > 100  # tab:orange, the eval loss line and points
    assert rgb.std() > 10
    from tunery.report import loss_curves, read_log

    train, evals = loss_curves(read_log(run_dir / "train_log.jsonl"), json.loads((run_dir / "metrics.json").read_text()))
    assert [s for s, _ in train] == [1, 2, 3, 4] and [s for s, _ in evals] == [0, 2, 4, 4]


def test_tensorboard_events_are_written(run_dir):
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))


def test_model_card(run_dir, tiny_lm):
    text = (run_dir / "adapter" / "README.md").read_text()
    front = yaml.safe_load(text.split("---")[1])
    assert front["base_model"] == str(tiny_lm) and front["library_name"] == "peft"
    assert {"tunery", "lora", "alpaca"} <= set(front["tags"]) and front["datasets"] == ["train.jsonl"]
    assert "## Method" in text and "## Data" in text and "| loss/loss |" in text


def test_tunery_eval_reproduces_after_metrics(run_dir, metrics, tmp_path):
    out = tmp_path / "eval.json"
    invoke("eval", run_dir, "--output", out)
    results = json.loads(out.read_text())
    assert set(results) == {"loss", "generation"}
    for name, result in results.items():
        for key, value in result["metrics"].items():
            assert value == pytest.approx(metrics["after"][f"{name}/{key}"], rel=1e-5), f"{name}/{key}"


def test_tunery_eval_of_the_base_model_reproduces_the_baseline(run_dir, metrics, tiny_lm, tmp_path):
    import re

    records = json.loads((run_dir / "evaluations" / "after.json").read_text())["generation"]["records"]
    held_out = [int(re.search(r"What is (\d+) plus", r["prompt"]).group(1)) for r in records]
    data = write_jsonl(tmp_path / "held_out.jsonl",
                       [{"instruction": f"What is {i} plus {i}?", "output": f"It is {2 * i}."} for i in held_out])
    output = invoke("eval", tiny_lm, "--format", "alpaca", "--data", data, "--evaluator", "loss")
    loss = float(re.search(r"loss/loss = (\S+)", output).group(1))
    assert loss == pytest.approx(metrics["before"]["loss/loss"], rel=1e-3)


def test_tunery_eval_of_a_plain_model_with_its_own_data(tiny_lm):
    output = invoke("eval", tiny_lm, "--evaluator", "multiple_choice", "--data", SAMPLE,
                    "--set", "multiple_choice.limit=2")
    assert "multiple_choice/questions = 2" in output
    with pytest.raises(ConfigError, match="--format"):
        Engine().evaluate(tiny_lm, ["loss"], [str(SAMPLE)])


def test_compare_runs(run_dir, metrics):
    output = invoke("eval", "--compare", run_dir, run_dir)
    line = next(line for line in output.splitlines() if line.startswith("loss/loss "))
    assert line.split()[1:] == [f"{metrics['after']['loss/loss']:.4g}"] * 2 + ["0"]
    assert any(line.startswith("before: loss/loss") for line in output.splitlines())


# ----------------------------------------------------------------------------- validation and progress


@pytest.mark.parametrize("settings, message", [
    ({"early_stopping": {"metric": "loss/loss"}}, "needs training.eval_steps"),
    ({"early_stopping": {"metric": "accuracy/accuracy"}, "training": {"eval_steps": 2}}, "does not use"),
    ({"early_stopping": {"metric": "loss"}}, "must be 'evaluator/metric'"),
    ({"training": {"report_to": ["tensorbored"]}}, "did you mean 'tensorboard'"),
])
def test_bad_evaluation_settings_are_refused_before_loading(settings, message, tmp_path):
    config = {"model": "missing-model", "output_dir": str(tmp_path / "o"), "method": "lora", "format": "alpaca",
              "data": {"train": "x.jsonl"}, "evaluators": ["loss"], **settings}
    with pytest.raises(ConfigError, match=message):
        Engine().train(config)


class Terminal(io.StringIO):
    def isatty(self):
        return True


def _drive(progress):
    from transformers import TrainerControl, TrainerState

    state, control = TrainerState(), TrainerControl()
    state.max_steps = 10
    progress.on_train_begin(None, state, control)
    for step in (1, 2):
        state.global_step = step
        progress.on_step_end(None, state, control)
        progress.on_log(None, state, control, logs={"loss": 1.5 / step, "learning_rate": 1e-3})
    progress.on_train_end(None, state, control)


def test_progress_bar_on_a_terminal():
    from tunery.progress import Progress

    stream = Terminal()
    _drive(Progress(lambda: 1000, stream=stream))
    text = stream.getvalue()
    assert "2/10" in text and "loss=0.75" in text and "lr=0.001" in text and "tok_s=" in text
    assert "<" in text  # tqdm's elapsed<remaining (ETA)


def test_progress_log_lines_elsewhere(caplog):
    from tunery.progress import Progress

    stream = io.StringIO()
    logger = logging.getLogger("tunery")
    propagate, logger.propagate = logger.propagate, True  # the CLI turns it off; caplog listens at the root
    with caplog.at_level(logging.INFO, logger="tunery"):
        try:
            _drive(Progress(lambda: 1000, stream=stream))
        finally:
            logger.propagate = propagate
    assert stream.getvalue() == ""
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("step 1/10: loss=1.5, learning_rate=0.001, tokens/s=") and "eta 0:" in lines[0]
