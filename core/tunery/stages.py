"""Continual learning: a config with a ``stages:`` list trains its stages one after another.

Each stage is a mapping of config keys that override the top level for that stage (mappings
are merged key by key, everything else replaced): ``name`` (default ``stage<N>``), ``format``,
``data``, ``training``, ``method``, ``extensions`` ... Stage N trains in ``<output_dir>/<name>``
and starts from stage N-1's weights (its ``model/`` folder, or its adapter merged into its base
in ``<name>/merged``). Every stage needs ``data.eval``: after each stage, every task so far is
evaluated with its own formatter and evaluators, giving the forgetting matrix (task x stage) in
``<output_dir>/metrics.json`` and ``<output_dir>/report.md``.

The extensions ``replay`` and ``ewc`` get the earlier stages' data filled in (``sources``):
``replay`` all earlier stages' training data, ``ewc`` the previous stage's.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from .errors import ConfigError, IncompatibleError

if TYPE_CHECKING:  # pragma: no cover
    from .config import RunConfig
    from .engine import Engine

log = logging.getLogger("tunery")

FILLED = {"replay": "earlier", "ewc": "previous"}  # extensions whose `sources` a stage gets
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def merge(base: Mapping, override: Mapping) -> dict:
    """``base`` with ``override`` on top: mappings merged key by key, anything else replaced."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_staged(raw: Mapping[str, Any], registries: Mapping[str, Any]) -> RunConfig:
    """A ``stages:`` config: the first stage's settings at the top level's ``output_dir``, with
    every stage's RunConfig in ``stages``."""
    top = {k: v for k, v in raw.items() if k != "stages"}
    stages = parse_stages(top, raw["stages"], registries)
    return dataclasses.replace(stages[0], output_dir=str(raw["output_dir"]), stages=stages)


def parse_stages(raw: Mapping[str, Any], stages: Any, registries: Mapping[str, Any]) -> list[RunConfig]:
    """The RunConfig of each stage of a ``stages:`` config (``raw`` is the top level without it)."""
    from .config import parse_config

    if not isinstance(stages, list) or not stages:
        raise ConfigError("config key 'stages' must be a non-empty list of mappings (config keys for each stage)")
    if not raw.get("output_dir"):
        raise ConfigError("missing required config key 'output_dir' (the folder of the stages' run folders)")
    configs, names = [], []
    for i, stage in enumerate(stages):
        if not isinstance(stage, Mapping):
            raise ConfigError(f"config key 'stages[{i}]' must be a mapping of config keys, got {stage!r}")
        name = str(stage.get("name") or f"stage{i + 1}")
        if not NAME.fullmatch(name) or name in names:
            raise ConfigError(f"config key 'stages[{i}].name': '{name}' must be unique and a plain folder name "
                              "(letters, digits, _ . -)")
        for key in ("stages", "output_dir") + (("model",) if i else ()):
            if key in stage:
                raise ConfigError(f"config key 'stages[{i}].{key}' is not allowed: "
                                  + ("stages do not nest" if key == "stages" else
                                     "each stage trains in <output_dir>/<name>" if key == "output_dir" else
                                     "a stage continues from the previous stage's weights"))
        merged = merge(raw, {k: v for k, v in stage.items() if k != "name"})
        merged["output_dir"] = str(Path(raw["output_dir"]) / name)
        _fill_sources(merged, configs)
        try:
            config = parse_config(merged, registries)
        except ConfigError as exc:
            raise ConfigError(f"stages[{i}] ({name}): {exc}") from None
        if not config.data.eval:
            raise ConfigError(f"config key 'stages[{i}].data.eval' is required: after each stage every earlier "
                              "task is evaluated on its evaluation data (the forgetting matrix)")
        names.append(name)
        configs.append(config)
    return configs


def _fill_sources(merged: dict, earlier: list[RunConfig]) -> None:
    """Give ``replay`` / ``ewc`` in this stage the earlier stages' training data and formats."""
    items = merged.get("extensions") or []
    if isinstance(items, str):
        items = [e.strip() for e in items.split(",") if e.strip()]
    filled = []
    for item in items:
        name = item if isinstance(item, str) else item.get("name") if isinstance(item, Mapping) else None
        if name in FILLED and not (isinstance(item, Mapping) and (item.get("sources") or item.get("data"))):
            chosen = earlier if FILLED[name] == "earlier" else earlier[-1:]
            sources = [{"data": list(c.data.train), "format": c.format.to_dict()} for c in chosen]
            item = {**(item if isinstance(item, Mapping) else {"name": name}), "sources": sources}
        filled.append(item)
    if items:
        merged["extensions"] = filled


def source_examples(run, data: list[str], format_spec: Any, where: str) -> list[dict]:
    """Examples of ``data`` formatted with ``format_spec`` (a name, a mapping with name and options,
    or None for the run's own format), with the run's tokenizer; bad rows are an error."""
    from .data import format_rows, load_rows, problems_message
    from .errors import DataError

    if format_spec is None:
        formatter, options = run.formatter, run.config.format.options
    else:
        spec = {"name": format_spec} if isinstance(format_spec, str) else dict(format_spec)
        name = spec.pop("name", None)
        if name not in run.engine.formatters:
            raise ConfigError(f"config key '{where}.format': unknown formatter '{name}'")
        formatter = run.engine.formatters.get(name)
        options = formatter.parse_options(spec, f"{where}.format")
    if formatter.task != run.data_task:
        raise ConfigError(f"config key '{where}': formatter '{formatter.name}' gives {formatter.task} data, "
                          f"this run trains on {run.data_task}")
    rows, files, problems = load_rows(list(data) if isinstance(data, list) else [data])
    rows = formatter.prepare_rows(rows, options, run, "train")
    examples, _, _ = format_rows(rows, formatter, options, run.tokenizer, run, problems)
    if problems:
        raise DataError(problems_message(problems, f"{where} data"), problems)
    return examples


def sources_of(options) -> list[dict]:
    """The earlier data an extension's options name: ``sources`` ([{data, format}]) or ``data`` + ``format``."""
    return options.sources or ([{"data": options.data, "format": options.format}] if options.data else [])


def task_examples(engine: Engine, config: RunConfig, tokenizer: Any):
    """The run context of a stage's task and its evaluation examples (with ``tokenizer``)."""
    from .context import RunContext
    from .runs import read_examples

    run = RunContext.create(engine, config, tokenizer=tokenizer)
    examples = read_examples(run, config.data.eval)
    return run, examples


def run_stages(engine: Engine, config: RunConfig):
    """Train every stage of ``config`` in turn; returns the last stage's RunResult with the
    forgetting matrix in its metrics (and in ``<output_dir>/metrics.json``)."""
    from .context import RunResult
    from .evaluation import flat_metrics, run_evaluators

    out = Path(config.output_dir)
    if (out / "stages.json").exists() and not config.overwrite and not config.resume:
        raise ConfigError(f"output_dir '{out}' already holds a staged run; pass --overwrite to replace it")
    out.mkdir(parents=True, exist_ok=True)
    names = [Path(c.output_dir).name for c in config.stages]
    matrix: list[list[float | None]] = [[None] * len(names) for _ in names]
    cells: dict[str, dict] = {}
    stage_results, model, result = [], config.stages[0].model, None
    metric = None
    for j, stage in enumerate(config.stages):
        stage = dataclasses.replace(stage, model=model)
        log.info("stage %d/%d: %s (from %s)", j + 1, len(names), names[j], model)
        result = engine.train(stage)
        trained = result.model
        trained.eval()
        for i in range(j + 1):
            task_run, examples = task_examples(engine, config.stages[i], result_tokenizer(result))
            task_run.device = next(trained.parameters()).device
            metrics = flat_metrics(run_evaluators(task_run, trained, examples))
            metric = metric or ("loss/loss" if "loss/loss" in metrics else next(iter(metrics), None))
            cells[f"{names[i]}@{names[j]}"] = metrics
            value = metrics.get(metric)
            matrix[i][j] = round(float(value), 6) if isinstance(value, (int, float)) else None
        stage_results.append({"name": names[j], "output_dir": str(result.output_dir),
                              "before": result.metrics.get("before"), "after": result.metrics.get("after")})
        if j + 1 < len(config.stages):
            model = next_model(engine, stage, result)
    forgetting = {names[i]: (round(matrix[i][-1] - matrix[i][i], 6)
                             if matrix[i][-1] is not None and matrix[i][i] is not None else None)
                  for i in range(len(names))}
    summary = {"stages": stage_results,
               "forgetting": {"metric": metric, "tasks": names, "stages": names, "matrix": matrix,
                              "cells": cells, "forgetting": forgetting}}
    (out / "stages.json").write_text(json.dumps({"stages": names}))
    (out / "metrics.json").write_text(json.dumps(summary, indent=2, default=str))
    (out / "report.md").write_text(render(summary))
    return RunResult(out, result.model_dir, summary, {}, result.model)


def result_tokenizer(result) -> Any:
    from .loading import load_tokenizer
    from .models import ResolvedModel

    return load_tokenizer(ResolvedModel(str(result.model_dir), str(result.model_dir), "stage"))


def next_model(engine: Engine, stage: RunConfig, result) -> str:
    """The weights the next stage starts from: the stage's full model, or its adapter merged in."""
    method = engine.methods.get(stage.method.name)
    if method.output(stage.method.options) == "model":
        return str(result.model_dir)
    if not method.can_merge:
        raise IncompatibleError(f"stage '{Path(stage.output_dir).name}': method '{method.name}' cannot be merged "
                                "into its base, so the next stage cannot continue from its weights; use a method "
                                "that merges (lora, ia3, full, freeze ...)")
    merged = Path(stage.output_dir) / "merged"
    if merged.exists():
        import shutil

        shutil.rmtree(merged)
    return str(engine.merge(str(stage.output_dir), str(merged)))


def render(summary: dict) -> str:
    """report.md of a staged run: the forgetting matrix."""
    f = summary["forgetting"]
    lines = ["# Continual learning", "", f"Forgetting matrix: `{f['metric']}` of each task (row) after each stage "
             "(column); forgetting = after the last stage minus right after the task's own stage.", "",
             "| task | " + " | ".join(f"after {s}" for s in f["stages"]) + " | forgetting |",
             "|---" * (len(f["stages"]) + 2) + "|"]
    for task, row in zip(f["tasks"], f["matrix"]):
        cells = ["" if v is None else f"{v:.4g}" for v in row]
        value = f["forgetting"][task]
        lines.append(f"| {task} | " + " | ".join(cells) + f" | {'' if value is None else f'{value:+.4g}'} |")
    lines += ["", "Stages: " + ", ".join(f"[{s['name']}]({Path(s['output_dir']).name}/report.md)"
                                         for s in summary["stages"]), ""]
    return "\n".join(lines)
