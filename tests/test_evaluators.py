"""The evaluator plugins: hand-checked values on stub models whose predictions are forced, and
consistency with direct computation on the tiny real models."""

from __future__ import annotations

import json
import math
import types
from pathlib import Path

import pytest
import torch

from tests.conftest import write_jsonl
from tunery import DataError, Engine
from tunery import RunContext

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "data" / "multiple_choice_sample.jsonl"


@pytest.fixture(scope="module")
def engine():
    return Engine()


def make_run(engine, tokenizer, *, fmt="alpaca", evaluators=("loss",), model_task="causal_lm", labels=None,
             tmp="unused"):
    config = engine.config({"model": "m", "output_dir": tmp, "method": "full", "format": fmt,
                            "evaluators": list(evaluators), "training": {"batch_size": 2},
                            "data": {"train": "unused.jsonl"}})
    return RunContext(config=config, output_dir=Path(tmp), engine=engine,
                      data_task=engine.formatters.get(fmt).task, model_task=model_task,
                      label_names=labels, tokenizer=tokenizer)


def evaluate(engine, run, model, examples, name):
    choice = next(c for c in run.config.evaluators if c.name == name)
    return engine.evaluators.get(name).evaluate(model, examples, choice.options, run)


class StubModel(torch.nn.Module):
    """Logits chosen by the test: ``logits(input_ids)`` -> tensor [batch, (seq,) vocab]."""

    def __init__(self, logits, generate=None):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self._logits = logits
        self._generate = generate

    def forward(self, input_ids, attention_mask=None, labels=None):
        return types.SimpleNamespace(logits=self._logits(input_ids), loss=None)

    def generate(self, input_ids, **kwargs):  # a batch of left-padded prompts (pad id 0)
        rows = [self._generate([t for t in row.tolist() if t]) for row in input_ids]
        width = max(map(len, rows))
        return torch.cat([input_ids, torch.tensor([r + [0] * (width - len(r)) for r in rows])], dim=1)


class CharTokenizer:
    """One token per character (ids = code points), no special tokens."""

    bos_token_id = None
    eos_token_id = None
    pad_token_id = 0

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [ord(c) for c in text]}

    def decode(self, ids, skip_special_tokens=False):
        return "".join(chr(i) for i in ids if i)


# ----------------------------------------------------------------------------- classification


def test_classification_right_on_3_of_4(engine):
    examples = [{"input_ids": [10 + i], "labels": gold} for i, gold in enumerate([0, 0, 1, 1])]
    predicted = {10: 0, 11: 1, 12: 1, 13: 1}  # the second row is wrong: neg predicted as pos

    def logits(ids):
        return torch.stack([torch.tensor([2.0, 0.0]) if predicted[int(row[0])] == 0 else torch.tensor([0.0, 3.0])
                            for row in ids])

    tokenizer = types.SimpleNamespace(pad_token_id=0, decode=lambda ids, skip_special_tokens=False: f"row{ids[0]}")
    run = make_run(engine, tokenizer, fmt="classification", evaluators=["classification"],
                   model_task="classification", labels=["neg", "pos"])
    result = evaluate(engine, run, StubModel(logits), examples, "classification")
    m = result.metrics
    assert m["accuracy"] == 0.75
    # neg: precision 1/1, recall 1/2, F1 2/3; pos: precision 2/3, recall 2/2, F1 4/5
    assert (m["precision/neg"], m["recall/neg"]) == (1.0, 0.5)
    assert m["precision/pos"] == pytest.approx(2 / 3) and m["recall/pos"] == 1.0
    assert m["macro_f1"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert result.details["confusion_matrix"] == {"labels": ["neg", "pos"], "matrix": [[1, 1], [0, 2]]}
    assert len(result.worst) == 1
    assert result.worst[0]["text"] == "row11" and result.worst[0]["label"] == "neg"
    assert result.worst[0]["predicted"] == "pos"
    assert result.worst[0]["confidence"] == pytest.approx(math.exp(3) / (1 + math.exp(3)))


def test_classification_on_tiny_encoder_matches_argmax(engine, tiny_encoder):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_encoder)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_encoder, num_labels=3).eval()
    texts = ["the weather is sunny", "bake the bread", "the train was late", "a rover reached mars", "read the error"]
    examples = [{"input_ids": tokenizer(t)["input_ids"], "labels": i % 3} for i, t in enumerate(texts)]
    with torch.no_grad():
        predicted = [int(model(torch.tensor([e["input_ids"]])).logits.argmax()) for e in examples]
    run = make_run(engine, tokenizer, fmt="classification", evaluators=["classification", "loss"],
                   model_task="classification", labels=["a", "b", "c"])
    with torch.no_grad():
        result = evaluate(engine, run, model, examples, "classification")
        loss = evaluate(engine, run, model, examples, "loss")
    right = sum(p == e["labels"] for p, e in zip(predicted, examples))
    assert result.metrics["accuracy"] == pytest.approx(right / len(examples))
    assert sum(map(sum, result.details["confusion_matrix"]["matrix"])) == len(examples)
    assert len(result.worst) == len(examples) - right
    # the loss evaluator's worst example really has the highest cross-entropy
    with torch.no_grad():
        ce = [float(model(torch.tensor([e["input_ids"]]), labels=torch.tensor([e["labels"]])).loss) for e in examples]
    assert loss.worst[0]["loss"] == pytest.approx(max(ce), rel=1e-5)
    assert [w["loss"] for w in loss.worst] == sorted((w["loss"] for w in loss.worst), reverse=True)


# ----------------------------------------------------------------------------- generation


def test_generation_scores_by_hand():
    from tunery_eval_generation import exact_match, rouge_l, token_f1

    assert exact_match("The Cat sat.", "cat sat") == 1.0  # case, punctuation and articles ignored
    assert exact_match("cat sat down", "cat sat") == 0.0
    assert token_f1("the cat sat", "a cat sat down") == pytest.approx(0.8)  # P 2/2, R 2/3
    assert token_f1("dog", "cat") == 0.0
    # LCS of [cat sat on mat] and [cat lay on mat] is 3 words: P = R = 3/4
    assert rouge_l("the cat sat on the mat", "the cat lay on the mat") == pytest.approx(0.75)
    # word order matters for ROUGE-L, not for token F1
    assert token_f1("mat on sat cat", "cat sat on mat") == 1.0
    assert rouge_l("mat on sat cat", "cat sat on mat") == pytest.approx(0.25)


def test_generation_evaluator_with_forced_outputs(engine):
    tok = CharTokenizer()
    rows = [("Q1 ", "Paris"), ("Q2 ", "seven days"), ("Q3 ", "blue")]
    outputs = {"Q1 ": "Paris", "Q2 ": "seven", "Q3 ": "red"}
    examples = [{"input_ids": [ord(c) for c in p + r], "labels": [-100] * len(p) + [ord(c) for c in r]}
                for p, r in rows]
    model = StubModel(None, generate=lambda ids: [ord(c) for c in outputs[tok.decode(ids)]])
    run = make_run(engine, tok, evaluators=["generation"])
    result = evaluate(engine, run, model, examples, "generation")
    assert result.metrics["exact_match"] == pytest.approx(1 / 3)
    assert result.metrics["token_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)  # "seven" vs "seven days": P 1, R 1/2
    assert result.metrics["rouge_l"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert [r["output"] for r in result.records] == ["Paris", "seven", "red"]
    assert result.records[1] | {"prompt": "Q2 ", "reference": "seven days"} == result.records[1]
    assert result.worst[0]["output"] == "red"


def test_generation_on_tiny_lm_scores_its_own_answer(engine, tiny_lm):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunery.generation import complete
    from tunery.text import prompt_response

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm)
    model = AutoModelForCausalLM.from_pretrained(tiny_lm).eval()
    prompt = "Question: What is 12 plus 30? Answer:"
    prompt_ids = prompt_response(tokenizer, prompt, "x")["input_ids"][:-2]
    own = complete(model, tokenizer, prompt_ids, max_new_tokens=6)
    assert own  # the random model says something; its own words are the reference of row 1
    examples = [prompt_response(tokenizer, prompt, own, add_eos=False), prompt_response(tokenizer, prompt, "zebra")]
    run = make_run(engine, tokenizer, evaluators=[{"name": "generation", "max_new_tokens": 6}])
    result = evaluate(engine, run, model, examples, "generation")
    assert [r["output"] for r in result.records] == [own, own]
    assert result.metrics["exact_match"] == 0.5 and result.records[0]["rouge_l"] == 1.0


# ----------------------------------------------------------------------------- multiple choice


def test_multiple_choice_raw_and_normalised_by_hand(engine, tmp_path):
    # Every position predicts 'a' with p=1/2, ' ' with p=1/4; other characters share the rest.
    probs = torch.full((128,), 0.25 / 126)
    probs[ord("a")], probs[ord(" ")] = 0.5, 0.25
    table = probs.log()
    model = StubModel(lambda ids: table.expand(ids.shape[0], ids.shape[1], 128))
    # " a" = ln(1/4) + ln(1/2) = -2.08 (-1.04 per byte); " aa" = -2.77 (-0.92 per byte): raw prefers
    # the shorter choice, normalised the longer one; "b" is unlikely either way.
    rows = [{"question": "1", "choices": ["a", "aa"], "answer": 0},  # raw right, norm wrong
            {"question": "2", "choices": ["a", "aa"], "answer": 1},  # raw wrong, norm right
            {"question": "3", "choices": ["a", "b"], "answer": "a"},  # both right
            {"question": "4", "context": "c", "choices": ["aa", "a"], "answer": 1}]  # raw right, norm wrong
    data = write_jsonl(tmp_path / "mc.jsonl", rows)
    run = make_run(engine, CharTokenizer(), evaluators=[{"name": "multiple_choice", "data": str(data)}])
    result = evaluate(engine, run, model, [], "multiple_choice")
    assert result.metrics == {"accuracy": 0.75, "accuracy_norm": 0.5, "questions": 4}
    assert result.records[0]["logliks"] == pytest.approx([math.log(0.125), math.log(0.0625)])
    assert [w["question"] for w in result.worst] == ["2"]


def test_multiple_choice_on_tiny_lm_matches_model_loss(engine, tiny_lm):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm)
    model = AutoModelForCausalLM.from_pretrained(tiny_lm).eval()
    run = make_run(engine, tokenizer, evaluators=[{"name": "multiple_choice", "data": str(SAMPLE), "limit": 3}])
    with torch.no_grad():
        result = evaluate(engine, run, model, [], "multiple_choice")
    assert result.metrics["questions"] == 3
    first = json.loads(SAMPLE.read_text().splitlines()[0])
    prompt = tokenizer(f"Question: {first['question']}\nAnswer:")["input_ids"]
    for choice, loglik in zip(first["choices"], result.records[0]["logliks"]):
        cont = tokenizer(" " + choice)["input_ids"]
        with torch.no_grad():
            loss = model(torch.tensor([prompt + cont]), labels=torch.tensor([[-100] * len(prompt) + cont])).loss
        assert loglik == pytest.approx(-float(loss) * len(cont), rel=1e-4)
    right = sum(r["predicted"] == r["answer"] for r in result.records)
    assert result.metrics["accuracy"] == right / 3


def test_multiple_choice_reports_bad_rows_by_line(engine, tmp_path):
    data = write_jsonl(tmp_path / "bad.jsonl", [
        {"question": "ok", "choices": ["a", "b"], "answer": 0},
        {"question": "one choice", "choices": ["a"], "answer": 0},
        {"question": "bad answer", "choices": ["a", "b"], "answer": 5}])
    run = make_run(engine, CharTokenizer(), evaluators=[{"name": "multiple_choice", "data": str(data)}])
    with pytest.raises(DataError) as err:
        evaluate(engine, run, StubModel(None), [], "multiple_choice")
    assert "bad.jsonl:2" in str(err.value) and "bad.jsonl:3" in str(err.value)
    assert len(err.value.problems) == 2


def test_multiple_choice_needs_its_data_file(engine):
    from tunery import ConfigError

    with pytest.raises(ConfigError, match=r"evaluators\[0\]\.data"):
        engine.config({"model": "m", "output_dir": "o", "method": "full", "format": "alpaca",
                       "evaluators": ["multiple_choice"], "data": {"train": "x.jsonl"}})
