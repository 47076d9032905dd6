"""The prompting baseline: k training examples in front of each evaluation prompt, scored by the
run's evaluators on the untuned model, shown beside the after-training numbers."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import write_jsonl
from tunery import ConfigError, DataError, Engine, IncompatibleError
from tunery.baseline import draw_shots, with_shots


def ex(ids, target=1):
    return {"input_ids": list(ids), "labels": [-100] * (len(ids) - target) + list(ids[-target:])}


def test_shots_never_come_from_the_evaluation_examples():
    evaluation = [ex([1, 2, 3]), ex([4, 5, 6])]
    train = [ex([1, 2, 3]), ex([7, 8]), ex([9, 10]), ex([4, 5, 6]), ex([11, 12])]  # two are eval rows again
    for seed in range(20):
        shots = draw_shots(train, evaluation, 3, seed)
        assert sorted(s["input_ids"][0] for s in shots) == [7, 9, 11]
    assert draw_shots(train, evaluation, 2, 5) == draw_shots(train, evaluation, 2, 5)  # fixed seed, same draw
    with pytest.raises(DataError, match="needs 4 training examples that are not evaluation examples; there are 3"):
        draw_shots(train, evaluation, 4, 0)


def test_shots_go_in_front_without_loss_and_the_earliest_are_dropped_when_too_long():
    shots = [ex([7, 8]), ex([9, 10, 11])]
    prompted, mean = with_shots([ex([1, 2, 3]), ex([4, 5, 6, 13, 14])], shots, max_length=8)
    assert prompted[0] == {"input_ids": [7, 8, 9, 10, 11, 1, 2, 3], "labels": [-100] * 7 + [3]}
    assert prompted[1] == {"input_ids": [9, 10, 11, 4, 5, 6, 13, 14], "labels": [-100] * 7 + [14]}
    assert mean == 1.5


@pytest.fixture(scope="module")
def few_shot_run(tiny_lm, tmp_path_factory):
    folder = tmp_path_factory.mktemp("few-shot")
    rows = [{"instruction": f"What is {i} plus {i}?", "input": "", "output": f"It is {2 * i}."} for i in range(24)]
    data = write_jsonl(folder / "train.jsonl", rows)
    config = {"model": tiny_lm, "output_dir": str(folder / "run"), "method": "lora", "format": "alpaca",
              "few_shot": 3, "seed": 1, "data": {"train": [str(data)], "val_split": 0.25},
              "training": {"max_steps": 2, "batch_size": 4}, "evaluators": ["loss"]}
    return Engine().train(config), folder


def test_few_shot_numbers_beside_the_after_training_numbers(few_shot_run):
    result, _ = few_shot_run
    shots = result.metrics["few_shot"]
    assert shots["k"] == 3 and shots["mean_shots"] == 3
    # the demonstrations change what the model predicts: another loss than zero-shot
    assert shots["metrics"]["loss/loss"] != pytest.approx(result.metrics["before"]["loss/loss"])
    assert shots["metrics"]["loss/tokens"] == result.metrics["before"]["loss/tokens"]  # same targets scored
    report = (result.output_dir / "report.md").read_text()
    header = next(line for line in report.splitlines() if line.startswith("| metric"))
    assert header == "| metric | before | 3-shot prompting | after | change |"
    row = next(line for line in report.splitlines() if line.startswith("| loss/loss "))
    assert f"{shots['metrics']['loss/loss']:.4g}" in row and f"{result.metrics['after']['loss/loss']:.4g}" in row
    assert json.loads((result.output_dir / "metrics.json").read_text())["few_shot"] == shots


def test_tunery_eval_few_shot_equals_the_loss_computed_by_hand(tiny_lm, tmp_path, run_cli):
    from transformers import AutoModelForCausalLM

    from tunery.datatools import formatting_context, format_split, read_split
    from tunery.loading import load_tokenizer

    shot = write_jsonl(tmp_path / "shot.jsonl", [{"instruction": "What is 5 plus 5?", "input": "", "output": "It is 10."}])
    question = write_jsonl(tmp_path / "eval.jsonl", [{"instruction": "What is 7 plus 7?", "input": "", "output": "It is 14."}])
    out = tmp_path / "out.json"
    result = run_cli("eval", tiny_lm, "--format", "alpaca", "--data", question, "--evaluator", "loss",
                     "--few-shot", 1, "--shots-from", shot, "--output", out)
    assert result.exit_code == 0, result.output
    measured = json.loads(out.read_text())["loss"]["metrics"]["loss"]

    engine = Engine()
    tokenizer = load_tokenizer(engine.resolve_model(tiny_lm))
    run = formatting_context(engine, "alpaca", {}, tokenizer)
    (a,), (b,) = (format_split(run, *read_split(run, [str(f)], "eval")).examples for f in (shot, question))
    ids = a["input_ids"] + b["input_ids"]
    labels = [-100] * len(a["input_ids"]) + b["labels"]
    model = AutoModelForCausalLM.from_pretrained(tiny_lm).eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, :-1]
    target = torch.tensor(labels[1:])
    by_hand = torch.nn.functional.cross_entropy(logits[target != -100], target[target != -100])
    assert measured == pytest.approx(float(by_hand), rel=1e-4)


def test_few_shot_needs_shots_and_language_model_data(tiny_lm, tiny_encoder, tmp_path, classification_file):
    engine = Engine()
    question = write_jsonl(tmp_path / "eval.jsonl", [{"instruction": "Hi?", "input": "", "output": "Hello."}])
    with pytest.raises(ConfigError, match="pass --shots-from"):
        engine.evaluate(tiny_lm, ["loss"], [str(question)], "alpaca", few_shot=2)
    config = {"model": tiny_encoder, "output_dir": str(tmp_path / "r"), "method": "lora", "format": "classification",
              "few_shot": 2, "data": {"train": [str(classification_file)]}}
    with pytest.raises(IncompatibleError, match="few_shot=2: few-shot prompting needs causal_lm data"):
        engine.check(config)
    with pytest.raises(ConfigError, match="'few_shot' must be 0 or more"):
        engine.config({**config, "few_shot": -1})


def test_a_config_with_a_sweep_section_is_sent_to_tunery_sweep(tiny_lm, tmp_path, alpaca_file, run_cli):
    import yaml

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model": tiny_lm, "output_dir": str(tmp_path / "r"), "method": "lora",
                                    "format": "alpaca", "data": {"train": str(alpaca_file)},
                                    "sweep": {"parameters": {"training.learning_rate": [1e-4, 1e-3]}}}))
    result = run_cli("train", path)
    assert result.exit_code != 0
    assert "this config has a 'sweep:' section: run it with `tunery sweep CONFIG`" in result.output
