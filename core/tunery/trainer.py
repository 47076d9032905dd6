"""The trainer of a run: ``transformers.Trainer`` composing the run's objective and extensions
with tunery's safe checkpoints, guards and reporting.

The objective gives the loss of a batch (or the model's own loss, computed in chunks for a
causal LM) and may own the training step; each extension wraps the loss of the ones before it
and may supply optimizer parameter groups and callbacks. Imported only when a run trains.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
from transformers import EarlyStoppingCallback, Trainer, TrainerCallback
from transformers.trainer_callback import PrinterCallback

from .checkpoints import SafeCheckpoints
from .collate import Collator
from .distributed import sum_across_processes
from .errors import ConfigError
from .evaluation import numeric
from .guard import NonFiniteGuard, StopOnSignal
from .guard import fit_batch_size as search_batch_size
from .loss import trainer_loss, use_chunked_loss
from .members import Extension
from .packing import needs_flat_batches
from .progress import Progress, place_tracker_logs

if TYPE_CHECKING:  # pragma: no cover
    from .context import RunContext

log = logging.getLogger("tunery")


def composed_loss(run: RunContext, trainer: Trainer, num_items_in_batch: Any, chunked: bool) -> Callable:
    """The loss of a batch: the objective's (or the model's own), wrapped by each extension in
    order. Returns ``loss(model, inputs, return_outputs=False)``."""
    objective, objective_options = run.objective, run.config.objective.options

    def own_loss(model, inputs, return_outputs=False):
        loss = objective.compute_loss(model, inputs, objective_options, run)
        if loss is not None:
            return (loss, None) if return_outputs else loss
        if chunked and not return_outputs and "labels" in inputs:
            return trainer_loss(trainer, model, inputs, num_items_in_batch)
        return Trainer.compute_loss(trainer, model, inputs, return_outputs=return_outputs,
                                    num_items_in_batch=num_items_in_batch)

    def wrap(extension, options, inner):
        def loss(model, inputs, return_outputs=False):
            value = extension.compute_loss(inner, model, inputs, options, run)
            return (value, None) if return_outputs else value

        return loss

    loss = own_loss
    for extension, options in run.extensions:
        if type(extension).compute_loss is not Extension.compute_loss:
            loss = wrap(extension, options, loss)
    return loss


class TuneryTrainer(SafeCheckpoints, Trainer):
    """``transformers.Trainer`` with the run's objective, extensions, guards and evaluators."""

    def __init__(self, *args, run: RunContext, chunked: bool, evaluate: Callable, **kwargs):
        super().__init__(*args, **kwargs)
        self.tunery_run, self.tunery_chunked, self.tunery_evaluate = run, chunked, evaluate
        self.tunery_guard = next(cb for cb in self.callback_handler.callbacks if isinstance(cb, NonFiniteGuard))
        self.tunery_during: list[dict] = []

    def train(self, *args, **kwargs):
        try:
            return super().train(*args, **kwargs)
        finally:  # a failed or interrupted run leaves neither bf16 frozen weights nor their spill file
            frozen = self._frozen_bf16()
            if frozen:
                frozen.restore()

    def _save_checkpoint(self, model, trial):
        frozen = self._frozen_bf16()
        adapter_only = hasattr(self.model, "peft_config")  # a peft checkpoint holds no frozen weight
        with frozen.float32_weights() if frozen and not adapter_only else contextlib.nullcontext():
            return super()._save_checkpoint(model, trial)

    def _frozen_bf16(self) -> FrozenBf16 | None:
        return next((cb for cb in self.callback_handler.callbacks if isinstance(cb, FrozenBf16)), None)

    def training_step(self, model, inputs, num_items_in_batch=None):
        def step(model, inputs):
            return Trainer.training_step(self, model, inputs, num_items_in_batch)

        run = self.tunery_run
        loss = run.objective.training_step(step, model, inputs, run.config.objective.options, run)
        self.tunery_collator.trained()
        self.tunery_guard.note_loss(loss)
        return loss

    def tunery_progress(self) -> dict:
        """The run's counters so far, both parts of a resumed run together (saved in each checkpoint)."""
        before, collator = self.tunery_before, self.tunery_collator
        tokens, padded = (int(n) for n in sum_across_processes([collator.real_tokens, collator.padded_tokens]))
        losses = getattr(self, "_total_loss_scalar", 0.0) + float(getattr(self, "_tr_loss", 0.0))
        return {"tokens": before.get("tokens", 0) + tokens, "padded_tokens": before.get("padded_tokens", 0) + padded,
                "seconds": before.get("seconds", 0.0) + time.perf_counter() - self.tunery_reporter.start,
                "loss_sum": before.get("loss_sum", 0.0) + losses, "skipped_steps": self.tunery_guard.skipped,
                "during": self.tunery_during}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if "position_ids" in inputs:  # packed rows: transformers finds their examples only without a KV cache
            inputs = {**inputs, "use_cache": False}
        return composed_loss(self.tunery_run, self, num_items_in_batch, self.tunery_chunked)(model, inputs, return_outputs)

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            groups = next((g for ext, opts in self.tunery_run.extensions
                           if (g := ext.parameter_groups(self.model, opts, self.tunery_run)) is not None), None)
            if groups is not None:
                optimizer_cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(self.args, self.model)
                self.optimizer = optimizer_cls(groups, **kwargs)
        return super().create_optimizer(model)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        """The run's evaluators, every ``training.eval_steps`` (phase "during")."""
        metrics = self.tunery_evaluate(self.model, self.state.global_step)
        self.tunery_during.append(metrics)
        logs = {f"{metric_key_prefix}_{k}": v for k, v in numeric(metrics).items() if k != "step"}
        watched = self.tunery_run.config.early_stopping.metric
        if watched and f"{metric_key_prefix}_{watched}" not in logs:
            raise ConfigError(f"config key 'early_stopping.metric': the evaluation has no metric '{watched}'; "
                              f"it has: {', '.join(k for k in metrics if k != 'step') or 'none'} "
                              "(without evaluation data, set data.eval or data.val_split)")
        self.log(logs)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, logs)
        return logs


class SelectiveCheckpointing(TrainerCallback):
    """``training.gradient_checkpointing`` as a share or number of layers: after the Trainer has
    switched checkpointing on for every decoder layer, switch it back off for the others."""

    def __init__(self, setting: float):
        self.setting = setting

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        from transformers.modeling_layers import GradientCheckpointingLayer

        from .training import checkpointed

        layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
        chosen = checkpointed(self.setting, len(layers))
        for layer, on in zip(layers, chosen):
            layer.gradient_checkpointing = on
        log.info("gradient checkpointing: %d of %d layers", sum(chosen), len(layers))


class FrozenBf16(TrainerCallback):
    """``training.bf16_frozen``: while training with bf16 autocast, the frozen weights of linear
    layers are held in bf16 -- the dtype autocast rounds them to for every product anyway -- so
    neither their float32 copies nor the bf16 casts autocast keeps for the backward pass take
    memory; the products are the same. Weights that bf16 holds exactly come back by upcasting at
    the end; the float32 originals of the others wait in a file in ``folder`` meanwhile, so the
    model after training is exactly the base plus what was trained."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.cast: dict[str, Any] = {}
        self.file: Path | None = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        from safetensors.torch import save_file

        self.cast = frozen_linears(model)
        inexact = {name: m.weight.data for name, m in self.cast.items()
                   if not torch.equal(m.weight.data, m.weight.data.to(torch.bfloat16).float())}
        if inexact:
            self.file = self.folder / ".tunery-frozen-fp32.safetensors"
            save_file({n: w.cpu() for n, w in inexact.items()}, str(self.file))
        self._to_bf16()
        if self.cast:
            log.info("training.bf16_frozen: %d frozen linear weights held in bf16 while training", len(self.cast))

    def on_train_end(self, args, state, control, **kwargs):
        self.restore()

    def restore(self, keep: bool = False) -> None:
        """Put the float32 weights back (``keep``: and keep the state to cast them again);
        nothing to do when they are back already."""
        from safetensors import safe_open

        saved = {}
        if self.file is not None:
            with safe_open(str(self.file), "pt") as f:
                saved = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (safe_open is no mapping)
            if not keep:
                self.file.unlink()
                self.file = None
        for name, module in self.cast.items():
            weight = module.weight.data
            if weight.dtype == torch.bfloat16:
                module.weight.data = saved[name].to(weight.device) if name in saved else weight.float()
        if not keep:
            self.cast = {}

    def _to_bf16(self) -> None:
        for module in self.cast.values():
            module.weight.data = module.weight.data.to(torch.bfloat16)

    @contextlib.contextmanager
    def float32_weights(self):
        """The float32 weights in place for a while (a checkpoint that saves the whole model)."""
        if not self.cast:
            yield
            return
        self.restore(keep=True)
        try:
            yield
        finally:
            self._to_bf16()


def frozen_linears(model: Any) -> dict[str, Any]:
    """The ``torch.nn.Linear`` modules of ``model`` (by name) with a frozen float32 weight that no
    other module shares (a tied output head shares the input embeddings), but not the output
    head: the chunked loss runs it outside the model's forward, where autocast is off."""
    counts: dict[int, int] = {}
    for module in model.modules():
        for param in module.parameters(recurse=False):
            counts[id(param)] = counts.get(id(param), 0) + 1
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    heads = {id(m) for m in head.modules()} if head is not None else set()
    return {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and id(m) not in heads
            and not m.weight.requires_grad and m.weight.dtype == torch.float32 and counts[id(m.weight)] == 1}


class Reporter(TrainerCallback):
    """Writes train_log.jsonl and forwards each record and checkpoint to the hooks."""

    def __init__(self, run: RunContext, collator: Collator, before: dict):
        self.run, self.collator = run, collator
        self.before = before  # the counters of the part of the run before a resume
        self.start = time.perf_counter()
        self.log_path = run.output_dir / "train_log.jsonl"

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return
        tokens = int(sum_across_processes([self.collator.real_tokens])[0])  # every process takes part
        if not state.is_world_process_zero:
            return
        elapsed = time.perf_counter() - self.start
        record = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4), **logs,
                  "tokens": self.before.get("tokens", 0) + tokens, "tokens_per_s": round(tokens / max(elapsed, 1e-9), 2),
                  "elapsed_s": round(self.before.get("seconds", 0.0) + elapsed, 3)}
        with open(self.log_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        self.run.notify("tunery_log", record=record)

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            self.run.notify("tunery_checkpoint_saved", path=str(path), step=state.global_step)


def build_trainer(run: RunContext, model: Any, train: list[dict], evaluation: list[dict], args: Any,
                  evaluate: Callable) -> TuneryTrainer:
    """The trainer of a run. ``args`` are its TrainingArguments; ``evaluate(model, step)`` runs
    the evaluators during training and returns their metrics."""
    t, config = run.config.training, run.config
    collator = Collator(run.tokenizer.pad_token_id, flatten=needs_flat_batches(model), count_when_trained=True)
    before: dict = {}
    if t.auto_batch_size:
        size, accum = fit_batch_size(run, model, train)
        args = dataclasses.replace(args, per_device_train_batch_size=size, gradient_accumulation_steps=accum)
    chunked = (t.chunked_loss and run.model_task == "causal_lm" and use_chunked_loss(args, model)
               and not any(ext.needs_logits for ext, _ in run.extensions))
    callbacks = [*run.method.callbacks(config.method.options, run),
                 *run.objective.callbacks(config.objective.options, run),
                 *(cb for ext, opts in run.extensions for cb in ext.callbacks(opts, run)),
                 Reporter(run, collator, before), Progress(lambda: collator.real_tokens),
                 NonFiniteGuard(t.on_nonfinite), StopOnSignal()]
    if t.bf16_frozen and args.bf16 and not (args.fsdp or args.deepspeed) and not run.quantizer.quantizes:
        callbacks.append(FrozenBf16(run.output_dir))
    if not isinstance(t.gradient_checkpointing, bool):
        callbacks.append(SelectiveCheckpointing(t.gradient_checkpointing))
    if config.early_stopping.metric:
        callbacks.append(EarlyStoppingCallback(config.early_stopping.patience, config.early_stopping.threshold))
    trainer = TuneryTrainer(
        model=model, args=args, train_dataset=train,
        eval_dataset=evaluation if args.eval_strategy != "no" else None,  # evaluate() reads the examples itself
        data_collator=collator, processing_class=run.tokenizer, callbacks=callbacks,
        run=run, chunked=chunked, evaluate=evaluate,
    )
    place_tracker_logs(trainer, run.output_dir / "tensorboard")
    trainer.remove_callback(PrinterCallback)  # records go to train_log.jsonl, logging and the hooks
    trainer.tunery_collator, trainer.tunery_before = collator, before
    trainer.tunery_reporter = next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, Reporter))
    trainer.tunery_stopper = next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, StopOnSignal))
    return trainer


def fit_batch_size(run: RunContext, model: Any, train: list[dict]) -> tuple[int, int]:
    """``training.auto_batch_size``: the batch size that fits, with grad_accum raised to match."""
    from accelerate import PartialState

    t, objective, options = run.config.training, run.objective, run.config.objective.options

    def loss_of(model, batch):
        loss = objective.compute_loss(model, batch, options, run)
        return model(**batch).loss if loss is None else loss

    size, accum = search_batch_size(model, train, Collator(run.tokenizer.pad_token_id), loss_of,
                                    t.batch_size, t.grad_accum, PartialState().device)
    if size != t.batch_size:
        log.warning("training.auto_batch_size: batch size %d does not fit; training with batch size %d and "
                    "grad_accum %d (same effective batch of %d)", t.batch_size, size, accum, size * accum)
    return size, accum
