"""One training run, start to finish, as named steps: the flow every plugin takes part in.

check (config, members, training settings: nothing loaded or written yet) -> run folder ->
model source and tokenizer -> data (formatter, extensions on rows) -> base model (+ quantizer)
-> extensions on examples, packing -> method (what trains) -> objective and extensions ->
evaluate (before) -> train (transformers.Trainer) -> save -> evaluate (after) -> outputs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import pickle
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from . import data as datapipe
from . import phases
from .config import RunConfig, dump_yaml
from .context import RunContext, RunResult
from .distributed import is_main_process
from .errors import ConfigError, DataError, IncompatibleError, Interrupted, TrainingError
from .baseline import check_few_shot, few_shot_baseline
from .evaluation import best_checkpoint, check_early_stopping
from .loading import HEAD_MODULES, load_model, load_tokenizer, loading_kwargs
from .members import GENERATIVE_TASKS
from .packing import can_pack, pack, packing_enabled
from .peft_support import trainable_summary
from .membercalls import member_call
from .report import write_reports
from .stopping import stop_at_once

if TYPE_CHECKING:  # pragma: no cover
    from .engine import Engine

log = logging.getLogger("tunery")



# ----------------------------------------------------------------------------- checks


def check_compatibility(run: RunContext) -> None:
    """Refuse impossible combinations before anything loads, naming both parts and a way out."""
    engine, config = run.engine, run.config
    method, objective, formatter, quantizer = run.method, run.objective, run.formatter, run.quantizer
    for key, family in (("method", "methods"), ("objective", "objectives"), ("format", "formatters"),
                        ("quantizer", "quantizers")):
        engine.host.require_available(family, getattr(config, key).name)
    for choice in config.extensions:
        engine.host.require_available("extensions", choice.name)
    if run.data_task not in objective.tasks:
        able = [o.name for o in engine.objectives if run.data_task in o.tasks]
        raise IncompatibleError(
            f"objective '{objective.name}' cannot optimise {run.data_task} data (from formatter '{formatter.name}'); "
            f"objectives that can: {', '.join(able) or 'none installed'}"
        )
    if run.model_task not in method.tasks:
        able = [m.name for m in engine.methods if run.model_task in m.tasks]
        raise IncompatibleError(
            f"method '{method.name}' cannot train a {run.model_task} model (objective '{objective.name}' on "
            f"{run.data_task} data); methods that can: {', '.join(able) or 'none installed'}"
        )
    if quantizer.quantizes and not method.accepts_quantized:
        able = [m.name for m in engine.methods if m.accepts_quantized]
        raise IncompatibleError(
            f"method '{method.name}' cannot train a quantized base (quantizer '{quantizer.name}'); "
            f"use quantizer 'none', or a method that can: {', '.join(able) or 'none installed'}"
        )
    if config.data.packing:
        for part, member in (("method", method), ("objective", objective)):
            if not member.supports_packing:
                raise IncompatibleError(f"{part} '{member.name}' does not support sequence packing; set data.packing=false")
        if run.data_task != "causal_lm":
            raise IncompatibleError(
                f"data.packing works for causal_lm data only; formatter '{formatter.name}' gives {run.data_task} data: "
                "set data.packing=false"
            )
    if config.generation.prompts and run.model_task != "classification" and not run.can_generate:
        part = (f"a {run.model_task} model" if run.model_task not in GENERATIVE_TASKS else
                f"method '{method.name}'" if not method.can_generate else f"objective '{objective.name}'")
        raise IncompatibleError(f"{part} cannot generate text, but generation.prompts is set; "
                                "remove generation.prompts")
    if config.generation.constraints:  # a wrong constraint fails now, not after training
        from .generation import resolve_constraints

        resolve_constraints(engine.constraints, config.generation.constraints, "generation.constraints")
    if config.generation.control and set(config.generation.control) != set(config.data.control):
        raise ConfigError(f"generation.control gives {sorted(config.generation.control)} but data.control is "
                          f"{config.data.control}: give a value for each data.control column")
    for i, (extension, _) in enumerate(run.extensions):
        if run.data_task not in extension.tasks:
            raise IncompatibleError(
                f"extension '{extension.name}' (extensions[{i}]) does not apply to {run.data_task} data; "
                f"it handles: {', '.join(sorted(extension.tasks))}"
            )
    for i, choice in enumerate(config.evaluators):
        evaluator = engine.evaluators.get(choice.name)
        engine.host.require_available("evaluators", choice.name)
        if run.data_task not in evaluator.tasks:
            raise IncompatibleError(
                f"evaluator '{choice.name}' (evaluators[{i}]) cannot measure {run.data_task} data "
                f"from formatter '{formatter.name}'; it handles: {', '.join(sorted(evaluator.tasks))}"
            )
    check_early_stopping(config)
    check_few_shot(config.few_shot, run.data_task)
    if config.training.report_to:
        from .progress import check_trackers

        check_trackers(config.training.report_to)
    member_call(run, "quantizer", "check", config.quantizer.options, run)
    member_call(run, "method", "check", config.method.options, run)
    member_call(run, "objective", "check", config.objective.options, run)
    for extension, options in run.extensions:
        member_call(run, "extension", "check", options, run, member=extension)
    from .training import check_extra

    check_extra(run)


# ----------------------------------------------------------------------------- data


def build_data(run: RunContext, write_problems: bool = True) -> tuple[Sequence[dict], list[dict], dict]:
    """Train examples (a sequence, memory-mapped from the data cache), eval examples (a list) and
    the data summary; bad rows follow ``data.on_bad_row`` (skipped ones are listed in the run
    folder's bad_rows.json when ``write_problems``)."""
    from .datastore import augmented_flags, take
    from .datatools import prepare_data

    cfg = run.config.data
    prepared = prepare_data(run)
    train, evaluation = prepared.train.examples, list(prepared.eval.examples)
    problems, eval_problems = prepared.train.problems, prepared.eval.problems
    train_files = prepared.train.files
    from .datatools import wrong_format_error

    wrong = wrong_format_error(run, prepared.train, cfg.train)
    if wrong is not None:
        raise wrong
    for what, found in (("training", problems), ("evaluation", eval_problems)):
        if found and cfg.on_bad_row == "error":
            raise DataError(datapipe.problems_message(found, what), found)
    if (problems or eval_problems) and write_problems and is_main_process():
        datapipe.write_problems(problems + eval_problems, str(run.output_dir / "bad_rows.json"))
        log.warning("skipped %d bad row(s); see %s", len(problems) + len(eval_problems), run.output_dir / "bad_rows.json")
    if not train:
        raise DataError(f"no usable training example in {', '.join(train_files)}")
    real = [i for i, made in enumerate(augmented_flags(train)) if not made]  # augmented ones are never held out
    n_eval = 0 if evaluation else held_out_count(run, len(real))
    if n_eval:
        order = list(real)
        random.Random(run.config.seed).shuffle(order)
        held = set(order[:n_eval])
        evaluation = list(take(train, sorted(held)))
        train = take(train, [i for i in range(len(train)) if i not in held])
    summary = {
        "train": dataclasses.replace(prepared.train, examples=train).summary(),
        "eval": {**dataclasses.replace(prepared.eval, examples=evaluation).summary(), "held_out_from_train": n_eval,
                 "held_out_auto": bool(n_eval) and cfg.val_split is None},
        "labels": run.label_names, "cached": prepared.cached,
    }
    if cfg.control:  # the values seen in training, recorded so that generate can check --control
        run.state["control"] = {c: sorted({ex["_control"][c] for ex in train}) for c in cfg.control}
        summary["control"] = run.state["control"]
    return train, evaluation, summary


AUTO_VAL_SPLIT, AUTO_EVAL_MAX = 0.1, 200


def held_out_count(run: RunContext, n_train: int) -> int:
    """How many training examples become evaluation data: ``data.val_split`` of them, or, when it
    is unset and evaluators are named without ``data.eval``, 10% (1 to 200) unless that leaves
    fewer than 2 to train on. Evaluators that will not run are warned about."""
    cfg, names = run.config.data, ", ".join(c.name for c in run.config.evaluators)
    if cfg.val_split:
        n_eval = max(1, int(round(n_train * cfg.val_split)))
        if n_eval >= n_train:
            raise DataError(f"data.val_split={cfg.val_split} leaves no training example out of {n_train}")
        return n_eval
    if not names or cfg.eval:
        return 0
    if cfg.val_split == 0:
        log.warning("data.val_split=0 and no data.eval: the evaluators (%s) will not run", names)
        return 0
    n_eval = min(AUTO_EVAL_MAX, max(1, int(round(n_train * AUTO_VAL_SPLIT))))
    if n_train - n_eval < 2:
        log.warning("only %d training example(s) and no data.eval: nothing is held out, the evaluators (%s) "
                    "will not run", n_train, names)
        return 0
    log.info("holding out %d of %d examples for evaluation; data.val_split=0 turns this off", n_eval, n_train)
    return n_eval


FEW_STEPS = 20


def warn_few_steps(run: RunContext, n_examples: int, n_rows: int) -> None:
    """Warn before training when the run plans so few optimizer steps that it may learn nothing,
    saying what would give more."""
    t = run.config.training
    if t.max_steps > 0 or run.total_steps >= FEW_STEPS:
        return
    fixes = [f"raise training.epochs (now {t.epochs:g})"]
    if n_rows < n_examples:
        fixes.append(f"set data.packing=false (packing made {n_examples} examples into {n_rows} rows)")
    if t.batch_size * t.grad_accum > 1:
        fixes.append(f"lower training.batch_size/grad_accum (now {t.batch_size} x {t.grad_accum})")
    log.warning("only %d optimizer step(s) planned: too few to learn much; %s, or set training.max_steps",
                run.total_steps, ", ".join(fixes))


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

    if examples and run.config.evaluators and phase != "during":
        with phases.phase(f"evaluating {phase} training: {', '.join(c.name for c in run.config.evaluators)} "
                       f"on {len(examples)} example(s)"):
            results = run_evaluators(run, model, examples)
    else:
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


def sample_generations(run: RunContext, model: Any, phase: str = "", examples: list[dict] = ()) -> list[dict]:
    """Answers to ``generation.prompts`` (causal LMs and seq2seq models); without prompts, to the
    prompts of the first ``generation.from_eval`` causal-LM evaluation ``examples`` (rendered
    already: no chat template)."""
    gen = run.config.generation
    if not run.can_generate:
        return []
    prompts, chat = gen.prompts, gen.chat
    if not prompts and run.model_task == "causal_lm":
        prompts, chat = held_out_prompts(run, examples, gen.from_eval), False
    if not prompts:
        return []
    from .generation import generate, resolve_constraints

    with phases.phase(f"generating answers to {len(prompts)} prompt(s){f' {phase} training' if phase else ''} "
                   f"(up to {gen.max_new_tokens} new tokens each)"):
        constraints = resolve_constraints(run.engine.constraints, gen.constraints, "generation.constraints")
        outputs = generate(model, run.tokenizer, prompts, max_new_tokens=gen.max_new_tokens, chat=chat,
                           temperature=gen.temperature, constraints=constraints,
                           control={c: gen.control[c] for c in run.config.data.control} if gen.control else None)
    return [{"prompt": p, "output": o} for p, o in zip(prompts, outputs)]


def held_out_prompts(run: RunContext, examples: list[dict], n: int) -> list[str]:
    """The text before the first trained token of the first ``n`` causal-LM ``examples``."""
    prompts = []
    for example in examples:
        if len(prompts) >= n:
            break
        ids, labels = example.get("input_ids"), example.get("labels")
        if not isinstance(labels, list) or not ids:
            continue
        first = next((i for i, label in enumerate(labels) if label != -100), 0)
        if first:
            prompts.append(run.tokenizer.decode(ids[:first]))
    return prompts


# ----------------------------------------------------------------------------- the run


def new_context(engine: Engine, config: RunConfig) -> RunContext:
    """The context of a run of ``config``, before anything is loaded; an unset
    ``training.learning_rate`` becomes the method's default (recorded in config.yaml)."""
    run = RunContext.create(engine, config)
    if config.training.learning_rate is None:
        config.training.learning_rate = run.method.default_learning_rate
        log.info("learning rate %g (method %s's default; set training.learning_rate to change it)",
                 config.training.learning_rate, run.method.name)
    return run


def execute(engine: Engine, config: RunConfig) -> RunResult:
    """Run ``config`` to the end and return its result; lifecycle hooks see every phase."""
    from .rundir import RunFolder

    run = new_context(engine, config)
    with phases.phase("checking the run: plugins, data files, training settings"):
        check_compatibility(run)
        args = _training_arguments(run)
    folder = None
    if is_main_process():  # under torchrun / accelerate launch, the other processes write nothing
        folder = RunFolder.prepare(config, run.method.output(config.method.options))
        (run.output_dir / "config.yaml").write_text(dump_yaml(config))
    try:
        with stop_at_once():
            run.notify("tunery_run_start")
            result = _train(run, args)
    except KeyboardInterrupt as exc:  # a signal outside the training loop, or a second one inside it
        error = interrupted(run, exc)
        if folder:
            folder.finish(error)
        run.notify("tunery_run_failed", error=error)
        raise error from None
    except BaseException as exc:
        if folder:
            folder.finish(exc)
        run.notify("tunery_run_failed", error=exc)
        raise
    if folder:
        folder.finish()
    run.notify("tunery_run_end", result=result)
    return result


def interrupted(run: RunContext, exc: KeyboardInterrupt) -> Interrupted:
    """The error of a run stopped at once by a signal: where it stopped, and how to go on."""
    from .checkpoints import scan

    complete, _ = scan(run.output_dir / "checkpoints")
    how = (f"the last good checkpoint is {complete[-1]}; run the same command with --resume to continue" if complete
           else "nothing was saved to resume from; run the same command again to start afresh")
    return Interrupted(f"stopped at once by {getattr(exc, 'signal', None) or 'SIGINT'}; {how}")


def _training_arguments(run: RunContext) -> Any:
    from .training import training_arguments

    return training_arguments(run)


def _train(run: RunContext, args: Any) -> RunResult:
    started = time.perf_counter()
    config = run.config
    with phases.phase(f"resolving the model {config.model}"):
        run.model_source = run.engine.resolve_model(config.model)
        log.info("model: %s (%s)", run.model_source.path, run.model_source.origin)
        run.tokenizer = load_tokenizer(run.model_source, config.trust_remote_code)
    train, evaluation, data_summary = build_data(run)
    recorded = manifest(run)
    state = {**recorded, "config": config.to_dict(), "plugins_used": _plugins_used(run, recorded["plugins"])}
    from .checkpoints import resume_point

    checkpoint = resume_point(config.resume, run.output_dir / "checkpoints", state, config.resume_force)
    model = run.model = load_base_model(run)
    train = transform_examples(run, model, train, "train")
    evaluation = transform_examples(run, model, evaluation, "eval")
    rows = pack_rows(run, train, data_summary)
    run.total_steps = planned_steps(config, len(rows))
    model = run.model = prepare_model(run, model)
    parameters = trainable_summary(model)
    log.info("trainable parameters: %d of %d (%.4g%%)", parameters["trainable"], parameters["total"], parameters["percent"])
    from .memory import report as memory_report

    expected_memory = memory_report(run, model, rows)
    warn_few_steps(run, len(train), len(rows))

    from .trainer import build_trainer

    trainer = build_trainer(run, model, rows, evaluation, args,
                            evaluate=lambda m, step: evaluate(run, m, evaluation, "during", step=step))
    run.device = trainer.args.device
    trainer.tunery_manifest = state
    resume_counters(run, trainer, checkpoint)
    model = trainer.model
    before = evaluate(run, model, evaluation, "before")
    few_shot = few_shot_baseline(run, model, train, evaluation)
    samples = {"before": sample_generations(run, model, "before", evaluation)}
    output = fit(run, trainer, checkpoint)
    # accelerate leaves a mixed-precision autocast wrapper on forward: remove it so "after" is
    # measured like "before" and the returned model matches what was saved.
    model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    model_dir = run.output_dir / run.method.output(config.method.options)
    if is_main_process():
        save_result(run, model, model_dir)
    after = evaluate(run, model, evaluation, "after")
    samples["after"] = sample_generations(run, model, "after", evaluation)
    from .memory import peak_rss_gib

    metrics = {"train": train_metrics(trainer, output, len(train), checkpoint), "parameters": parameters,
               "before": before, "after": after, "data": data_summary,
               "memory": {"expected_gib": expected_memory, "peak_rss_gib": peak_rss_gib()},
               "wall_seconds": round(time.perf_counter() - started, 3)}
    if few_shot:
        metrics["few_shot"] = few_shot
    _finish_metrics(run, trainer, output, metrics, evaluation)
    if is_main_process():
        write_outputs(run, model_dir, metrics, samples)
        checkpoints = run.output_dir / "checkpoints"
        if checkpoints.is_dir() and not any(checkpoints.iterdir()):
            checkpoints.rmdir()  # no checkpoint was saved: no empty folder left behind
    return RunResult(run.output_dir, model_dir, metrics, samples, model)


def load_base_model(run: RunContext) -> Any:
    """The base model with the head the objective asks for, loaded through the quantizer."""
    from transformers import set_seed

    config = run.config
    keep = list(HEAD_MODULES) + member_call(run, "method", "fully_trained_modules", config.method.options, run)
    set_seed(config.seed)
    started = time.perf_counter()
    quantizer = run.quantizer
    with phases.phase(f"loading the weights ({run.model_task} head"
                      f"{f', quantizer {quantizer.name}' if quantizer.quantizes else ''})"):
        model = load_model(
            run.model_source, run.model_task, label_names=run.label_names if run.num_labels is None else None,
            num_labels=run.num_labels, pad_token_id=run.tokenizer.pad_token_id,
            extra={**loading_kwargs(config.model_loading),
                   **member_call(run, "quantizer", "load_kwargs", config.quantizer.options, keep, run)},
            trust_remote_code=config.trust_remote_code,
        )
        model = member_call(run, "quantizer", "after_load", model, config.quantizer.options)
    log.info("weights loaded in %.1f s", time.perf_counter() - started)
    return model


def transform_examples(run: RunContext, model: Any, examples: Sequence[dict], split: str) -> Sequence[dict]:
    """Each extension's :meth:`~tunery.Extension.transform_examples`, in order; an extension that
    has one gets the split as a list (in memory)."""
    from .members import Extension

    for extension, options in run.extensions:
        own = type(extension).transform_examples is not Extension.transform_examples
        examples = member_call(run, "extension", "transform_examples", list(examples) if own else examples,
                               options, run, split, member=extension)
    return examples


def pack_rows(run: RunContext, train: Sequence[dict], data_summary: dict) -> Sequence[dict]:
    """The training rows: several examples per row where packing is on."""
    if not packing_enabled(run):
        return train
    if can_pack(train):
        rows = pack(train, run.config.data.max_length)
        data_summary["train"]["packed_rows"] = len(rows)
        log.info("packed %d examples into %d rows of up to %d tokens (data.packing=false turns this off)",
                 len(train), len(rows), run.config.data.max_length)
        return rows
    if run.config.data.packing:
        raise IncompatibleError(f"formatter '{run.formatter.name}' gives examples with more than input_ids and "
                                "labels, which cannot be packed; set data.packing=false")
    log.info("not packing: formatter '%s' gives examples with extra keys", run.formatter.name)
    return train


def prepare_model(run: RunContext, model: Any) -> Any:
    """Make the model trainable: the quantizer's preparation, the method (what trains), then the
    objective and each extension."""
    config = run.config
    model = member_call(run, "quantizer", "prepare", model, config.quantizer.options, run)
    model = member_call(run, "method", "prepare", model, config.method.options, run)
    model = member_call(run, "objective", "prepare", model, config.objective.options, run)
    for extension, options in run.extensions:
        model = member_call(run, "extension", "prepare", model, options, run, member=extension)
    return model


def fit(run: RunContext, trainer: Any, checkpoint: Path | None) -> Any:
    """``trainer.train()``, with signals, unsafe checkpoints and failures turned into tunery errors."""
    from .guard import last_checkpoint_note

    stopper = trainer.tunery_stopper
    log.info("training: %d optimizer step(s) of %d row(s) x %d accumulation%s", run.total_steps,
             trainer.args.per_device_train_batch_size, trainer.args.gradient_accumulation_steps,
             f", resuming from {checkpoint}" if checkpoint else "")
    try:
        with stopper.installed(), phases.phase("training"):
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
    return output


def resume_counters(run: RunContext, trainer: Any, checkpoint: Path | None) -> None:
    """A resumed run counts on from the checkpoint's counters (tokens, seconds, losses, skipped
    steps, evaluations), and its train_log.jsonl loses the records after the checkpoint's step."""
    from .checkpoints import saved_progress, step_of
    from .rundir import keep_log_until

    if checkpoint:
        trainer.tunery_before.update(saved_progress(checkpoint))
        trainer.tunery_guard.skipped = list(trainer.tunery_before.get("skipped_steps", []))
        trainer.tunery_during = list(trainer.tunery_before.get("during", []))
    if run.config.resume and is_main_process():
        keep_log_until(run.output_dir / "train_log.jsonl", step_of(checkpoint) if checkpoint else 0)


def train_metrics(trainer: Any, output: Any, n_examples: int, checkpoint: Path | None = None) -> dict:
    """The ``train`` part of metrics.json; a resumed run counts both parts."""
    from .checkpoints import step_of

    totals, earlier = trainer.tunery_progress(), trainer.tunery_before
    seconds = earlier.get("seconds", 0.0) + output.metrics.get("train_runtime", 0.0)
    resumed_at = step_of(checkpoint) if checkpoint else 0
    mean_loss = output.training_loss
    if resumed_at and output.global_step:
        trained_now = output.training_loss * (output.global_step - resumed_at)
        mean_loss = (earlier.get("loss_sum", 0.0) + trained_now) / output.global_step
    metrics = {
        "loss": _last_loss(trainer), "mean_loss": mean_loss, "steps": output.global_step,
        "batch_size": trainer.args.per_device_train_batch_size, "grad_accum": trainer.args.gradient_accumulation_steps,
        "skipped_steps": trainer.tunery_guard.skipped,
        "examples": n_examples, "seconds": round(seconds, 3),
        "tokens": totals["tokens"], "padded_tokens": totals["padded_tokens"],
        "tokens_per_s": round(totals["tokens"] / max(seconds, 1e-9), 2),
        "processes": trainer.args.world_size,
    }
    if resumed_at:
        metrics["resumed_at_step"] = resumed_at
    return metrics


def _finish_metrics(run: RunContext, trainer: Any, output: Any, metrics: dict, evaluation: list[dict]) -> None:
    if trainer.tunery_during:
        metrics["during"] = trainer.tunery_during
    best = best_checkpoint(run, trainer.state)
    if best:
        metrics["best"] = best
        metrics["stopped_early"] = output.global_step < run.total_steps
        log.info("best checkpoint: %s (%s=%.4g at step %s)%s", best["checkpoint"], best["metric"], best["value"],
                 best["step"], "; the saved result is that checkpoint" if best["kept"] else "")
    if not evaluation and run.config.evaluators:
        metrics["note"] = "no evaluation data: set data.val_split or data.eval to get before/after metrics"


def write_outputs(run: RunContext, model_dir: Path, metrics: dict, samples: dict) -> None:
    """metrics.json, samples.json, manifest.json and the reports."""
    with phases.phase("writing metrics.json, report.md, loss.png and the model card"):
        _write_json(run.output_dir / "metrics.json", metrics)
        if samples["before"] or samples["after"]:
            _write_json(run.output_dir / "samples.json", samples)
        _write_json(run.output_dir / "manifest.json", manifest(run))
        write_reports(run, model_dir, metrics, samples)


#: Hooks not called during a run: a plugin implementing only these takes no part in one.
NOT_RUN_HOOKS = ("tunery_resolve_model", "tunery_list_models")


def _plugins_used(run: RunContext, members: dict) -> dict[str, str]:
    """Name -> version of the plugins taking part in the run (recorded in checkpoints; resuming
    compares them): those providing its members (``members``: the manifest's "plugins"), and
    those implementing a hook called during a run. A plugin installed since that does neither
    does not matter."""
    providers = {r["plugin"] for record in members.values() for r in (record if isinstance(record, list) else [record])}
    return {info.name: info.version for info in run.engine.plugins if info.ok and (
        info.name in providers
        or any(h not in NOT_RUN_HOOKS and not h.startswith("tunery_register_") for h in info.hooks))}


def _last_loss(trainer) -> float | None:
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    return losses[-1] if losses else None


def save_result(run: RunContext, model: Any, model_dir: Path) -> None:
    """Save the adapter or model, the tokenizer and the label map into ``model_dir``."""
    with phases.phase(f"saving the {model_dir.name} to {model_dir}"):
        model_dir.mkdir(parents=True, exist_ok=True)
        member_call(run, "method", "save", model, str(model_dir), run.config.method.options, run)
        run.tokenizer.save_pretrained(str(model_dir))
    if run.label_names:
        _write_json(model_dir / "labels.json", run.label_names)
    portable(model_dir, run.config.model)
    run.notify("tunery_checkpoint_saved", path=str(model_dir), step=run.total_steps or 0)


def portable(model_dir: Path, reference: str) -> None:
    """Make a saved result shareable: an adapter names its base by the run's model reference
    (e.g. a hub id), not this machine's cache folder, and every file is readable by all (as the
    umask allows; safetensors writes private files)."""
    adapter_config = model_dir / "adapter_config.json"
    if adapter_config.is_file():
        values = json.loads(adapter_config.read_text())
        values["base_model_name_or_path"] = reference
        adapter_config.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")
    umask = os.umask(0)
    os.umask(umask)
    for path in model_dir.rglob("*"):
        if path.is_file():
            path.chmod(0o666 & ~umask)


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, default=str))
    os.replace(tmp, path)


def _plugin_record(run: RunContext, family: str, name: str) -> dict:
    info = run.engine.host.plugin_of(family, name)
    return {"name": name, "plugin": info.name, "distribution": info.distribution, "version": info.version}


def base_fingerprint(run: RunContext) -> str | None:
    """The base model's content fingerprint (see :func:`tunery.models.fingerprint`)."""
    if run.model_source is None:
        return None
    from .models import fingerprint

    return fingerprint(run.model_source.path, str(run.engine.cache_dir))


def manifest(run: RunContext) -> dict:
    """What a run was made of: versions, plugins, data hashes, seed (``manifest.json``)."""
    import platform
    from importlib import metadata

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    from .checkpoints import model_fingerprint

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
        "model_fingerprint": base_fingerprint(run),
        "task": {"data": run.data_task, "model": run.model_task, "num_labels": run.num_labels,
                 "labels": run.label_names},
        "output": run.method.output(config.method.options),
        "model_files": model_fingerprint(run.model_source.path) if run.model_source else None,
        **({"control": run.state["control"]} if "control" in run.state else {}),
        "plugins": {
            "method": _plugin_record(run, "methods", config.method.name),
            "objective": _plugin_record(run, "objectives", config.objective.name),
            "extensions": [_plugin_record(run, "extensions", c.name) for c in config.extensions],
            "format": _plugin_record(run, "formatters", config.format.name),
            "quantizer": _plugin_record(run, "quantizers", config.quantizer.name),
            "evaluators": [_plugin_record(run, "evaluators", c.name) for c in config.evaluators],
        },
        "data": data_files,
    }
