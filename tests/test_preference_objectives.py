"""KTO (unpaired), ORPO and SimPO (reference-free): losses, the unpaired formatter, and tiny
policies whose held-out preference margin rises like DPO's."""

from __future__ import annotations

import math

import pytest

from tests.conftest import preference_rows, write_jsonl
from tunery import Engine


def test_losses_match_their_formulas():
    import torch

    from tunery_kto import kto_loss
    from tunery_orpo import orpo_loss
    from tunery_simpo import simpo_loss

    c, r = torch.tensor([-0.5, -1.0]), torch.tensor([-1.0, -0.5])
    assert torch.allclose(simpo_loss(c, r, 2.0, 0.5), -torch.nn.functional.logsigmoid(2.0 * (c - r) - 0.5))
    losses, log_odds = orpo_loss(c, r, 0.1)
    odds = lambda x: x - torch.log1p(-torch.exp(x))  # noqa: E731
    assert torch.allclose(log_odds, odds(c) - odds(r))
    assert torch.allclose(losses, -c - 0.1 * torch.nn.functional.logsigmoid(odds(c) - odds(r)))
    logps, ref, label = torch.tensor([-1.0, -3.0]), torch.tensor([-2.0, -2.0]), torch.tensor([1, 0])
    losses, ratio, z = kto_loss(logps, ref, label, beta=0.5, undesirable_weight=2.0)
    assert z.item() == 0.0 and torch.allclose(ratio, torch.tensor([1.0, -1.0]))
    assert torch.allclose(losses, torch.tensor([1 - 1 / (1 + math.exp(-0.5)), 2 * (1 - 1 / (1 + math.exp(-0.5)))]))


def test_unpaired_formatter_conformance(tiny_lm, tmp_path):
    from transformers import AutoTokenizer

    from tunery.testing.formatters import check_formatter

    tok = AutoTokenizer.from_pretrained(tiny_lm)
    good = [{"prompt": "Hi?", "completion": "Hello.", "label": True},
            {"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Go away."}],
             "kto_tag": False},
            {"prompt": "Hi?", "completion": "Hey.", "label": "false"}]
    bad = [({"prompt": "Hi?", "completion": "x", "label": "maybe"}, "wrong type"),
           ({"prompt": "Hi?", "completion": "x"}, "missing column"),
           ({"messages": [{"role": "user", "content": "Hi?"}], "label": True}, "wrong role")]
    examples = check_formatter(Engine(), "unpaired", tok, tmp_path, good=good, bad=bad,
                               trained=["Hello.<|im_end|>", "Go away.<|im_end|>", "Hey.<|im_end|>"])
    assert [e[0]["label"] for e in examples] == [1, 0, 0]


def test_prompts_formatter_conformance(tiny_lm, tmp_path):
    from transformers import AutoTokenizer

    from tunery.testing.formatters import check_formatter

    tok = AutoTokenizer.from_pretrained(tiny_lm)
    good = [{"prompt": "What is 2+2?", "answer": "4"},
            {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]}]
    bad = [({"prompt": ""}, "empty text"),
           ({"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Yo"}]}, "wrong role"),
           ({"question": "x"}, "missing column")]
    examples = check_formatter(Engine(), "prompts", tok, tmp_path, good=good, bad=bad)
    first = examples[0][0]
    assert first["_columns"] == {"answer": "4"} and first["_prompt"] == "What is 2+2?"
    assert tok.decode(first["input_ids"]).endswith("<|im_start|>assistant\n")


@pytest.fixture(scope="module")
def unpaired_file(tmp_path_factory):
    rows = []
    for pair in preference_rows(32, 0):
        rows += [{"prompt": pair["prompt"], "completion": pair["chosen"], "label": True},
                 {"prompt": pair["prompt"], "completion": pair["rejected"], "label": False}]
    return write_jsonl(tmp_path_factory.mktemp("unpaired") / "train.jsonl", rows)


def margin(engine, target, heldout):
    results = engine.evaluate(str(target), ["reward_accuracy"], [str(heldout)], "preference")
    return results["reward_accuracy"].metrics["margin"]


@pytest.mark.parametrize("method", ["lora", "full"])
def test_kto_raises_the_heldout_margin(method, tiny_lm, unpaired_file, preference_files, tmp_path):
    engine = Engine()
    _, heldout = preference_files
    result = engine.train({
        "model": tiny_lm, "output_dir": str(tmp_path / "run"), "format": "unpaired", "method": method,
        "objective": {"name": "kto", "beta": 0.5}, "evaluators": [],
        "data": {"train": [str(unpaired_file)], "max_length": 64},
        "training": {"max_steps": 8, "learning_rate": 5e-3 if method == "lora" else 1e-3, "bf16": False,
                     "logging_steps": 4},
    })
    before, after = margin(engine, tiny_lm, heldout), margin(engine, result.output_dir, heldout)
    assert after > before + 1.0, (before, after)
    text = (result.output_dir / "train_log.jsonl").read_text()
    assert '"rewards/chosen"' in text and '"kl"' in text


@pytest.mark.parametrize("objective", ["orpo", "simpo"])
def test_reference_free_objectives_raise_the_heldout_margin(objective, tiny_lm, preference_files, tmp_path):
    train, heldout = preference_files
    result = Engine().train({
        "model": tiny_lm, "output_dir": str(tmp_path / objective), "format": "preference", "method": "lora",
        "objective": objective, "data": {"train": [str(train)], "eval": [str(heldout)], "max_length": 64},
        "training": {"max_steps": 8, "learning_rate": 5e-3, "bf16": False, "logging_steps": 4},
    })
    before, after = result.metrics["before"], result.metrics["after"]
    assert after["reward_accuracy/margin"] > before["reward_accuracy/margin"] + 1.0, (before, after)
    assert after["reward_accuracy/accuracy"] >= before["reward_accuracy/accuracy"]
    assert '"rewards/margin"' in (result.output_dir / "train_log.jsonl").read_text()


from tunery.testing import ObjectiveConformance  # noqa: E402

UNPAIRED = [{"prompt": f"What is {i} plus {i}?", "completion": f"It is {2 * i}." if i % 2 else f"Maybe {i + 7}.",
             "label": bool(i % 2)} for i in range(16)]


class TestOrpoConformance(ObjectiveConformance):
    objective, methods = "orpo", ("lora",)


class TestSimpoConformance(ObjectiveConformance):
    objective, methods = "simpo", ("lora",)


class TestKtoConformance(ObjectiveConformance):
    objective, format, rows, methods = "kto", "unpaired", UNPAIRED, ("lora", "full")
