"""Guarded training: non-finite steps, out-of-memory batch sizes, failing saves and failing plugins."""

from __future__ import annotations

import errno
import json
import logging
from pathlib import Path

import pytest

from tunery import Engine, Objective, hookimpl
from tunery.checkpoints import scan
from tunery.errors import TrainingError


class Sabotaged(Objective):
    """The model's own loss, turned NaN on chosen calls, and out of memory above a batch size,
    as a broken model or a small GPU would (trained with method 'full')."""

    name = "sabotaged"

    def __init__(self, nan_calls=(), max_batch=None):
        self.nan_calls, self.max_batch, self.calls = set(nan_calls), max_batch, 0

    def compute_loss(self, model, inputs, options, run):
        import torch

        if self.max_batch and inputs["input_ids"].shape[0] > self.max_batch:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        self.calls += 1
        loss = model(**inputs).loss
        return loss * float("nan") if self.calls in self.nan_calls else loss


def engine_with(objective, *plugins):
    class Objectives:
        @hookimpl
        def tunery_register_objectives(self, registry):
            registry.add(objective)

    return Engine(plugins=[Objectives(), *plugins])


def config(tiny_lm, data, out, **training):
    return {"model": tiny_lm, "method": "full", "objective": "sabotaged", "format": "alpaca", "output_dir": str(out), "seed": 0,
            "evaluators": [], "data": {"train": [str(data)], "limit": 16, "packing": False},
            "training": {"max_steps": 4, "batch_size": 4, "save_steps": 2, "bf16": False, **training}}


def finite(run_dir: Path) -> bool:
    import torch
    from safetensors.torch import load_file

    return all(torch.isfinite(t).all() for t in load_file(run_dir / "model.safetensors").values())


def test_nonfinite_loss_stops_with_the_last_good_checkpoint_intact(tiny_lm, alpaca_file, tmp_path):
    with pytest.raises(TrainingError) as info:
        engine_with(Sabotaged(nan_calls={3})).train(config(tiny_lm, alpaca_file, tmp_path / "run"))
    message = str(info.value)
    assert "training stopped at step 3: the loss is nan" in message
    assert "checkpoint-2" in message and "training.on_nonfinite=skip" in message
    complete, broken = scan(tmp_path / "run" / "checkpoints")
    assert [p.name for p in complete] == ["checkpoint-2"] and not broken
    assert finite(complete[0])


def test_nonfinite_loss_skips_the_step_when_configured(tiny_lm, alpaca_file, tmp_path):
    result = engine_with(Sabotaged(nan_calls={3})).train(
        config(tiny_lm, alpaca_file, tmp_path / "run", on_nonfinite="skip"))
    assert result.metrics["train"]["skipped_steps"] == [3] and result.metrics["train"]["steps"] == 4
    assert finite(result.model_dir)


def test_nonfinite_gradient_norm_is_caught_before_the_optimizer_step(tmp_path):
    import types

    import torch
    from transformers import TrainerControl, TrainerState

    from tunery.guard import NonFiniteGuard

    model = torch.nn.Linear(2, 2)
    model.weight.grad = torch.full((2, 2), float("inf"))
    args = types.SimpleNamespace(output_dir=str(tmp_path))
    with pytest.raises(TrainingError, match="the gradient norm is inf"):
        NonFiniteGuard("stop").on_pre_optimizer_step(args, TrainerState(), TrainerControl(), model=model)
    guard = NonFiniteGuard("skip")
    guard.on_pre_optimizer_step(args, TrainerState(global_step=6), TrainerControl(), model=model)
    assert model.weight.grad is None and guard.skipped == [7]


def test_out_of_memory_search_keeps_the_effective_batch(tiny_lm, alpaca_file, tmp_path):
    searched = engine_with(Sabotaged(max_batch=2)).train(
        config(tiny_lm, alpaca_file, tmp_path / "auto", batch_size=8, auto_batch_size=True))
    assert (searched.metrics["train"]["batch_size"], searched.metrics["train"]["grad_accum"]) == (2, 4)
    manual = engine_with(Sabotaged()).train(config(tiny_lm, alpaca_file, tmp_path / "manual", batch_size=2,
                                                   grad_accum=4))
    import torch
    from safetensors.torch import load_file

    a, b = load_file(searched.model_dir / "model.safetensors"), load_file(manual.model_dir / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_out_of_memory_at_batch_size_one_is_a_clear_error(tiny_lm, alpaca_file, tmp_path):
    class NoMemory(Sabotaged):
        def compute_loss(self, model, inputs, options, run):
            raise RuntimeError("CUDA out of memory.")

    with pytest.raises(TrainingError, match="out of memory even with batch size 1"):
        engine_with(NoMemory()).train(config(tiny_lm, alpaca_file, tmp_path / "run", auto_batch_size=True))


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"),  # as os and safetensors report it
                                   RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed"),
                                   PermissionError(errno.EACCES, "Permission denied")])
def test_a_failing_save_leaves_the_previous_checkpoint_usable(tiny_lm, alpaca_file, tmp_path, monkeypatch, error):
    from transformers import Trainer

    original = Trainer._save_optimizer_and_scheduler

    def save(trainer, output_dir):
        if trainer.state.global_step == 4:
            raise error
        original(trainer, output_dir)

    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", save)
    with pytest.raises(TrainingError) as info:
        engine_with(Sabotaged()).train(config(tiny_lm, alpaca_file, tmp_path / "run"))
    assert "could not save the checkpoint of step 4" in str(info.value)
    assert "the last complete checkpoint is" in str(info.value) and "checkpoint-2" in str(info.value)
    checkpoints = tmp_path / "run" / "checkpoints"
    assert [p.name for p in checkpoints.iterdir()] == ["checkpoint-2"]  # nothing half-written left behind
    if getattr(error, "errno", None) != errno.ENOSPC:  # resume from the intact checkpoint in one case
        return
    monkeypatch.undo()
    resumed = engine_with(Sabotaged()).train({**config(tiny_lm, alpaca_file, tmp_path / "run"), "resume": "auto"})
    assert resumed.metrics["train"]["steps"] == 4 and finite(resumed.model_dir)


def test_a_plugin_failing_in_a_hook_is_named_and_checkpoints_stay_intact(tiny_lm, alpaca_file, tmp_path, caplog):
    class Broken:
        @hookimpl
        def tunery_log(self, record):
            raise ValueError("boom in log")

        @hookimpl
        def tunery_checkpoint_saved(self, path, step):
            raise OSError("boom in checkpoint hook")

    with caplog.at_level(logging.WARNING, logger="tunery"):
        result = engine_with(Sabotaged(), Broken()).train(config(tiny_lm, alpaca_file, tmp_path / "run"))
    assert "plugin 'Broken' failed in tunery_log: ValueError: boom in log" in caplog.text
    assert "plugin 'Broken' failed in tunery_checkpoint_saved: OSError: boom in checkpoint hook" in caplog.text
    complete, broken = scan(tmp_path / "run" / "checkpoints")
    assert [p.name for p in complete] == ["checkpoint-2", "checkpoint-4"] and not broken
    assert json.loads((result.output_dir / "metrics.json").read_text())["train"]["steps"] == 4
