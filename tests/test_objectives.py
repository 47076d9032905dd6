"""Objectives as their own family: the built-in ones pass the objective kit with several
methods, any method pairs with any objective whose head it can train, and the built-in
evaluators and the `none` quantizer pass their kits."""

from __future__ import annotations

import json

import pytest

from tunery import Engine, IncompatibleError
from tunery.testing import EvaluatorConformance, ObjectiveConformance, QuantizerConformance


class TestDpoObjective(ObjectiveConformance):
    objective, options, learning_rate = "dpo", {"beta": 0.5}, 5e-3


class TestRewardObjective(ObjectiveConformance):
    objective, learning_rate = "reward", 3e-3


class TestLossEvaluator(EvaluatorConformance):
    evaluator = "loss"


class TestClassificationEvaluator(EvaluatorConformance):
    evaluator = "classification"


class TestNoneQuantizer(QuantizerConformance):
    quantizer = "none"


@pytest.mark.parametrize("method", ["ia3", "ptuning"])
def test_a_reward_model_trains_through_any_method_that_trains_its_head(method, tiny_lm, preference_files, tmp_path):
    train, heldout = preference_files
    result = Engine().train({
        "model": tiny_lm, "output_dir": str(tmp_path / method), "method": method, "objective": "reward",
        "format": "preference", "data": {"train": [str(train)], "eval": [str(heldout)], "max_length": 64},
        "training": {"max_steps": 8, "learning_rate": 2e-2, "batch_size": 4, "bf16": False, "logging_steps": 1}})
    losses = [r["loss"] for r in map(json.loads, (result.output_dir / "train_log.jsonl").read_text().splitlines())
              if "loss" in r]
    assert sum(losses[-3:]) < sum(losses[:3]), f"the Bradley-Terry loss did not go down: {losses}"
    manifest = json.loads((result.output_dir / "manifest.json").read_text())
    assert manifest["task"] == {"data": "preference", "model": "classification", "num_labels": 1, "labels": None}
    assert manifest["plugins"]["objective"]["name"] == "reward" and manifest["plugins"]["method"]["name"] == method


def test_prefix_with_reward_trains_or_is_refused_before_loading_with_the_reason(tmp_path, preference_files):
    import tunery_prefix

    config = {"model": "/nonexistent/model", "output_dir": str(tmp_path / "run"), "method": "prefix",
              "objective": "reward", "format": "preference", "data": {"train": [str(preference_files[0])]}}
    if tunery_prefix.backbones_take_past_key_values():
        pytest.skip("this transformers lets peft prefix-tune classification heads")
    with pytest.raises(IncompatibleError, match="prefix tuning .* cannot train classification models"):
        Engine().train(config)
    assert not (tmp_path / "run").exists()


def test_an_objective_that_cannot_optimise_the_data_is_refused_naming_both(tmp_path, alpaca_file):
    with pytest.raises(IncompatibleError, match="objective 'dpo' cannot optimise causal_lm data .*objectives that can: "
                                                ".*sft"):
        Engine().train({"model": "/nonexistent/model", "output_dir": str(tmp_path / "run"), "method": "lora",
                        "objective": "dpo", "format": "alpaca", "data": {"train": [str(alpaca_file)]}})
