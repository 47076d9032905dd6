"""One training run, start to finish: the flow every plugin takes part in.

config -> checks -> model source -> tokenizer -> data -> model (+quantizer) -> method ->
evaluate (before) -> train (transformers.Trainer) -> save -> evaluate (after) -> run folder.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import pickle
import random
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from . import data as datapipe
from .config import RunConfig, dump_yaml
from .distributed import is_main_process, sum_across_processes
from .errors import ConfigError, DataError, IncompatibleError, Interrupted, TrainingError
from .baseline import check_few_shot, few_shot_baseline
from .evaluation import best_checkpoint, check_early_stopping
from .loading import load_model, load_tokenizer
from .packing import can_pack, pack, packing_enabled
from .peft_support import trainable_summary
from .report import write_reports

if TYPE_CHECKING:  # pragma: no cover
    from .engine import Engine
    from .models import ResolvedModel

log = logging.getLogger("tunery")

RUN_FILES = ("adapter", "model", "checkpoints", "metrics.json", "train_log.jsonl", "config.yaml",
             "manifest.json", "samples.json", "bad_rows.json", "report.md", "loss.png", "evaluations", "tensorboard")
HEAD_MODULES = ("classifier", "score", "lm_head")  # never quantized: heads are trained or tied


@dataclasses.dataclass
class RunContext:
    """Everything a plugin may need during a run. Plugins read it; only the core writes it."""

    config: RunConfig
    output_dir: Path
    engine: Engine
    data_task: str
    model_task: str = "causal_lm"
    num_labels: int | None = None
    label_names: list[str] | None = None
    tokenizer: Any = None
    model_source: ResolvedModel | None = None
    total_steps: int | None = None
    device: Any = None
    state: dict = dataclasses.field(default_factory=dict)  # free space for plugins, keyed by plugin name

    # The chosen members, looked up once.
    @property
    def method(self):
        return self.engine.methods.get(self.config.method.name)

    @property
    def formatter(self):
        return self.engine.formatters.get(self.config.format.name)

    @property
    def quantizer(self):
        return self.engine.quantizers.get(self.config.quantizer.name)

    @property
    def quantized(self) -> bool:
        return self.quantizer.quantizes

    def notify(self, hook: str, **kwargs) -> None:
        """Call a lifecycle hook; a plugin that raises is reported by name and the run goes on."""
        self.engine.notify(hook, run=self, **kwargs)

    def batches(self, examples: list[dict], batch_size: int | None = None) -> Iterator[dict]:
        """Padded batches of ``examples`` on the model's device, in order."""
        from .collate import Collator

        collate = Collator(self.tokenizer.pad_token_id)
        size = batch_size or self.config.training.batch_size
        for start in range(0, len(examples), size):
            batch = collate(examples[start:start + size])
            yield {k: v.to(self.device) if self.device is not None else v for k, v in batch.items()}


@dataclasses.dataclass
class RunResult:
    """What a finished run produced."""

    output_dir: Path
    model_dir: Path
    metrics: dict
    samples: dict = dataclasses.field(default_factory=dict)
    model: Any = dataclasses.field(default=None, repr=False)  # the trained model, still in memory


# ----------------------------------------------------------------------------- checks


def check_compatibility(run: RunContext) -> None:
    """Refuse impossible combinations before any weights load, naming both parts and a way out."""
    engine, config = run.engine, run.config
    method, formatter, quantizer = run.method, run.formatter, run.quantizer
    for family, choice in (("methods", config.method), ("formatters", config.format), ("quantizers", config.quantizer)):
        engine.host.require_available(family, choice.name)
    if formatter.task not in method.tasks:
        able = [m.name for m in engine.methods if formatter.task in m.tasks]
        raise IncompatibleError(
            f"method '{method.name}' cannot train {formatter.task} data (from formatter '{formatter.name}'); "
            f"methods that can: {', '.join(able) or 'none installed'}"
        )
    if quantizer.quantizes and not method.accepts_quantized:
        able = [m.name for m in engine.methods if m.accepts_quantized]
        raise IncompatibleError(
            f"method '{method.name}' cannot train a quantized base (quantizer '{quantizer.name}'); "
            f"use quantizer 'none', or a method that can: {', '.join(able) or 'none installed'}"
        )
    if config.data.packing and not method.supports_packing:
        raise IncompatibleError(f"method '{method.name}' does not support sequence packing; set data.packing=false")
    if config.data.packing and run.data_task != "causal_lm":
        raise IncompatibleError(
            f"data.packing works for causal_lm data only; formatter '{formatter.name}' gives {run.data_task} data: "
            "set data.packing=false"
        )
    if config.generation.prompts and formatter.task == "causal_lm" and not method.can_generate:
        raise IncompatibleError(f"method '{method.name}' cannot generate text, but generation.prompts is set; "
                                "remove generation.prompts")
    for i, choice in enumerate(config.evaluators):
        evaluator = engine.evaluators.get(choice.name)
        engine.host.require_available("evaluators", choice.name)
        if formatter.task not in evaluator.tasks:
            raise IncompatibleError(
                f"evaluator '{choice.name}' (evaluators[{i}]) cannot measure {formatter.task} data "
                f"from formatter '{formatter.name}'; it handles: {', '.join(sorted(evaluator.tasks))}"
            )
    check_early_stopping(config)
    check_few_shot(config.few_shot, run.data_task)
    if config.training.report_to:
        from .progress import check_trackers

        check_trackers(config.training.report_to)
    quantizer.check(config.quantizer.options, run)
    method.check(config.method.options, run)


def prepare_output_dir(config: RunConfig) -> Path:
    """The run folder; one that holds another run is only reused with ``overwrite``."""
    out = Path(config.output_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output_dir '{out}' is a file, not a folder")
    existing = [name for name in RUN_FILES if (out / name).exists()]
    if config.resume and config.overwrite:
        raise ConfigError("--resume and --overwrite contradict each other: resuming continues the run in "
                          f"'{out}', overwriting deletes it; drop one of them")
    if existing and not config.resume:
        if not config.overwrite:
            raise ConfigError(
                f"output_dir '{out}' already holds a run ({', '.join(existing)}); "
                "pass --overwrite (overwrite: true) to replace it, or choose another folder"
            )
        for name in existing:
            path = out / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


# ----------------------------------------------------------------------------- data


def build_data(run: RunContext, write_problems: bool = True) -> tuple[list[dict], list[dict], dict]:
    """Train and eval examples plus the data summary; bad rows follow ``data.on_bad_row``
    (skipped ones are listed in the run folder's bad_rows.json when ``write_problems``)."""
    from .datatools import prepare_data

    cfg = run.config.data
    prepared = prepare_data(run)
    train, evaluation = prepared.train.examples, prepared.eval.examples
    problems, eval_problems = prepared.train.problems, prepared.eval.problems
    train_files = prepared.train.files
    for what, found in (("training", problems), ("evaluation", eval_problems)):
        if found and cfg.on_bad_row == "error":
            raise DataError(datapipe.problems_message(found, what), found)
    if (problems or eval_problems) and write_problems and is_main_process():
        datapipe.write_problems(problems + eval_problems, str(run.output_dir / "bad_rows.json"))
        log.warning("skipped %d bad row(s); see %s", len(problems) + len(eval_problems), run.output_dir / "bad_rows.json")
    if not train:
        raise DataError(f"no usable training example in {', '.join(train_files)}")
    if cfg.val_split and not evaluation:
        order = list(range(len(train)))
        random.Random(run.config.seed).shuffle(order)
        n_eval = max(1, int(round(len(train) * cfg.val_split)))
        if n_eval >= len(train):
            raise DataError(f"data.val_split={cfg.val_split} leaves no training example out of {len(train)}")
        held = set(order[:n_eval])
        evaluation = [train[i] for i in sorted(held)]
        train = [ex for i, ex in enumerate(train) if i not in held]
    summary = {
        "train": dataclasses.replace(prepared.train, examples=train).summary(),
        "eval": dataclasses.replace(prepared.eval, examples=evaluation).summary(),
        "labels": run.label_names, "cached": prepared.cached,
    }
    return train, evaluation, summary


def planned_steps(config: RunConfig, n_examples: int) -> int:
    t = config.training
    if t.max_steps > 0:
        return t.max_steps
    per_epoch = math.ceil(n_examples / t.batch_size / t.grad_accum)
    return max(1, math.ceil(per_epoch * t.epochs))


# ----------------------------------------------------------------------------- evaluation


def evaluate(run: RunContext, model: Any, examples: list[dict], phase: str, step: int | None = None) -> dict:
    """Run every configured evaluator on ``examples``; returns ``{"evaluator/metric": value}``
    (plus ``step`` during training). Before and after training, the evaluators' worst examples
    and records go to ``evaluations/<phase>.json``."""
    from .evaluation import details_json, flat_metrics, run_evaluators

    results = run_evaluators(run, model, examples)
    if not results:
        return {}
    metrics = flat_metrics(results)
    if phase == "during":
        metrics["step"] = step
    elif details_json(results) and is_main_process():
        (run.output_dir / "evaluations").mkdir(exist_ok=True)
        _write_json(run.output_dir / "evaluations" / f"{phase}.json", details_json(results))
    run.notify("tunery_evaluation", phase=phase, metrics=metrics)
    return metrics


def sample_generations(run: RunContext, model: Any) -> list[dict]:
    """Answers to ``generation.prompts`` (causal LMs only)."""
    gen = run.config.generation
    if not gen.prompts or run.model_task != "causal_lm" or not run.method.can_generate:
        return []
    from .generation import generate

    outputs = generate(model, run.tokenizer, gen.prompts, max_new_tokens=gen.max_new_tokens,
                       chat=gen.chat, temperature=gen.temperature)
    return [{"prompt": p, "output": o} for p, o in zip(gen.prompts, outputs)]


# ----------------------------------------------------------------------------- training


def bf16_default() -> bool:
    """bf16 autocast where it is fast: CUDA with bf16 support, or a CPU with AVX512-BF16/AMX."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def build_trainer(run: RunContext, model: Any, train: list[dict], evaluation: list[dict]):
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from .checkpoints import SafeCheckpoints
    from .collate import Collator
    from .loss import trainer_loss, use_chunked_loss
    from .packing import needs_flat_batches
    from .evaluation import early_stopping_args, numeric
    from .guard import NonFiniteGuard, StopOnSignal
    from .progress import Progress, place_tracker_logs

    t, config = run.config.training, run.config
    collator = Collator(run.tokenizer.pad_token_id, flatten=needs_flat_batches(model))
    bf16 = bf16_default() if t.bf16 is None else t.bf16
    import torch

    args = dict(
        output_dir=str(run.output_dir / "checkpoints"),
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        learning_rate=t.learning_rate,
        warmup_steps=t.warmup_ratio,  # a float below 1 is a ratio of the total steps
        weight_decay=t.weight_decay,
        lr_scheduler_type=t.lr_scheduler,
        max_grad_norm=t.max_grad_norm,
        optim=t.optim,
        bf16=bf16,
        logging_steps=t.logging_steps,
        save_strategy="steps" if t.save_steps else "no",
        save_steps=t.save_steps or 500,
        save_total_limit=t.save_total_limit,
        report_to=list(t.report_to),
        seed=config.seed,
        data_seed=config.seed,
        disable_tqdm=True,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        train_sampling_strategy="group_by_length" if config.data.group_by_length else "random",
        use_cpu=not torch.cuda.is_available(),
    )
    if t.gradient_checkpointing:
        args["activation_checkpointing"] = True
    if t.auto_batch_size:
        args["per_device_train_batch_size"], args["gradient_accumulation_steps"] = _fit_batch_size(run, model, train)
    unknown = set(t.extra) - set(TrainingArguments.__dataclass_fields__)
    if unknown:
        from .options import closest

        key = sorted(unknown)[0]
        raise ConfigError(
            f"config key 'training.extra.{key}' is not a transformers.TrainingArguments field"
            f"{closest(key, TrainingArguments.__dataclass_fields__)}"
        )
    if t.extra.get("deepspeed"):
        import importlib.util

        if importlib.util.find_spec("deepspeed") is None:
            raise ConfigError("config key 'training.extra.deepspeed' needs the deepspeed package: pip install deepspeed")
        if isinstance(t.extra["deepspeed"], str) and not os.path.isfile(t.extra["deepspeed"]):
            raise ConfigError(f"config key 'training.extra.deepspeed': no DeepSpeed config file '{t.extra['deepspeed']}'")
    evaluating = bool(t.eval_steps and run.config.evaluators)
    if evaluating:
        args.update(eval_strategy="steps", eval_steps=t.eval_steps, **early_stopping_args(config))
    args.update(t.extra)
    try:
        training_args = TrainingArguments(**args)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"invalid training settings: {exc}") from None

    method, options = run.method, run.config.method.options
    chunked = t.chunked_loss and run.model_task == "causal_lm" and use_chunked_loss(training_args, model)
    guard, stopper = NonFiniteGuard(t.on_nonfinite), StopOnSignal()

    class TuneryTrainer(SafeCheckpoints, Trainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            loss = super().training_step(model, inputs, num_items_in_batch)
            guard.note_loss(loss)
            return loss

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if "position_ids" in inputs:  # packed rows: transformers finds their examples only without a KV cache
                inputs = {**inputs, "use_cache": False}
            loss = method.compute_loss(model, inputs, options, run)
            if loss is None and chunked and not return_outputs and "labels" in inputs:
                return trainer_loss(self, model, inputs, num_items_in_batch)
            if loss is None:
                return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                            num_items_in_batch=num_items_in_batch)
            return (loss, None) if return_outputs else loss

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
            """The run's evaluators, every ``training.eval_steps`` (phase "during")."""
            metrics = evaluate(run, self.model, evaluation, "during", step=self.state.global_step)
            self.tunery_during.append(metrics)
            logs = {f"{metric_key_prefix}_{k}": v for k, v in numeric(metrics).items() if k != "step"}
            watched = config.early_stopping.metric
            if watched and f"{metric_key_prefix}_{watched}" not in logs:
                raise ConfigError(f"config key 'early_stopping.metric': the evaluation has no metric '{watched}'; "
                                  f"it has: {', '.join(k for k in metrics if k != 'step') or 'none'} "
                                  "(without evaluation data, set data.eval or data.val_split)")
            self.log(logs)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, logs)
            return logs

    class Reporter(TrainerCallback):
        """Writes train_log.jsonl and forwards each record and checkpoint to the hooks."""

        def __init__(self):
            self.start = time.perf_counter()
            self.log_path = run.output_dir / "train_log.jsonl"

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs:
                return
            tokens = int(sum_across_processes([collator.real_tokens])[0])  # every process takes part
            if not state.is_world_process_zero:
                return
            elapsed = time.perf_counter() - self.start
            record = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4), **logs,
                      "tokens": tokens, "tokens_per_s": round(tokens / max(elapsed, 1e-9), 2),
                      "elapsed_s": round(elapsed, 3)}
            with open(self.log_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            run.notify("tunery_log", record=record)

        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                run.notify("tunery_checkpoint_saved", path=str(path), step=state.global_step)

    callbacks = [*method.callbacks(options, run), Reporter(), Progress(lambda: collator.real_tokens), guard, stopper]
    if config.early_stopping.metric:
        from transformers import EarlyStoppingCallback

        callbacks.append(EarlyStoppingCallback(config.early_stopping.patience, config.early_stopping.threshold))
    trainer = TuneryTrainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=evaluation if evaluating else None,  # our evaluate() reads `evaluation` itself
        data_collator=collator,
        processing_class=run.tokenizer,
        callbacks=callbacks,
    )
    trainer.tunery_during = []
    place_tracker_logs(trainer, run.output_dir / "tensorboard")
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # records go to train_log.jsonl, logging and the hooks
    trainer.tunery_collator = collator
    trainer.tunery_guard, trainer.tunery_stopper = guard, stopper
    return trainer


def _fit_batch_size(run: RunContext, model: Any, train: list[dict]) -> tuple[int, int]:
    """``training.auto_batch_size``: the batch size that fits, with grad_accum raised to match."""
    from accelerate import PartialState

    from .collate import Collator
    from .guard import fit_batch_size

    t, method, options = run.config.training, run.method, run.config.method.options

    def loss_of(model, batch):
        loss = method.compute_loss(model, batch, options, run)
        return model(**batch).loss if loss is None else loss

    size, accum = fit_batch_size(model, train, Collator(run.tokenizer.pad_token_id), loss_of,
                                 t.batch_size, t.grad_accum, PartialState().device)
    if size != t.batch_size:
        log.warning("training.auto_batch_size: batch size %d does not fit; training with batch size %d and "
                    "grad_accum %d (same effective batch of %d)", t.batch_size, size, accum, size * accum)
    return size, accum


def new_context(engine: Engine, config: RunConfig) -> RunContext:
    """The context of a run of ``config``, before anything is loaded."""
    formatter = engine.formatters.get(config.format.name)
    return RunContext(config=config, output_dir=Path(config.output_dir), engine=engine, data_task=formatter.task)


def execute(engine: Engine, config: RunConfig) -> RunResult:
    """Run ``config`` to the end and return its result; lifecycle hooks see every phase."""
    run = new_context(engine, config)
    check_compatibility(run)
    if is_main_process():  # under torchrun / accelerate launch, the other processes write nothing
        run.output_dir = prepare_output_dir(config)
        (run.output_dir / "config.yaml").write_text(dump_yaml(config))
    run.notify("tunery_run_start")
    try:
        result = _train(run)
    except BaseException as exc:
        run.notify("tunery_run_failed", error=exc)
        raise
    run.notify("tunery_run_end", result=result)
    return result


def _train(run: RunContext) -> RunResult:
    from transformers import set_seed

    from .checkpoints import resume_point
    from .guard import last_checkpoint_note

    config, engine = run.config, run.engine
    method, quantizer = run.method, run.quantizer
    started = time.perf_counter()
    run.model_source = engine.resolve_model(config.model)
    run.tokenizer = load_tokenizer(run.model_source, config.trust_remote_code)
    train, evaluation, data_summary = build_data(run)
    rows = train
    if packing_enabled(run):
        if can_pack(train):
            rows = pack(train, config.data.max_length)
            data_summary["train"]["packed_rows"] = len(rows)
        elif config.data.packing:
            raise IncompatibleError(f"formatter '{run.formatter.name}' gives examples with more than input_ids and "
                                    "labels, which cannot be packed; set data.packing=false")
        else:
            log.info("not packing: formatter '%s' gives examples with extra keys", run.formatter.name)
    run.total_steps = planned_steps(config, len(rows))
    run.model_task, run.num_labels = method.model_task(run.data_task)
    state = {**manifest(run), "config": config.to_dict(), "plugins_loaded": _plugins_loaded(run)}
    checkpoint = resume_point(config.resume, run.output_dir / "checkpoints", state, config.resume_force)
    keep = list(HEAD_MODULES) + method.fully_trained_modules(config.method.options, run)
    set_seed(config.seed)
    model = load_model(
        run.model_source, run.model_task, label_names=run.label_names if run.num_labels is None else None,
        num_labels=run.num_labels, pad_token_id=run.tokenizer.pad_token_id,
        extra=quantizer.load_kwargs(config.quantizer.options, keep, run), trust_remote_code=config.trust_remote_code,
    )
    model = quantizer.after_load(model, config.quantizer.options)
    model = quantizer.prepare(model, config.quantizer.options, run)
    model = method.prepare(model, config.method.options, run)
    parameters = trainable_summary(model)
    log.info("trainable parameters: %d of %d (%.4g%%)", parameters["trainable"], parameters["total"], parameters["percent"])
    trainer = build_trainer(run, model, rows, evaluation)
    run.device = trainer.args.device
    model = trainer.model
    trainer.tunery_manifest = state

    before = evaluate(run, model, evaluation, "before")
    few_shot = few_shot_baseline(run, model, train, evaluation)
    samples = {"before": sample_generations(run, model)}
    stopper = trainer.tunery_stopper
    try:
        with stopper.installed():
            output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except KeyboardInterrupt:
        raise
    except pickle.UnpicklingError as exc:
        raise TrainingError(f"checkpoint {checkpoint} holds pickled data other than tensors; refused to load it "
                            f"({exc.args[0].splitlines()[0] if exc.args else exc})") from None
    except (RuntimeError, ValueError) as exc:
        raise TrainingError(f"training failed at step {trainer.state.global_step}: {exc}") from exc
    if stopper.received:
        raise Interrupted(
            f"training stopped by {stopper.received} at step {trainer.state.global_step}; "
            f"{last_checkpoint_note(trainer.args.output_dir)}. Run the same command with --resume to continue"
        )
    # accelerate leaves a mixed-precision autocast wrapper on forward: remove it so "after" is
    # measured like "before" and the returned model matches what was saved.
    model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    model_dir = run.output_dir / method.output(config.method.options)
    if is_main_process():
        save_result(run, model, model_dir)
    after = evaluate(run, model, evaluation, "after")
    samples["after"] = sample_generations(run, model)

    collator = trainer.tunery_collator
    tokens, padded = (int(n) for n in sum_across_processes([collator.real_tokens, collator.padded_tokens]))
    train_metrics = {
        "loss": _last_loss(trainer), "mean_loss": output.training_loss, "steps": output.global_step,
        "batch_size": trainer.args.per_device_train_batch_size, "grad_accum": trainer.args.gradient_accumulation_steps,
        "skipped_steps": trainer.tunery_guard.skipped,
        "examples": len(train), "seconds": round(output.metrics.get("train_runtime", 0.0), 3),
        "tokens": tokens, "padded_tokens": padded,
        "tokens_per_s": round(tokens / max(output.metrics.get("train_runtime", 1e-9), 1e-9), 2),
        "processes": trainer.args.world_size,
    }
    metrics = {"train": train_metrics, "parameters": parameters, "before": before, "after": after, "data": data_summary,
               "wall_seconds": round(time.perf_counter() - started, 3)}
    if few_shot:
        metrics["few_shot"] = few_shot
    if trainer.tunery_during:
        metrics["during"] = trainer.tunery_during
    best = best_checkpoint(run, trainer.state)
    if best:
        metrics["best"] = best
        metrics["stopped_early"] = output.global_step < run.total_steps
        log.info("best checkpoint: %s (%s=%.4g at step %s)%s", best["checkpoint"], best["metric"], best["value"],
                 best["step"], "; the saved result is that checkpoint" if best["kept"] else "")
    if not evaluation and config.evaluators:
        metrics["note"] = "no evaluation data: set data.val_split or data.eval to get before/after metrics"
    if is_main_process():
        _write_json(run.output_dir / "metrics.json", metrics)
        if samples["before"] or samples["after"]:
            _write_json(run.output_dir / "samples.json", samples)
        _write_json(run.output_dir / "manifest.json", manifest(run))
        write_reports(run, model_dir, metrics, samples)
    return RunResult(run.output_dir, model_dir, metrics, samples, model)


def _plugins_loaded(run: RunContext) -> dict[str, str]:
    """Name -> version of every loaded plugin (recorded in checkpoints; resuming compares them)."""
    return {info.name: info.version for info in run.engine.plugins if info.ok}


def _last_loss(trainer) -> float | None:
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    return losses[-1] if losses else None


def save_result(run: RunContext, model: Any, model_dir: Path) -> None:
    """Save the adapter or model, the tokenizer and the label map into ``model_dir``."""
    model_dir.mkdir(parents=True, exist_ok=True)
    run.method.save(model, str(model_dir), run.config.method.options, run)
    run.tokenizer.save_pretrained(str(model_dir))
    if run.label_names:
        _write_json(model_dir / "labels.json", run.label_names)
    run.notify("tunery_checkpoint_saved", path=str(model_dir), step=run.total_steps or 0)


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, default=str))
    os.replace(tmp, path)


def _plugin_record(run: RunContext, family: str, name: str) -> dict:
    info = run.engine.host.plugin_of(family, name)
    return {"name": name, "plugin": info.name, "distribution": info.distribution, "version": info.version}


def manifest(run: RunContext) -> dict:
    """What a run was made of: versions, plugins, data hashes, seed (``manifest.json``)."""
    import platform
    from importlib import metadata

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    config = run.config
    data_files = {
        split: [{"file": f, "sha256": datapipe.file_digest(f)} for f in datapipe.expand_paths(specs)]
        for split, specs in (("train", config.data.train), ("eval", config.data.eval)) if specs
    }
    return {
        "tunery": version("tunery"),
        "python": platform.python_version(),
        **{lib: version(lib) for lib in ("torch", "transformers", "peft", "datasets", "accelerate")},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seed": config.seed,
        "config_sha256": config.digest(),
        "model": dataclasses.asdict(run.model_source) if run.model_source else None,
        "task": {"data": run.data_task, "model": run.model_task, "num_labels": run.num_labels,
                 "labels": run.label_names},
        "output": run.method.output(config.method.options),
        "plugins": {
            "method": _plugin_record(run, "methods", config.method.name),
            "format": _plugin_record(run, "formatters", config.format.name),
            "quantizer": _plugin_record(run, "quantizers", config.quantizer.name),
            "evaluators": [_plugin_record(run, "evaluators", c.name) for c in config.evaluators],
        },
        "data": data_files,
    }
