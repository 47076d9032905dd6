"""Loading what a run produced (or any model) back for inference: generate, merge, eval, score."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, IncompatibleError
from .loading import load_model, load_tokenizer, loading_kwargs
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


def load(engine: Engine, target: str, task: str | None = None) -> LoadedModel:
    """Load a run folder (base + adapter, or the full model) or a plain model reference."""
    if is_run_dir(target):
        return _load_run(engine, Path(target))
    resolved = engine.resolve_model(target)
    tokenizer = load_tokenizer(resolved)
    labels_file = Path(resolved.path) / "labels.json"
    label_names = json.loads(labels_file.read_text()) if labels_file.is_file() else None
    task = task or ("classification" if label_names else "causal_lm")
    model = load_model(resolved, task, label_names=label_names, pad_token_id=tokenizer.pad_token_id)
    model.eval()
    return LoadedModel(model, tokenizer, task, label_names=label_names)


def _load_run(engine: Engine, path: Path, quantize: bool = True) -> LoadedModel:
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
    model.eval()
    return LoadedModel(model, tokenizer, task["model"], config, manifest, task.get("labels"))


def _check_fingerprint(engine: Engine, source: ResolvedModel, recorded: str | None, path: Path) -> None:
    """Warn when the base model found here is not the one the run's adapter was trained on."""
    import logging

    from .models import fingerprint

    if recorded and fingerprint(source.path, str(engine.cache_dir)) != recorded:
        logging.getLogger("tunery").warning(
            "the base model '%s' found here (%s) differs from the one run '%s' was trained on (its "
            "manifest's model_fingerprint); the adapter may not work as it did", source.reference, source.path, path)


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
