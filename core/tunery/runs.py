"""Loading what a run produced (or any model) back for inference: generate, merge, eval, score."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from .errors import ConfigError, DataError, IncompatibleError
from .loading import load_model, load_tokenizer, loading_kwargs, task_of
from .members import GENERATIVE_TASKS
from .models import ResolvedModel

log = logging.getLogger("tunery")

if TYPE_CHECKING:  # pragma: no cover
    from .config import RunConfig
    from .engine import Engine
    from .context import RunContext
    from .members import EvalResult


@dataclasses.dataclass
class LoadedModel:
    """A model ready for inference, its tokenizer, and (for a run folder) the run's config."""

    model: Any
    tokenizer: Any
    task: str  # the model task: causal_lm, classification, seq2seq or token_classification
    config: RunConfig | None = None
    manifest: dict | None = None
    label_names: list[str] | None = None

    @property
    def method(self) -> str | None:
        return self.config.method.name if self.config else None


def is_run_dir(path: str | Path) -> bool:
    path = Path(path)
    return (path / "manifest.json").is_file() and (path / "config.yaml").is_file()


def load(engine: Engine, target: str, task: str | None = None, generation: bool = False) -> LoadedModel:
    """Load a run folder (base + adapter, or the full model) or a plain model reference. With
    ``generation``, a run whose method can merge is merged in memory (faster decoding)."""
    if is_run_dir(target):
        return _load_run(engine, Path(target), generation=generation)
    resolved = engine.resolve_model(target)
    tokenizer = load_tokenizer(resolved)
    labels_file = Path(resolved.path) / "labels.json"
    label_names = json.loads(labels_file.read_text()) if labels_file.is_file() else None
    task = task or task_of(resolved.path) or ("classification" if label_names else "causal_lm")
    model = load_model(resolved, task, label_names=label_names, pad_token_id=tokenizer.pad_token_id)
    model.eval()
    return LoadedModel(model, tokenizer, task, label_names=label_names)


def _load_run(engine: Engine, path: Path, quantize: bool = True, generation: bool = False) -> LoadedModel:
    from .context import RunContext
    from .loading import HEAD_MODULES

    manifest = json.loads((path / "manifest.json").read_text())
    config = engine.config(path / "config.yaml")
    task = manifest["task"]
    model_dir = path / manifest["output"]
    if not model_dir.is_dir():
        raise ConfigError(f"run folder '{path}' has no {manifest['output']}/ folder (did the run finish?)")
    run = RunContext(config=config, output_dir=path, engine=engine, data_task=task["data"],
                     model_task=task["model"], num_labels=task.get("num_labels"), label_names=task.get("labels"))
    method = run.method
    tokenizer = load_tokenizer(ResolvedModel(str(path), str(model_dir), "run folder"))
    labels = task.get("labels") if task.get("num_labels") is None else None
    if manifest["output"] == "model":
        model = load_model(ResolvedModel(str(path), str(model_dir), "run folder"), task["model"],
                           label_names=labels, num_labels=task.get("num_labels"), pad_token_id=tokenizer.pad_token_id,
                           extra=loading_kwargs(config.model_loading))
    else:
        run.model_source = engine.resolve_model(config.model)
        _check_fingerprint(engine, run.model_source, manifest.get("model_fingerprint"), path)
        keep = list(HEAD_MODULES) + method.fully_trained_modules(config.method.options, run)
        base = load_model(
            run.model_source, task["model"], label_names=labels, num_labels=task.get("num_labels"),
            pad_token_id=tokenizer.pad_token_id,
            extra={**loading_kwargs(config.model_loading),
                   **(run.quantizer.load_kwargs(config.quantizer.options, keep, run) if quantize else {})},
        )
        if quantize:
            base = run.quantizer.after_load(base, config.quantizer.options)
        model = method.load(base, str(model_dir), config.method.options)
        if generation:
            from .generation import for_inference

            model = for_inference(model, method, config.method.options, quantize and run.quantizer.quantizes)
    model.eval()
    return LoadedModel(model, tokenizer, task["model"], config, manifest, task.get("labels"))


def _check_fingerprint(engine: Engine, source: ResolvedModel, recorded: str | None, path: Path) -> None:
    """Warn when the base model found here is not the one the run's adapter was trained on."""
    from .models import fingerprint

    if recorded and fingerprint(source.path, str(engine.cache_dir)) != recorded:
        log.warning(
            "the base model '%s' found here (%s) differs from the one run '%s' was trained on (its "
            "manifest's model_fingerprint); the adapter may not work as it did", source.reference, source.path, path)


def run_control(loaded: LoadedModel, values: dict | None, target: str) -> dict | None:
    """The control-code values for generating with ``loaded``, in the order the run put its tags
    (``data.control``); every column needs a value, one the run was trained with."""
    if loaded.config is None:  # a plain model: the tags are put as given
        return dict(values) if values else None
    if not loaded.config.data.control:
        if values:
            raise ConfigError(f"--control: run folder '{target}' was not trained with control codes (data.control is empty)")
        return None
    columns = loaded.config.data.control
    seen = (loaded.manifest or {}).get("control", {})
    values = dict(values or {})
    unknown = sorted(set(values) - set(columns))
    if unknown:
        raise ConfigError(f"--control {unknown[0]}=...: run folder '{target}' has control columns {', '.join(columns)}")
    missing = [c for c in columns if c not in values]
    if missing:
        raise ConfigError(f"run folder '{target}' was trained with control codes for {', '.join(columns)}: "
                          f"pass --control {missing[0]}=VALUE (values seen in training: {', '.join(seen.get(missing[0], []))})")
    for column in columns:
        if seen.get(column) and str(values[column]) not in seen[column]:
            raise ConfigError(f"--control {column}={values[column]}: run folder '{target}' saw only "
                              f"{', '.join(seen[column])} for {column} in training")
    return {c: str(values[c]) for c in columns}


def check_can_generate(engine: Engine, target: str) -> None:
    """Refuse, before loading anything, a run folder whose model cannot generate text."""
    if not is_run_dir(target):
        return
    task = json.loads((Path(target) / "manifest.json").read_text())["task"]["model"]
    config = engine.config(Path(target) / "config.yaml")
    method, objective = engine.methods.get(config.method.name), engine.objectives.get(config.objective.name)
    if task not in GENERATIVE_TASKS:
        raise IncompatibleError(f"run folder '{target}' holds a {task} model (objective '{objective.name}', "
                                f"method '{method.name}'); generate needs a causal language model or seq2seq run")
    if not method.can_generate:
        raise IncompatibleError(f"method '{method.name}' of run folder '{target}' cannot generate text")


def merge(engine: Engine, run_dir: str, output_dir: str) -> Path:
    """Write a standalone model (weights + tokenizer) with the run's tuning folded in."""
    if not is_run_dir(run_dir):
        raise ConfigError(f"'{run_dir}' is not a run folder (it needs manifest.json and config.yaml)")
    out = Path(output_dir)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"merge output folder '{out}' is not empty; choose a new folder")
    config = engine.config(Path(run_dir) / "config.yaml")
    method = engine.methods.get(config.method.name)
    if not method.can_merge:
        raise IncompatibleError(method.merge_refusal())
    loaded = _load_run(engine, Path(run_dir), quantize=False)  # merge into full-precision weights
    merged = method.merge(loaded.model, config.method.options)
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(out))
    loaded.tokenizer.save_pretrained(str(out))
    if loaded.label_names:
        (out / "labels.json").write_text(json.dumps(loaded.label_names))
    return out


# ----------------------------------------------------------------------------- tunery eval


def evaluate_target(engine: Engine, target: str, evaluators: Iterable[str] = (), data: Iterable[str] = (),
                    format: str | None = None, overrides: Iterable[str] = (), few_shot: int = 0,
                    shots_from: Iterable[str] = ()) -> dict[str, EvalResult]:
    """Evaluate a run folder or a model reference; returns each evaluator's result.

    ``evaluators`` default to the run's own (or, for a plain model, the default evaluators of
    its data). ``data`` defaults to the run's evaluation data (its ``data.eval`` or the same
    ``val_split``), formatted with the run's formatter unless ``format`` names another one.
    ``overrides`` are ``evaluator.key=value`` option settings. An evaluator that reads its own
    data (``uses_run_data = False``) gets ``data`` as its ``data`` option.

    ``few_shot`` > 0 is the prompting baseline (:mod:`tunery.baseline`): that many training
    examples, drawn with the run's seed from ``shots_from`` (default: the run's training data,
    its evaluation rows left out), go in front of every evaluation prompt; evaluators that read
    their own data are left out then."""
    from .config import Choice, DataConfig, GenerationConfig, RunConfig, TrainingConfig, _member, apply_overrides
    from .context import RunContext
    from .evaluation import run_evaluators
    from .run import build_data

    data = list(data)
    loaded = engine.load(target)
    config = loaded.config or RunConfig(  # a plain model: no run settings, no formatter unless --format
        model=target, output_dir=str(target), method=Choice("", None), objective=Choice("", None),
        format=Choice("", None), quantizer=Choice("none", None), extensions=[], evaluators=[],
        data=DataConfig(), training=TrainingConfig(),
        generation=GenerationConfig())
    if format is not None and format != config.format.name:
        config.format = _choice(engine.formatters, format, {}, "--format")
    formatter = engine.formatters.get(config.format.name) if config.format.name else None
    task = formatter.task if formatter else loaded.task
    names = list(evaluators) or [c.name for c in config.evaluators] or [
        e.name for e in engine.evaluators if e.default and task in e.tasks]
    members = {name: _member(engine.evaluators, name, "--evaluator") for name in names}
    own = {c.name: c.to_dict() for c in config.evaluators}
    raw = {name: {k: v for k, v in own.get(name, {}).items() if k != "name"} for name in names}
    for name, member in members.items():
        if task not in member.tasks:
            raise ConfigError(f"evaluator '{name}' cannot measure {task} data; it handles: "
                              f"{', '.join(sorted(member.tasks))} (pass --format or another --evaluator)")
        if data and not member.uses_run_data:
            raw[name]["data"] = data[0]
    apply_overrides(raw, list(overrides))
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise ConfigError(f"--set {unknown[0]}.*: '{unknown[0]}' is not one of the evaluators here ({', '.join(names)})")
    config.evaluators = [_choice(engine.evaluators, name, raw[name], f"evaluators[{i}]")
                         for i, name in enumerate(names)]

    run = RunContext(config=config, output_dir=Path(target), engine=engine, data_task=task,
                     model_task=loaded.task, label_names=loaded.label_names, tokenizer=loaded.tokenizer,
                     device=next(loaded.model.parameters()).device)
    examples: list[dict] = []
    splits = None
    if any(m.uses_run_data for m in members.values()):
        if formatter is None:
            raise ConfigError(f"'{target}' is not a run folder: pass --format to say how to read --data")
        if data or config.data.eval:
            examples = read_examples(run, data or config.data.eval)
        elif is_run_dir(target) and config.data.val_split != 0:  # the run's held-out split, drawn again
            splits = build_data(run, write_problems=False)
            examples = splits[1]
            run.label_names = loaded.label_names
        if not examples:
            raise ConfigError(f"no evaluation data for '{target}': pass --data")
    if few_shot:
        examples = _with_shots(run, target, examples, few_shot, list(shots_from), splits)
    return run_evaluators(run, loaded.model, examples, run_data_only=bool(few_shot))


def _with_shots(run: RunContext, target: str, examples: list[dict], k: int, shots_from: list[str],
                splits: tuple | None) -> list[dict]:
    """``tunery eval --few-shot K``: the evaluation examples with K training examples in front."""
    from .baseline import check_few_shot, draw_shots, with_shots
    from .run import build_data

    check_few_shot(k, run.data_task, "--few-shot")
    if not examples:
        raise ConfigError("--few-shot needs an evaluator that scores the evaluation data (loss, generation, ...)")
    if shots_from:
        train = read_examples(run, shots_from)
    elif is_run_dir(target) and run.config.data.train:
        train = (splits or build_data(run, write_problems=False))[0]
    else:
        raise ConfigError(f"--few-shot: '{target}' is not a run folder; pass --shots-from with the training "
                          "data to draw the shots from")
    return with_shots(examples, draw_shots(train, examples, k, run.config.seed), run.config.data.max_length)[0]


def read_examples(run: RunContext, specs: list[str]) -> list[dict]:
    """Examples of the data files ``specs`` through the run's formatter; bad rows follow
    ``data.on_bad_row`` (an error listing them, or skipped with a warning)."""
    from .data import problems_message
    from .datatools import format_split, read_split

    split = format_split(run, *read_split(run, specs, "eval"))
    if split.problems and run.config.data.on_bad_row == "error":
        raise DataError(problems_message(split.problems, "evaluation"), split.problems)
    if split.problems:
        log.warning("skipped %d bad row(s) of %s", len(split.problems), ", ".join(split.files))
    if not split.examples:
        raise DataError(f"no usable evaluation example in {', '.join(split.files)}")
    return list(split.examples)


def _choice(registry, name: str, options: dict, where: str):
    from .config import Choice, _member

    member = _member(registry, name, where)
    return Choice(name, member.parse_options(options, where))
