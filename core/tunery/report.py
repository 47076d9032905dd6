"""What a finished run leaves for people to read: ``report.md`` and ``loss.png`` in the run
folder, and a Hugging Face model card (``README.md``) in its adapter or model folder.

Everything is drawn from the run's own files (config, metrics.json, train_log.jsonl,
samples.json, evaluations/), so any evaluator's metrics and examples show up without this
module knowing it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from .evaluation import numeric

if TYPE_CHECKING:  # pragma: no cover
    from .context import RunContext

log = logging.getLogger("tunery")

EVAL_LOSS = "loss/loss"  # the metric drawn as "eval loss" in loss.png


def write_reports(run: RunContext, model_dir: Path, metrics: dict, samples: dict) -> None:
    """Write loss.png and report.md into the run folder and README.md into ``model_dir``."""
    out = run.output_dir
    records = read_log(out / "train_log.jsonl")
    plotted = plot_loss(records, metrics, out / "loss.png")
    evaluations = {phase: _read_json(out / "evaluations" / f"{phase}.json") for phase in ("before", "after")}
    (out / "report.md").write_text(render_report(run, metrics, samples, evaluations, plotted))
    (model_dir / "README.md").write_text(model_card(run, model_dir, metrics))


def read_log(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


# ----------------------------------------------------------------------------- loss.png


def loss_curves(records: list[dict], metrics: dict) -> tuple[list[tuple], list[tuple]]:
    """(step, train loss) points from the training log, and (step, eval loss) points from the
    evaluations before (step 0), during and after training."""
    train = [(r["step"], r["loss"]) for r in records if isinstance(r.get("loss"), (int, float))]
    evals = [(r["step"], r[f"eval_{EVAL_LOSS}"]) for r in records if f"eval_{EVAL_LOSS}" in r]
    if EVAL_LOSS in (metrics.get("before") or {}):
        evals.insert(0, (0, metrics["before"][EVAL_LOSS]))
    if EVAL_LOSS in (metrics.get("after") or {}):
        evals.append((metrics.get("train", {}).get("steps", evals[-1][0] if evals else 0), metrics["after"][EVAL_LOSS]))
    return train, evals


def smooth(values: list[float], weight: float = 0.6) -> list[float]:
    """TensorBoard's smoothing: an exponential moving average with its start-up bias removed
    (the first points are not pulled towards zero)."""
    out, last, scale = [], 0.0, 0.0
    for value in values:
        last = last * weight + (1 - weight) * value
        scale = scale * weight + (1 - weight)
        out.append(last / scale)
    return out


def plot_loss(records: list[dict], metrics: dict, path: Path) -> bool:
    """Draw train and eval loss against step into ``path`` (PNG); False when there is nothing to draw."""
    train, evals = loss_curves(records, metrics)
    if not train and not evals:
        return False
    try:
        import matplotlib
    except ImportError:
        log.warning("loss.png not drawn: it needs matplotlib (pip install 'tunery[reports]')")
        return False
    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.add_subplot()
    if train:
        steps, losses = zip(*train)
        weight = 0.6 if len(train) < 50 else 0.9  # short runs: less smoothing
        ax.plot(steps, losses, color="tab:blue", alpha=0.25, linewidth=1, label="train loss (per step)")
        ax.plot(steps, smooth(list(losses), weight), color="tab:blue", linewidth=2,
                label=f"train loss (smoothed, EMA {weight})")
    if evals:
        ax.plot(*zip(*evals), label="eval loss", color="tab:orange", marker="o", linewidth=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    return True


# ----------------------------------------------------------------------------- report.md


def md_table(headers: list[str], rows: Iterable[Iterable[Any]]) -> str:
    """A Markdown table; cells are shown on one line and cut to 300 characters."""
    def cell(value: Any) -> str:
        if isinstance(value, float):
            text = f"{value:.4g}"
        elif isinstance(value, (list, dict)):
            text = json.dumps(value, ensure_ascii=False)
        else:
            text = "" if value is None else str(value)
        text = text.replace("|", "\\|").replace("\n", "⏎")
        return text if len(text) <= 300 else text[:300] + "..."

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def metrics_table(before: dict, after: dict, few_shot: dict | None = None) -> str:
    """Before, after and change per metric; with ``few_shot`` (metrics.json's section), a
    column with the untuned model prompted with k training examples."""
    before, after = numeric(before or {}), numeric(after or {})
    shots = numeric(few_shot["metrics"]) if few_shot else {}
    names = list(dict.fromkeys([*after, *before]))
    rows = []
    for name in names:
        b, a = before.get(name), after.get(name)
        rows.append([name, b, *([shots.get(name)] if few_shot else []), a,
                     a - b if a is not None and b is not None else None])
    headers = ["metric", "before", *([f"{few_shot['k']}-shot prompting"] if few_shot else []), "after", "change"]
    return md_table(headers, rows)


def _options(choice) -> str:
    """The options that differ from their defaults, on one line."""
    import dataclasses

    if not dataclasses.is_dataclass(choice.options):
        return "defaults"
    changed = []
    for f in dataclasses.fields(choice.options):
        value = getattr(choice.options, f.name)
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
        if value != default:
            changed.append(f"{f.name}={value!r}" if isinstance(value, str) else f"{f.name}={value}")
    return ", ".join(changed) or "defaults"


def render_report(run: RunContext, metrics: dict, samples: dict, evaluations: dict, plotted: bool) -> str:
    """The text of report.md."""
    config, t = run.config, run.config.training
    train = metrics.get("train", {})
    output = run.method.output(config.method.options)
    lines = [f"# Run report: {run.output_dir.name}", "",
             "## Configuration", "",
             f"- model: `{config.model}`",
             f"- method: **{config.method.name}** ({_options(config.method)})",
             f"- format: **{config.format.name}** ({_options(config.format)})",
             f"- quantizer: {config.quantizer.name}",
             f"- evaluators: {', '.join(c.name for c in config.evaluators) or 'none'}",
             f"- training: {train.get('steps')} steps (planned {run.total_steps}), batch size {t.batch_size} "
             f"x grad accum {t.grad_accum}, learning rate {t.learning_rate}, scheduler {t.lr_scheduler}, seed {config.seed}",
             f"- result: final train loss {_num(train.get('loss'))}, {train.get('seconds')} s, "
             f"{train.get('tokens_per_s')} tokens/s; the {output} is in `{output}/`"]
    best = metrics.get("best")
    if best:
        kept = "kept as the result" if best["kept"] else "not kept (early_stopping.keep_best=false)"
        stopped = "stopped early" if metrics.get("stopped_early") else "ran to the end"
        lines.append(f"- best checkpoint: `{best['checkpoint']}` (step {best['step']}, {best['metric']}="
                     f"{_num(best['value'])}), {kept}; training {stopped}")
    data = metrics.get("data", {})
    lines += ["", "## Data", "", md_table(
        ["split", "files", "rows", "examples", "bad rows", "truncated"],
        [[split, ", ".join(Path(f).name for f in d.get("files", [])), d.get("rows"), d.get("examples"),
          d.get("bad_rows"), d.get("truncated")] for split, d in data.items() if isinstance(d, dict)])]
    if data.get("labels"):
        lines += ["", f"Labels: {', '.join(map(str, data['labels']))}"]
    lines += ["", "## Metrics", ""]
    if metrics.get("before") or metrics.get("after"):
        lines.append(metrics_table(metrics.get("before"), metrics.get("after"), metrics.get("few_shot")))
        if metrics.get("few_shot"):
            shots = metrics["few_shot"]
            lines += ["", f"*{shots['k']}-shot prompting*: the untuned model with {shots['k']} training examples "
                          f"(seed {shots['seed']}; {shots['mean_shots']:g} fitted on average in data.max_length) "
                          "in front of each evaluation prompt."]
    else:
        lines.append(metrics.get("note", "No evaluation ran (no evaluators or no evaluation data)."))
    during = metrics.get("during") or []
    if during:
        names = [k for k in numeric(during[0]) if k != "step"][:8]
        lines += ["", "### During training", "",
                  md_table(["step", *names], [[d.get("step"), *(d.get(n) for n in names)] for d in during])]
    if plotted:
        lines += ["", "## Loss", "", "![train and eval loss against step](loss.png)"]
    if samples.get("after"):
        lines += ["", "## Sample generations", ""]
        before = samples.get("before") or []
        for i, item in enumerate(samples["after"]):
            lines += [f"**Prompt:** {item['prompt']}", ""]
            if i < len(before):
                lines += [f"- before: {_quote(before[i]['output'])}"]
            lines += [f"- after: {_quote(item['output'])}", ""]
    after = evaluations.get("after") or {}
    worst = {name: e["worst"] for name, e in after.items() if e.get("worst")}
    if worst:
        lines += ["", "## Worst examples (after training)", ""]
        for name, items in worst.items():
            headers = list(dict.fromkeys(k for item in items for k in item))
            lines += [f"### {name}", "", md_table(headers, [[item.get(h) for h in headers] for item in items]), ""]
    for name, e in after.items():
        for key, value in (e.get("details") or {}).items():
            lines += ["", f"## {name}: {key.replace('_', ' ')} (after training)", "", _detail(value)]
    if any(e.get("records") for e in after.values()):
        lines += ["", "Every example's output is in `evaluations/after.json` (and `before.json`)."]
    return "\n".join(lines).rstrip() + "\n"


def _num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _quote(text: str) -> str:
    return "`" + text.replace("`", "'").replace("\n", " ⏎ ") + "`" if text else "(empty)"


def _detail(value: Any) -> str:
    """A confusion matrix as a table (rows: true label, columns: predicted); anything else as JSON."""
    if isinstance(value, dict) and "labels" in value and "matrix" in value:
        labels = [str(label) for label in value["labels"]]
        return md_table(["true \\ predicted", *labels], [[label, *row] for label, row in zip(labels, value["matrix"])])
    return "```json\n" + json.dumps(value, indent=2, ensure_ascii=False) + "\n```"


# ----------------------------------------------------------------------------- model card


PIPELINE_TAGS = {"classification": "text-classification", "seq2seq": "text2text-generation",
                 "token_classification": "token-classification"}


def model_card(run: RunContext, model_dir: Path, metrics: dict) -> str:
    """A Hugging Face model card: YAML front matter (base_model, library_name, tags, datasets,
    pipeline_tag), then the method, data and metrics; how to load the result comes from the
    method (:meth:`tunery.Method.model_card`), which may also write the whole card."""
    import yaml

    config = run.config
    card = run.method.model_card(config.method.options, run)
    if isinstance(card, str):
        return card
    train_files = [Path(f).name for f in metrics.get("data", {}).get("train", {}).get("files", [])]
    front = {
        "base_model": config.model,
        "library_name": card.get("library_name", "transformers"),
        "tags": list(dict.fromkeys(["tunery", config.method.name, config.format.name])),
        "datasets": train_files,
        "pipeline_tag": PIPELINE_TAGS.get(run.model_task, "text-generation"),
    }
    data = metrics.get("data", {})
    lines = ["---", yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip(), "---", "",
             f"# {run.output_dir.name}", "",
             f"Fine-tuned from `{config.model}` with [tunery](https://pypi.org/project/tunery/): "
             f"{card.get('summary', f'trained with the **{config.method.name}** method')}.", "",
             "## Method", "", f"- method: {config.method.name} ({_options(config.method)})",
             f"- quantizer: {config.quantizer.name}",
             f"- steps: {metrics.get('train', {}).get('steps')}, learning rate {config.training.learning_rate}, "
             f"batch size {config.training.batch_size}, seed {config.seed}", "",
             "## Data", "", f"- format: {config.format.name} ({_options(config.format)})",
             *[f"- {split}: {d.get('examples')} examples from {', '.join(Path(f).name for f in d.get('files', [])) or '-'}"
               for split, d in data.items() if isinstance(d, dict) and d.get("files")], "",
             "## Metrics", ""]
    if metrics.get("before") or metrics.get("after"):
        lines.append(metrics_table(metrics.get("before"), metrics.get("after")))
    else:
        lines.append("No evaluation was run.")
    if card.get("usage"):
        lines += ["", "## Usage", "", "```python", card["usage"], "```"]
    return "\n".join(lines) + "\n"
