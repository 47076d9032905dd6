"""Loading what a run produced (or any model) back for inference: generate, merge, eval, score."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, IncompatibleError
from .loading import load_model, load_tokenizer
from .models import ResolvedModel

if TYPE_CHECKING:  # pragma: no cover
    from .config import RunConfig
    from .engine import Engine


@dataclasses.dataclass
class LoadedModel:
    """A model ready for inference, its tokenizer, and (for a run folder) the run's config."""

    model: Any
    tokenizer: Any
    task: str  # "causal_lm" or "classification"
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
    task = task or ("classification" if label_names else "causal_lm")
    model = load_model(resolved, task, label_names=label_names, pad_token_id=tokenizer.pad_token_id)
    model.eval()
    return LoadedModel(model, tokenizer, task, label_names=label_names)


def _load_run(engine: Engine, path: Path, quantize: bool = True, generation: bool = False) -> LoadedModel:
    from .context import RunContext
    from .run import HEAD_MODULES

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
                           label_names=labels, num_labels=task.get("num_labels"), pad_token_id=tokenizer.pad_token_id)
    else:
        run.model_source = engine.resolve_model(config.model)
        keep = list(HEAD_MODULES) + method.fully_trained_modules(config.method.options, run)
        base = load_model(
            run.model_source, task["model"], label_names=labels, num_labels=task.get("num_labels"),
            pad_token_id=tokenizer.pad_token_id,
            extra=run.quantizer.load_kwargs(config.quantizer.options, keep, run) if quantize else None,
        )
        if quantize:
            base = run.quantizer.after_load(base, config.quantizer.options)
        model = method.load(base, str(model_dir), config.method.options)
        if generation:
            from .generation import for_inference

            model = for_inference(model, method, config.method.options, quantize and run.quantizer.quantizes)
    model.eval()
    return LoadedModel(model, tokenizer, task["model"], config, manifest, task.get("labels"))


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
    if task != "causal_lm":
        raise IncompatibleError(f"run folder '{target}' holds a {task} model (objective '{objective.name}', "
                                f"method '{method.name}'); generate needs a causal language model run")
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
