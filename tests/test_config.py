"""Configuration: validation with suggestions, --set coercion, plugin sections, the written config."""

from __future__ import annotations

import os

import pytest
import yaml

from tunery import Engine
from tunery.config import apply_overrides
from tunery.errors import ConfigError

BASE = {"model": "m", "output_dir": "out", "method": "lora", "format": "alpaca", "data": {"train": ["t.json"]}}


@pytest.fixture(scope="module")
def engine():
    return Engine()


def config(engine, **changes):
    raw = {**BASE, **changes}
    return engine.config(raw)


@pytest.mark.parametrize("raw, message", [
    ({"metod": "lora"}, "unknown config key 'metod' (did you mean 'method'?)"),
    ({"training": {"lerning_rate": 1e-4}}, "unknown config key 'training.lerning_rate' (did you mean 'learning_rate'?)"),
    ({"method": {"name": "lora", "rank": 8}}, "unknown config key 'method.rank'"),
    ({"method": {"name": "lora", "alpah": 8}}, "(did you mean 'alpha'?)"),
    ({"method": "lorra"}, "config key 'method': no method named 'lorra' (did you mean 'lora'?); installed:"),
    ({"format": "alpacca"}, "no formatter named 'alpacca' (did you mean 'alpaca'?)"),
    ({"evaluators": ["los"]}, "config key 'evaluators[0]': no evaluator named 'los' (did you mean 'loss'?)"),
    ({"training": {"batch_size": "four"}}, "config key 'training.batch_size' must be an integer, got 'four'"),
    ({"training": {"batch_size": 0}}, "config key 'training.batch_size' must be at least 1"),
    ({"training": {"bf16": "maybe"}}, "config key 'training.bf16' must be true or false (or null), got 'maybe'"),
    ({"method": {"name": "lora", "init": "pisa"}}, "config key 'method.init' must be one of"),
    ({"data": {"val_split": 1.5, "train": ["x"]}}, "config key 'data.val_split' must be in [0, 1)"),
    ({"data": {}}, "missing required config key 'data.train'"),
    ({"model": None}, "missing required config key 'model'"),
    ({"method": {"r": 8}}, "config key 'method.name' is required"),
])
def test_config_errors_name_the_key_and_suggest(engine, raw, message):
    with pytest.raises(ConfigError) as info:
        config(engine, **raw)
    assert message in str(info.value)


def test_sections_by_name_or_mapping_and_defaults(engine):
    cfg = config(engine, method={"name": "lora", "r": "8", "use_dora": "true"})
    assert cfg.method.name == "lora" and cfg.method.options.r == 8 and cfg.method.options.use_dora is True
    assert cfg.quantizer.name == "none"
    assert [e.name for e in cfg.evaluators] == ["loss"]  # the defaults for causal LM data
    assert cfg.training.learning_rate is None  # the method's default, resolved when the run starts


def test_overrides_coerce_types_and_create_sections(engine):
    raw = apply_overrides(dict(BASE), ["method.r=4", "training.max_steps=7", "training.bf16=false",
                                      "evaluators=loss", "data.train=[a.json, b.json]", "generation.prompts=[hi]"])
    cfg = engine.config(raw)
    assert cfg.method.options.r == 4 and cfg.training.max_steps == 7 and cfg.training.bf16 is False
    assert cfg.data.train == [os.path.abspath("a.json"), os.path.abspath("b.json")]  # recorded absolute
    assert cfg.generation.prompts == ["hi"]
    with pytest.raises(ConfigError, match="--set expects key.path=value"):
        apply_overrides({}, ["method.r"])


def test_target_modules_accept_names_regex_and_all_linear(engine):
    from tunery.peft_support import target_modules

    assert target_modules("all-linear") == "all-linear"
    assert target_modules("q_proj,v_proj") == ["q_proj", "v_proj"]
    assert target_modules(r".*\.(q|v)_proj") == r".*\.(q|v)_proj"
    assert config(engine, method={"name": "lora", "target_modules": ["q_proj"]}).method.options.target_modules == ["q_proj"]


def test_yaml_file_errors_and_relative_data_paths(engine, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: m\nmethod: [lora\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        engine.config(bad)
    (tmp_path / "train.json").write_text("[]")
    good = tmp_path / "run.yaml"
    good.write_text(yaml.safe_dump({**BASE, "data": {"train": "train.json"}}))
    assert engine.config(good).data.train == [str(tmp_path / "train.json")]


def test_resolved_config_round_trips(engine):
    cfg = config(engine, method={"name": "lora", "r": 4})
    again = engine.config(cfg.to_dict())
    assert again.to_dict() == cfg.to_dict() and again.digest() == cfg.digest()


def test_init_writes_a_starter_config_that_validates(run_cli, tmp_path, engine):
    target = tmp_path / "starter.yaml"
    result = run_cli("init", target)
    assert result.exit_code == 0 and target.is_file()
    cfg = engine.config(target)
    assert cfg.method.name == "lora" and cfg.format.name == "alpaca" and cfg.generation.prompts
    assert "# required" in target.read_text()  # commented for people
    again = run_cli("init", target)
    assert again.exit_code != 0 and "--force" in again.output
