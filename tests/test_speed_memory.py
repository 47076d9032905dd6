"""Memory options of training: selective activation checkpointing and bf16 frozen weights."""

from __future__ import annotations

import json

import pytest

from tunery import Engine
from tunery.errors import ConfigError
from tunery.training import checkpointed


def test_checkpointed_layers_spread_a_share_or_number_evenly():
    assert checkpointed(True, 4) == [True] * 4 and checkpointed(False, 4) == [False] * 4
    assert checkpointed(0.5, 4) == [False, True, False, True]
    assert sum(checkpointed(0.75, 30)) == 22 and sum(checkpointed(10, 30)) == 10
    assert checkpointed(8, 4) == [True] * 4  # more layers than the model has: all of them


@pytest.mark.parametrize("value", [1.5, -0.5, 2.5, "some"])
def test_a_bad_checkpointing_share_is_refused_with_the_key(tiny_lm, alpaca_file, tmp_path, value):
    with pytest.raises(ConfigError, match="training.gradient_checkpointing"):
        Engine().config({"model": tiny_lm, "output_dir": str(tmp_path), "method": "lora", "format": "alpaca",
                         "data": {"train": [str(alpaca_file)]}, "training": {"gradient_checkpointing": value}})


def _lora(folder, layers):
    """A tiny Llama of ``layers`` layers with LoRA (non-zero B: the adapters change the output)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tunery.testing.tiny import build_causal_lm

    model = AutoModelForCausalLM.from_pretrained(build_causal_lm(folder, layers=layers, with_tokenizer=False))
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM",
                                             init_lora_weights=False))
    model.train()
    return model


def _loss_grads_saved(model, batch):
    """Loss, LoRA gradients and the bytes the autograd graph saved for the backward pass."""
    import torch

    saved = []
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def pack(t):
        if t.untyped_storage().data_ptr() not in weights:  # a weight saved as it is costs nothing
            saved.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(**batch).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    return loss.detach(), grads, sum(saved)


def test_selective_checkpointing_gives_the_same_loss_and_gradients_for_less_memory(tmp_path):
    import torch

    from tunery.trainer import SelectiveCheckpointing

    model = _lora(tmp_path, layers=4)
    torch.manual_seed(1)
    ids = torch.randint(3, 100, (2, 48))
    batch = {"input_ids": ids, "labels": ids, "use_cache": False}
    results = {}
    for setting in (False, 0.5, True):
        if setting is False:
            model.activation_checkpointing_disable()
        else:
            model.activation_checkpointing_enable()
            SelectiveCheckpointing(setting).on_train_begin(None, None, None, model=model)
        results[setting] = _loss_grads_saved(model, batch)
    flags = [m.gradient_checkpointing for m in model.base_model.model.model.layers]
    assert flags == [True] * 4  # the last setting: every layer
    (loss0, grads0, none), (loss5, grads5, half), (loss1, grads1, every) = results.values()
    assert torch.allclose(loss0, loss5) and torch.allclose(loss0, loss1)
    for name in grads0:
        assert torch.allclose(grads0[name], grads5[name], atol=1e-6), name
        assert torch.allclose(grads0[name], grads1[name], atol=1e-6), name
    assert every < half < none


def test_frozen_bf16_weights_give_autocasts_products_and_come_back_exactly(tmp_path):
    import torch

    from tunery.trainer import FrozenBf16, frozen_linears

    model = _lora(tmp_path / "model", layers=2)
    linears = frozen_linears(model)
    assert len(linears) == 2 * 7 and all("lora_" not in n for n in linears)  # 7 per layer, not the head
    # half the weights already hold bf16 values exactly (as a bf16 checkpoint loaded in float32)
    names = sorted(linears)
    for name in names[::2]:
        linears[name].weight.data = linears[name].weight.data.to(torch.bfloat16).float()
    original = {n: m.weight.detach().clone() for n, m in linears.items()}
    torch.manual_seed(1)
    ids = torch.randint(3, 100, (2, 32))
    batch = {"input_ids": ids, "labels": ids, "use_cache": False}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss32, grads32, saved32 = _loss_grads_saved(model, batch)
    folder = tmp_path / "run"
    folder.mkdir()
    callback = FrozenBf16(folder)
    callback.on_train_begin(None, None, None, model=model)
    assert all(m.weight.dtype == torch.bfloat16 for m in linears.values())
    assert (folder / ".tunery-frozen-fp32.safetensors").is_file()  # the originals bf16 cannot hold
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss16, grads16, saved16 = _loss_grads_saved(model, batch)
    callback.on_train_end(None, None, None)
    assert torch.equal(loss32, loss16)  # the very same products
    for name in grads32:
        assert torch.equal(grads32[name], grads16[name]), name
    assert saved16 < saved32  # no bf16 copies of the weights kept for the backward pass
    for name, module in linears.items():
        assert module.weight.dtype == torch.float32 and torch.equal(module.weight, original[name]), name
    assert not list(folder.iterdir())


def test_lora_in_bf16_with_frozen_bf16_weights_learns_and_reloads_identically(tiny_lm, alpaca_file, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    config = {"model": tiny_lm, "output_dir": str(tmp_path / "run"), "method": {"name": "lora", "r": 4},
              "format": "alpaca", "data": {"train": [str(alpaca_file)], "val_split": 0.2},
              "training": {"max_steps": 8, "learning_rate": 0.01, "bf16": True}}
    result = Engine().train(config)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["after"]["loss/loss"] < metrics["before"]["loss/loss"]
    assert all(p.dtype == torch.float32 for p in result.model.parameters())
    # the model after training is the base, exactly, plus the adapter that was saved
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_lm), result.model_dir)
    trained = dict(result.model.named_parameters())
    assert set(trained) == set(dict(reloaded.named_parameters()))
    for name, param in reloaded.named_parameters():
        assert torch.equal(trained[name], param), name
    assert not list((tmp_path / "run").glob(".tunery-frozen-*"))


def _bench():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "sft_speed.py"
    spec = importlib.util.spec_from_file_location("sft_speed", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _result(tok_s, rss, **extra):
    return {"tokens_per_s": tok_s, "train_seconds": 10.0, "wall_seconds": 20.0, "peak_rss_mb": rss,
            "real_tokens": 1000, "padded_tokens": 1000, "steps": 5, "final_loss": 1.5, "eval_loss": 1.6, **extra}


def test_the_speed_benchmark_prints_ratios_mfu_and_the_length_table():
    import argparse

    bench = _bench()
    record = {"precision": "bf16", "n_params": 1_000_000_000, "matmul": {"bf16_gflops": 100.0, "fp32_gflops": 50.0},
              "results": {"baseline-fp32": [_result(100.0, 4000.0, cuda_peak_mb=9000.0)],
                          "trl-packing": [_result(200.0, 2000.0, cuda_peak_mb=8000.0)],
                          "defaults": [_result(500.0, 1000.0, cuda_peak_mb=5000.0)]}}
    text = bench.table(record, argparse.Namespace(gpu=True, peak_tflops=10.0))
    row = next(line for line in text.splitlines() if line.startswith("| defaults"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # × fp32 plain, × TRL, × RSS plain, × RSS TRL; MFU = 4 · 1e9 · 500 / 10e12 = 20%; CUDA peak
    assert cells[2:4] == ["5.00", "2.50"] and cells[7:9] == ["0.25", "0.50"]
    assert cells[13] == "20.0" and cells[14] == "5000"
    cpu = bench.table(record, argparse.Namespace(gpu=False, peak_tflops=10.0))
    row = next(line for line in cpu.splitlines() if line.startswith("| defaults"))
    assert row.strip("|").split("|")[13].strip() == "2000.0"  # 4 · 1e9 · 500 / 100 GFLOP/s (the faster dtype)
    lengths = bench.length_table([{"length": 256, "real_tokens": 250, "steps": 1, "peak_rss_mb": 1000.0, "tokens_per_s": 9.0},
                                  {"length": 1024, "real_tokens": 1000, "steps": 1, "peak_rss_mb": 1750.0,
                                   "tokens_per_s": 8.0}])
    assert "| 1024 | 1000 | 1750 | 750 | 1000 | 8.0 |" in lengths


def test_the_memory_estimate_counts_only_the_checkpointed_layers(tmp_path):
    from tunery.memory import estimate

    model = _lora(tmp_path, layers=4)
    none, half, every = (estimate(model, 2, 64, setting)["activations"] for setting in (False, 0.5, True))
    assert every < half < none


def test_frozen_bf16_checkpoints_hold_the_float32_weights_and_a_failed_run_leaves_no_spill(tiny_lm, alpaca_file,
                                                                                        tmp_path):
    """A method that saves the whole model (freeze) checkpoints the exact float32 frozen weights,
    not their bf16 stand-ins; a run that fails mid-training restores them and removes the spill."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from tunery import Extension, hookimpl
    from tunery.errors import TrainingError

    base = {n: p.detach().clone() for n, p in AutoModelForCausalLM.from_pretrained(tiny_lm).named_parameters()}
    config = {"model": tiny_lm, "output_dir": str(tmp_path / "run"), "method": {"name": "freeze", "last_n": 1},
              "format": "alpaca", "data": {"train": [str(alpaca_file)]}, "evaluators": [],
              "training": {"max_steps": 4, "save_steps": 2, "learning_rate": 0.01, "bf16": True}}
    result = Engine().train(config)
    saved = load_file(str(next((tmp_path / "run" / "checkpoints").glob("checkpoint-2")) / "model.safetensors"))
    frozen = [n for n, p in result.model.named_parameters() if not p.requires_grad and n.endswith("proj.weight")]
    assert frozen and all(torch.equal(saved[n], base[n]) for n in frozen)
    assert all(torch.equal(dict(result.model.named_parameters())[n], base[n]) for n in frozen)

    class FailAtStep3(Extension):
        name = "fail-at-3"
        calls = 0

        def compute_loss(self, inner, model, inputs, options, run):
            FailAtStep3.calls += 1
            if FailAtStep3.calls == 3:
                raise RuntimeError("injected failure")
            return inner(model, inputs)

    class Plugin:
        @hookimpl
        def tunery_register_extensions(self, registry):
            registry.add(FailAtStep3())

    with pytest.raises(TrainingError, match="injected failure"):
        Engine(plugins=[Plugin()]).train({**config, "output_dir": str(tmp_path / "failed"), "extensions": ["fail-at-3"],
                                          "training": {**config["training"], "save_steps": None}})
    assert not list((tmp_path / "failed").rglob(".tunery-frozen-*"))
