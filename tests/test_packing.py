"""Sequence packing and the chunked loss compute exactly what one-example-at-a-time training does."""

from __future__ import annotations

import json
import random

import pytest

from tunery.collate import IGNORE_INDEX, Collator
from tunery.packing import pack


def _examples(n=9, seed=0):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = rng.randint(3, 14)
        ids = [rng.randint(4, 500) for _ in range(length)]
        prompt = rng.randint(0, length - 2)
        out.append({"input_ids": ids, "labels": [IGNORE_INDEX] * prompt + ids[prompt:]})
    return out


@pytest.fixture(scope="module")
def lm(tiny_lm):
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return {impl: AutoModelForCausalLM.from_pretrained(tiny_lm, attn_implementation=impl).eval()
            for impl in ("sdpa", "eager")}


def test_pack_keeps_every_token_and_restarts_positions():
    examples = _examples(30)
    rows = pack(examples, max_length=32)
    assert len(rows) < len(examples)
    assert all(len(r["input_ids"]) <= 32 for r in rows)
    assert sorted(t for r in rows for t in r["input_ids"]) == sorted(t for e in examples for t in e["input_ids"])
    row = rows[0]
    starts = [i for i, p in enumerate(row["position_ids"]) if p == 0]
    assert starts[0] == 0 and len(starts) >= 2
    assert all(row["labels"][s] == IGNORE_INDEX for s in starts)  # no prediction across a boundary
    assert pack(examples, 32) == rows  # deterministic


def _summed_one_by_one(model, examples):
    import torch

    total = 0.0
    for ex in examples:
        out = model(input_ids=torch.tensor([ex["input_ids"]]), labels=torch.tensor([ex["labels"]]))
        n = sum(1 for label in ex["labels"][1:] if label != IGNORE_INDEX)
        total += float(out.loss) * n
    return total


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
@pytest.mark.parametrize("flatten", [False, True])
def test_packed_batch_loss_equals_examples_one_by_one(lm, impl, flatten):
    import torch

    model, examples = lm[impl], _examples()
    rows = pack(examples, max_length=40)
    batch = Collator(1, flatten=flatten)(rows)
    assert "attention_mask" not in batch and batch["input_ids"].shape[0] == (1 if flatten else len(rows))
    with torch.no_grad():
        out = model(**batch, use_cache=False)
    n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    assert abs(float(out.loss) * n - _summed_one_by_one(model, examples)) < 1e-4 * max(1.0, n)


def test_chunked_loss_equals_model_loss_with_gradients(lm):
    import torch

    from tunery.loss import chunked_causal_lm_loss, supports_chunked_loss

    model = lm["sdpa"]
    assert supports_chunked_loss(model)
    batch = Collator(1)(_examples(5, seed=1))
    model.zero_grad()
    reference = model(**batch).loss
    reference.backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    loss = chunked_causal_lm_loss(model, batch, chunk_tokens=7)
    loss.backward()
    assert torch.allclose(loss, reference, atol=1e-5)
    assert all(torch.allclose(p.grad, g, atol=1e-5) for p, g in zip(model.parameters(), expected))
    summed = chunked_causal_lm_loss(model, batch, num_items_in_batch=1)
    n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    assert abs(float(summed) - float(reference) * n) < 1e-3


def test_training_run_packs_and_learns(tiny_lm, alpaca_file, tmp_path):
    from tunery import Engine

    config = {"model": tiny_lm, "output_dir": str(tmp_path / "run"), "method": "lora",
              "format": {"name": "alpaca", "template": "alpaca"}, "data": {"train": [str(alpaca_file)], "max_length": 64,
                                                                          "val_split": 0.2},
              "training": {"max_steps": 6, "learning_rate": 5e-3, "bf16": False}}
    result = Engine().train(config)
    summary = result.metrics["data"]["train"]
    assert summary["packed_rows"] < summary["examples"]
    assert result.metrics["after"]["loss/loss"] < result.metrics["before"]["loss/loss"]
    log = [json.loads(line) for line in (result.output_dir / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["tokens"] > 0


def test_packing_refused_for_classification(tiny_encoder, classification_file, tmp_path):
    from tunery import Engine, IncompatibleError

    config = {"model": tiny_encoder, "output_dir": str(tmp_path / "run"), "method": "lora",
              "format": "classification", "data": {"train": [str(classification_file)], "packing": True}}
    with pytest.raises(IncompatibleError, match="data.packing"):
        Engine().train(config)
