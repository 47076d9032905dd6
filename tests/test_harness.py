"""The ``harness`` evaluator: lm-evaluation-harness on the model in memory, with a task defined on
a local file (no network), checked against the accuracy computed by hand."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import write_jsonl
from tunery import ConfigError, Engine

QUESTIONS = [("What is 2 plus 2?", ["4", "5", "cat"], 0), ("Which is a colour?", ["red", "dog", "seven"], 0),
             ("What do cows drink?", ["milk", "water", "oil"], 1), ("Is the sky blue?", ["no", "yes", "maybe"], 1),
             ("Where is Paris?", ["Spain", "Italy", "France"], 2), ("How many legs has a cat?", ["two", "six", "four"], 2),
             ("What is ice?", ["frozen water", "hot air", "stone"], 0), ("Name a fruit.", ["chair", "apple", "car"], 1)]

TASK = """\
task: tiny_quiz
dataset_path: json
dataset_kwargs:
  data_files:
    test: {rows}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


@pytest.fixture
def task_file(tmp_path):
    rows = write_jsonl(tmp_path / "quiz.jsonl", [{"question": q, "choices": c, "answer": a} for q, c, a in QUESTIONS])
    path = tmp_path / "tiny_quiz.yaml"
    path.write_text(TASK.format(rows=rows))
    return path


def by_hand(model_dir: str) -> float:
    """Accuracy of picking the choice with the highest summed log-probability after the prompt."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    right = 0
    for question, choices, answer in QUESTIONS:
        context = f"Question: {question}\nAnswer:"
        scores = []
        for choice in choices:
            whole = tok(context + " " + choice, add_special_tokens=False)["input_ids"]
            start = len(tok(context, add_special_tokens=False)["input_ids"])
            with torch.no_grad():
                logprobs = model(torch.tensor([whole])).logits[0].log_softmax(-1)
            scores.append(sum(float(logprobs[i - 1, whole[i]]) for i in range(start, len(whole))))
        right += max(range(len(choices)), key=scores.__getitem__) == answer
    return right / len(QUESTIONS)


def test_harness_accuracy_on_a_local_task_equals_the_hand_computed_one(tiny_lm, task_file):
    results = Engine().evaluate(tiny_lm, ["harness"], [str(task_file)], overrides=["harness.samples=true"])
    metrics = results["harness"].metrics
    assert metrics["tiny_quiz/acc"] == pytest.approx(by_hand(tiny_lm))
    assert len(results["harness"].records) == len(QUESTIONS)
    assert sum(r["acc"] for r in results["harness"].records) / len(QUESTIONS) == metrics["tiny_quiz/acc"]


def test_harness_runs_before_and_after_training_and_stays_out_of_few_shot(tiny_lm, task_file, tmp_path, alpaca_file):
    config = {"model": tiny_lm, "output_dir": str(tmp_path / "run"), "method": "lora", "format": "alpaca",
              "few_shot": 2, "data": {"train": [str(alpaca_file)], "val_split": 0.2},
              "training": {"max_steps": 1, "batch_size": 4},
              "evaluators": ["loss", {"name": "harness", "data": str(task_file), "limit": 4}]}
    result = Engine().train(config)
    for phase in ("before", "after"):
        assert 0.0 <= result.metrics[phase]["harness/tiny_quiz/acc"] <= 1.0
    assert set(result.metrics["few_shot"]["metrics"]) == {"loss/loss", "loss/tokens", "loss/perplexity"}
    assert "harness/tiny_quiz/acc" in (result.output_dir / "report.md").read_text()
    assert json.loads((result.output_dir / "metrics.json").read_text())["after"]["harness/tiny_quiz/acc"] >= 0


def test_harness_refuses_unknown_tasks_and_missing_files(tiny_lm, task_file, tmp_path):
    engine = Engine()
    with pytest.raises(ConfigError, match="no lm_eval task named 'tiny_quizz'"):
        engine.evaluate(tiny_lm, ["harness"], [str(task_file)], overrides=["harness.tasks=[tiny_quizz]"])
    with pytest.raises(ConfigError, match="no task file or folder"):
        engine.evaluate(tiny_lm, ["harness"], [str(tmp_path / "missing.yaml")])
