"""What a sweep leaves for people to read, in its folder: ``best.yaml`` (the best trial's config,
ready for ``tunery train``), ``sweep.md`` (every trial in a table, the figures), ``summary.json``,
and ``objective.png``, ``importances.png``, ``parallel_coordinates.png`` and ``intermediate.png`` drawn by
``optuna.visualization.matplotlib``."""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

from tunery import md_table

from .space import trial_config

log = logging.getLogger("tunery")

PLOTS = (("objective.png", "plot_optimization_history", "objective over trials"),
         ("importances.png", "plot_param_importances", "parameter importances"),
         ("parallel_coordinates.png", "plot_parallel_coordinate", "parallel coordinates"),
         ("intermediate.png", "plot_intermediate_values", "the metric during training (pruned trials stop early)"))


def trial_rows(study, names: dict[int, str]) -> list[dict]:
    """One plain record per trial (in trial order), the trials a crash interrupted left out."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        state = t.state.name.lower()
        if state == "fail" and "error" not in t.user_attrs:
            continue  # interrupted by a crash and run again as another trial
        if state in ("running", "waiting"):
            continue
        value = t.value if t.value is not None else (
            t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None)
        rows.append({"trial": t.number, "state": state, "value": value, "params": dict(t.params),
                     "from_config": bool(t.user_attrs.get("from_config")), "pruned_at": t.user_attrs.get("pruned_at"),
                     "steps": t.user_attrs.get("steps"), "seconds": t.user_attrs.get("seconds"),
                     "error": t.user_attrs.get("error"), "folder": names.get(t.number, f"trial-{t.number:03d}")})
    return rows


def write(study, folder: Path, base: dict, options, names: dict[int, str] | None = None) -> dict:
    """Write the summary files of ``study`` into ``folder``; returns summary.json's content."""
    names = names or {}
    rows = trial_rows(study, names)
    complete = [r for r in rows if r["state"] == "complete"]
    best = (max if options.maximize else min)(complete, key=lambda r: r["value"]) if complete else None
    baseline = next((r for r in rows if r["from_config"]), None)
    summary = {"metric": options.metric, "direction": "maximize" if options.maximize else "minimize",
               "trials": len(rows), "complete": len(complete),
               "pruned": sum(r["state"] == "pruned" for r in rows), "failed": sum(r["state"] == "fail" for r in rows),
               "best": best, "config_trial": baseline, "rows": rows}
    if best:
        _write_best(folder, base, best, options)
    plotted = draw(study, folder) if len(complete) >= 2 else []
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    (folder / "sweep.md").write_text(render(summary, options, plotted, folder))
    return summary


def _write_best(folder: Path, base: dict, best: dict, options) -> None:
    import yaml

    raw = trial_config(base, best["params"], str((folder / "best").resolve()))
    raw.pop("overwrite", None)
    data = raw.get("data") or {}
    for key in ("train", "eval"):  # best.yaml lives in the sweep folder: paths must not depend on it
        value = data.get(key)
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            data[key] = [os.path.abspath(v) if isinstance(v, str) and os.path.exists(v) else v for v in value]
    if isinstance(raw.get("model"), str) and os.path.exists(raw["model"]):
        raw["model"] = os.path.abspath(raw["model"])
    head = (f"# Best trial of the sweep in {folder}: {best['folder']} ({options.metric} = {best['value']:.6g}).\n"
            f"# Train it again with: tunery train {folder / 'best.yaml'}\n")
    (folder / "best.yaml").write_text(head + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))


def draw(study, folder: Path) -> list[tuple[str, str]]:
    """The figures that could be drawn, as (file, title)."""
    try:
        import matplotlib
    except ImportError:
        log.warning("sweep figures not drawn: they need matplotlib (pip install 'tunery[sweep]')")
        return []
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as vis

    done = []
    for file, function, title in PLOTS:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # optuna marks its matplotlib backend experimental
                axes = getattr(vis, function)(study)
            figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
            figure.set_size_inches(8, 5)
            figure.tight_layout()
            figure.savefig(folder / file, dpi=100)
            plt.close(figure)
            done.append((file, title))
        except (ValueError, RuntimeError, ImportError, ZeroDivisionError) as exc:
            log.warning("sweep: %s not drawn: %s", file, exc)
    return done


def render(summary: dict, options, plotted: list[tuple[str, str]], folder: Path) -> str:
    rows = summary["rows"]
    names = list(options.parameters)
    lines = [f"# Sweep: {folder.name}", "",
             f"{summary['trials']} trials ({summary['complete']} complete, {summary['pruned']} pruned, "
             f"{summary['failed']} failed), {options.sampler} sampler, pruner {options.pruner}; objective "
             f"`{options.metric}` ({summary['direction']}).", ""]
    best, base = summary["best"], summary["config_trial"]
    if best:
        lines.append(f"**Best:** {best['folder']}, {options.metric} = {best['value']:.6g} with "
                     + ", ".join(f"`{k}` = {_fmt(v)}" for k, v in best["params"].items())
                     + ". Its config is `best.yaml` (`tunery train best.yaml`).")
    if base and base["value"] is not None:
        lines.append(f"\nThe config's own values ({base['folder']}): {options.metric} = {base['value']:.6g} "
                     f"({base['state']}).")
    headers = ["trial", "state", options.metric, *names, "steps", "seconds", "folder"]
    table = [[r["trial"], r["state"] + (" (config)" if r["from_config"] else "")
              + (f" at step {r['pruned_at']}" if r["pruned_at"] else ""), r["value"],
              *(r["params"].get(n) for n in names), r["steps"], r["seconds"], r["folder"]] for r in rows]
    lines += ["", "## Trials", "", md_table(headers, table)]
    errors = [r for r in rows if r["error"]]
    if errors:
        lines += ["", "Failed trials:", ""] + [f"- {r['folder']}: {r['error']}" for r in errors]
    for file, title in plotted:
        lines += ["", f"## {title[0].upper() + title[1:]}", "", f"![{title}]({file})"]
    return "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
