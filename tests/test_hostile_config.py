"""Broken configs and occupied run folders: one clear line from the CLI, never a traceback."""

from __future__ import annotations

import pytest
import yaml


def write_config(tmp_path, tiny_lm, alpaca_file, **changes):
    raw = {"model": tiny_lm, "method": "lora", "format": "alpaca", "output_dir": str(tmp_path / "run"),
           "data": {"train": str(alpaca_file)}, "training": {"max_steps": 1}}
    for key, value in changes.items():
        section, _, leaf = key.partition("__")
        if leaf:
            raw.setdefault(section, {})[leaf] = value
        else:
            raw[key] = value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def one_error_line(result) -> str:
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    return errors[0]


@pytest.mark.parametrize("changes,exit_code,expected", [
    ({"training__batch_size": "four"}, 2, "config key 'training.batch_size' must be an integer, got 'four'"),
    ({"training__bf16": "maybe"}, 2, "config key 'training.bf16' must be true or false (or null), got 'maybe'"),
    ({"data__train": {"a": 1}}, 2, "config key 'data.train' must be a list"),
    ({"training__learnig_rate": 0.1}, 2, "unknown config key 'training.learnig_rate' (did you mean 'learning_rate'?)"),
    ({"epochs": 3}, 2, "unknown config key 'epochs'"),
    ({"method": "lora2"}, 2, "config key 'method': no method named 'lora2' (did you mean 'lora'?)"),
    ({"format": {"name": "alpacca"}}, 2, "no formatter named 'alpacca' (did you mean 'alpaca'?)"),
    ({"evaluators": ["los"]}, 2, "config key 'evaluators[0]': no evaluator named 'los'"),
    ({"method": {"name": "lora", "r": "eight"}}, 2, "config key 'method.r' must be an integer"),
    ({"method": {"name": "lora", "rank": 8}}, 2, "unknown config key 'method.rank'"),
    ({"training__on_nonfinite": "ignore"}, 2, "config key 'training.on_nonfinite' must be one of 'stop', 'skip'"),
    ({"data__val_split": 1.5}, 2, "config key 'data.val_split' must be in [0, 1)"),
    ({"resume": "auto", "overwrite": True}, 2, "--resume and --overwrite contradict each other"),
    ({"training__learning_rate": "nan"}, 2, "config key 'training.learning_rate' must be a finite number, got 'nan'"),
    ({"training__learning_rate": float("inf")}, 2, "config key 'training.learning_rate' must be a finite number, got inf"),
    ({"training__warmup_ratio": float("nan")}, 2, "config key 'training.warmup_ratio' must be a finite number"),
    ({"method": {"name": "lora", "dropout": float("nan")}}, 2, "config key 'method.dropout' must be a finite number"),
    ({"data__val_split": "nan"}, 2, "config key 'data.val_split' must be a finite number, got 'nan'"),
    ({"training__epochs": -1}, 2, "config key 'training.epochs' must be positive, got -1.0"),
    ({"training__epochs": 0}, 2, "config key 'training.epochs' must be positive"),
    ({"seed": -1}, 2, "config key 'seed' must be in 0..4294967295 (2**32-1), got -1"),
    ({"seed": 2**40}, 2, "config key 'seed' must be in 0..4294967295 (2**32-1), got 1099511627776"),
    ({"training__max_grad_norm": -1}, 2, "config key 'training.max_grad_norm' must be 0 or more, got -1.0 "
                                         "(0 turns gradient clipping off)"),
    ({"training__bf16": True, "training__extra": {"fp16": True}}, 2,
     "config keys 'training.bf16' and 'training.extra.fp16' are both true"),
    ({"method": "full", "quantizer": "bnb-4bit"}, 2, "method 'full' cannot train a quantized base (quantizer 'bnb-4bit')"),
    ({"method": "full", "quantizer": "bnb-3bit"}, 2, "no quantizer named 'bnb-3bit'"),
])
def test_config_errors_are_one_line_naming_the_key(tmp_path, tiny_lm, alpaca_file, run_cli, changes, exit_code,
                                                   expected):
    result = run_cli("train", write_config(tmp_path, tiny_lm, alpaca_file, **changes))
    assert result.exit_code == exit_code
    assert expected in one_error_line(result)


def test_invalid_yaml_names_the_line(tmp_path, run_cli):
    path = tmp_path / "bad.yaml"
    path.write_text("model: a\nmethod: [lora\n")
    result = run_cli("train", path)
    assert result.exit_code == 2 and "is not valid YAML at line" in one_error_line(result)


def test_an_output_folder_holding_another_run_is_never_overwritten(tmp_path, tiny_lm, alpaca_file, run_cli):
    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    (run / "metrics.json").write_text('{"precious": true}')
    for extra in ((), ("--overwrite",)):  # files no recorded run wrote: --overwrite does not delete them either
        result = run_cli("train", write_config(tmp_path, tiny_lm, alpaca_file), *extra)
        assert result.exit_code == 2
        line = one_error_line(result)
        assert f"output_dir '{run}' holds metrics.json, adapter, which no tunery run recorded writing" in line
        assert (run / "metrics.json").read_text() == '{"precious": true}' and (run / "adapter").is_dir()


def test_an_explicit_fp16_turns_the_automatic_bf16_off(tmp_path, tiny_lm, alpaca_file):
    from tunery import Engine

    engine = Engine()
    config = engine.config(write_config(tmp_path, tiny_lm, alpaca_file, training__extra={"fp16": True}))
    assert config.training.bf16 is False  # resolved before anything loads, recorded in config.yaml
    assert engine.config(write_config(tmp_path, tiny_lm, alpaca_file)).training.bf16 is None
    assert engine.config(write_config(tmp_path, tiny_lm, alpaca_file, training__max_grad_norm=0)).training.max_grad_norm == 0


def test_named_evaluators_without_eval_data_get_a_seeded_held_out_split(tmp_path, tiny_lm, alpaca_file, run_cli):
    import json

    config = write_config(tmp_path, tiny_lm, alpaca_file, evaluators=["loss"])
    result = run_cli("train", config)
    assert result.exit_code == 0, result.output
    assert "holding out 4 of 40 examples for evaluation; data.val_split=0 turns this off" in result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["before"]["loss/loss"] > 0 and metrics["after"]["loss/loss"] > 0
    assert metrics["data"]["eval"]["held_out_from_train"] == 4 and metrics["data"]["eval"]["held_out_auto"] is True
    assert metrics["data"]["train"]["examples"] == 36 and "note" not in metrics
    zero = write_config(tmp_path, tiny_lm, alpaca_file, evaluators=["loss"], data__val_split=0,
                        output_dir=str(tmp_path / "zero"))
    result = run_cli("train", zero)
    assert result.exit_code == 0, result.output
    assert "data.val_split=0 and no data.eval: the evaluators (loss) will not run" in result.output
    metrics = json.loads((tmp_path / "zero" / "metrics.json").read_text())
    assert metrics["before"] == {} and metrics["data"]["train"]["examples"] == 40 and "note" in metrics


def test_the_automatic_split_never_leaves_fewer_than_two_training_examples(tmp_path, tiny_lm, run_cli):
    from tests.conftest import write_jsonl

    rows = write_jsonl(tmp_path / "two.jsonl", [{"instruction": "a", "output": "b"}, {"instruction": "c", "output": "d"}])
    result = run_cli("train", write_config(tmp_path, tiny_lm, rows))
    assert result.exit_code == 0, result.output
    assert "only 2 training example(s) and no data.eval: nothing is held out, the evaluators (loss) will not run" \
        in result.output
