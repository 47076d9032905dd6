"""DPO: the losses, and a tiny policy whose held-out log-prob margin rises with one model in memory."""

from __future__ import annotations

import gc
import json
import math

import pytest

from tunery import hookimpl


def test_losses_match_their_formulas():
    import torch

    from tunery_dpo import dpo_loss
    from tunery_reward import bradley_terry_loss

    pc, pr, rc, rr = torch.tensor([-10.0, -4.0]), torch.tensor([-12.0, -3.0]), torch.tensor([-11.0, -4.0]), torch.tensor([-11.0, -4.0])
    losses, chosen, rejected = dpo_loss(pc, pr, rc, rr, beta=0.5)
    logits = torch.tensor([2.0, -1.0])  # (pc - pr) - (rc - rr)
    assert torch.allclose(losses, -torch.nn.functional.logsigmoid(0.5 * logits))
    assert torch.allclose(chosen, torch.tensor([0.5, 0.0])) and torch.allclose(rejected, torch.tensor([-0.5, 0.5]))
    same = torch.zeros(3)
    assert torch.allclose(dpo_loss(same, same, same, same, beta=0.1)[0], torch.full((3,), math.log(2)))
    smoothed = dpo_loss(pc, pr, rc, rr, beta=0.5, label_smoothing=0.2)[0]
    assert torch.allclose(smoothed, 0.8 * losses - 0.2 * torch.nn.functional.logsigmoid(-0.5 * logits))
    assert torch.allclose(dpo_loss(pc, pr, rc, rr, beta=0.5, kind="ipo")[0], (logits - 1.0) ** 2)
    assert torch.allclose(dpo_loss(pc, pr, rc, rr, beta=0.5, kind="hinge")[0], torch.relu(1 - 0.5 * logits))
    r_c, r_r = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0])
    assert bradley_terry_loss(r_c, r_r).item() == pytest.approx((math.log1p(math.exp(-1)) + math.log(2)) / 2)
    assert bradley_terry_loss(r_c, r_r, torch.tensor([1.0, 0.0])).item() == pytest.approx(math.log(2))


def test_sequence_logps_sum_only_the_labelled_tokens():
    import torch

    from tunery.preference import sequence_logps

    logits = torch.randn(1, 4, 5)
    labels = torch.tensor([[-100, -100, 3, 1]])
    expected = logits[0, 1].log_softmax(-1)[3] + logits[0, 2].log_softmax(-1)[1]
    assert torch.allclose(sequence_logps(logits, labels), expected.unsqueeze(0))
    assert torch.allclose(sequence_logps(logits, labels, average=True), expected.unsqueeze(0) / 2)


class ModelCounter:
    """Counts the tiny Llama policies alive in the process at the start and during training."""

    def __init__(self):
        self.at_start, self.during = None, []

    @staticmethod
    def count():
        from transformers import LlamaForCausalLM

        gc.collect()
        return sum(1 for o in gc.get_objects() if isinstance(o, LlamaForCausalLM))

    @hookimpl
    def tunery_run_start(self, run):
        self.at_start = self.count()

    @hookimpl
    def tunery_log(self, run, record):
        if "loss" in record:
            self.during.append(self.count())


@pytest.mark.parametrize("adapter", ["lora", "full"])
def test_dpo_raises_the_heldout_margin_with_one_model_in_memory(adapter, tiny_lm, preference_files, tmp_path):
    from tunery import Engine

    counter = ModelCounter()
    engine = Engine(plugins=[counter])
    train, heldout = preference_files
    result = engine.train({
        "model": tiny_lm, "output_dir": str(tmp_path / adapter), "format": "preference",
        "method": adapter, "objective": {"name": "dpo", "beta": 0.5},
        "data": {"train": [str(train)], "eval": [str(heldout)], "max_length": 64},
        "training": {"max_steps": 6, "learning_rate": 5e-3 if adapter == "lora" else 1e-3, "bf16": False,
                     "logging_steps": 3},
    })
    before, after = result.metrics["before"], result.metrics["after"]
    assert after["reward_accuracy/margin"] > before["reward_accuracy/margin"] + 1.0
    assert after["reward_accuracy/accuracy"] >= before["reward_accuracy/accuracy"]
    assert counter.during and all(n == counter.at_start + 1 for n in counter.during)  # no reference copy
    records = [json.loads(line) for line in (result.output_dir / "train_log.jsonl").read_text().splitlines()]
    logged = [r for r in records if "loss" in r]
    assert {"rewards/chosen", "rewards/rejected", "rewards/accuracy", "rewards/margin", "logps/chosen"} <= set(logged[-1])
    assert logged[-1]["rewards/margin"] > 0
    assert (result.output_dir / ("adapter" if adapter == "lora" else "model")).is_dir()
