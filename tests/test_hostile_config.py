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
