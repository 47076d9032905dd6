"""Every recipe in examples/recipes/ runs as written, on tiny models and one step (CPU-sized
overrides only: the model, the output folder, the step count), so none rots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunery import Engine
from tunery.errors import ConfigError

RECIPES = Path(__file__).resolve().parents[1] / "examples" / "recipes"
TRAINED = ["qlora", "full", "freeze", "chat_sharegpt", "classification", "multitask", "dpo"]
LAUNCHED = ["deepspeed", "fsdp"]


def test_every_recipe_is_exercised():
    assert sorted(p.stem for p in RECIPES.glob("*.yaml")) == sorted(TRAINED + LAUNCHED)


@pytest.mark.parametrize("name", TRAINED)
def test_recipe_trains(name, tiny_lm, tiny_encoder, tmp_path):
    engine = Engine()
    config = engine.config(RECIPES / f"{name}.yaml")
    model = tiny_encoder if config.model.startswith("sentence-transformers/") else tiny_lm
    result = engine.train(RECIPES / f"{name}.yaml", [
        f"model={model}", f"output_dir={tmp_path / 'run'}", "training.max_steps=1", "generation.max_new_tokens=4"])
    assert result.metrics["train"]["steps"] == 1
    assert (result.model_dir / "README.md").is_file()
    if config.evaluators:  # before and after metrics on held-out or evaluation data
        assert result.metrics["before"] and result.metrics["after"], result.metrics


def test_launch_recipes_build_their_training_settings(tmp_path):
    from tunery.run import check_compatibility, new_context
    from tunery.training import training_arguments

    engine = Engine()
    fsdp = engine.config(RECIPES / "fsdp.yaml", [f"output_dir={tmp_path}"])
    assert Path(fsdp.training.extra["fsdp_config"]) == RECIPES / "fsdp_config.json"  # beside the config
    run = new_context(engine, fsdp)
    check_compatibility(run)
    run.output_dir = tmp_path
    args = training_arguments(run)
    assert args.fsdp and args.fsdp_config["transformer_layer_cls_to_wrap"] == ["LlamaDecoderLayer"]
    deepspeed = engine.config(RECIPES / "deepspeed.yaml", [f"output_dir={tmp_path}"])
    ds_file = Path(deepspeed.training.extra["deepspeed"])
    assert ds_file == RECIPES / "ds_zero2.json" and json.loads(ds_file.read_text())["zero_optimization"]["stage"] == 2
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="pip install deepspeed"):
            check_compatibility(new_context(engine, deepspeed))
    else:  # pragma: no cover - where deepspeed is installed
        check_compatibility(new_context(engine, deepspeed))
