"""The ``tunery`` command line. Cheap to import: heavy libraries load inside commands only."""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
import warnings
from pathlib import Path

import click

from .errors import TuneryError


def _debug_requested() -> bool:
    return os.environ.get("TUNERY_DEBUG", "").lower() in ("1", "true", "yes") or "--debug" in sys.argv


class TuneryGroup(click.Group):
    """A group that adds plugin commands (``tunery_register_commands``) and turns tunery's
    errors into one clear line and an exit code (``--debug`` or ``TUNERY_DEBUG=1``: traceback)."""

    _plugins_loaded = False

    def _load_plugin_commands(self, ctx: click.Context) -> None:
        """Add the plugins' commands: through the run's engine when there is one, else through a
        host of only the plugins that add commands (so ``--help`` imports few of them)."""
        if not self._plugins_loaded:
            self._plugins_loaded = True
            try:
                host = ctx.find_root().obj or _command_host()
                host.hook.tunery_register_commands(cli=self)
            except TuneryError as exc:
                click.echo(f"warning: plugin commands not loaded: {exc}", err=True)

    def list_commands(self, ctx):
        self._load_plugin_commands(ctx)
        return super().list_commands(ctx)

    def get_command(self, ctx, name):
        command = super().get_command(ctx, name)
        if command is None:
            self._load_plugin_commands(ctx)
            command = super().get_command(ctx, name)
        return command

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except TuneryError as exc:
            if _debug_requested():
                traceback.print_exc()
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:  # outside a run (a run turns it into Interrupted itself)
            click.echo("error: interrupted", err=True)
            ctx.exit(130)
        except Exception as exc:  # noqa: BLE001 - the last line of defence of the CLI
            if _debug_requested():
                traceback.print_exc()
            else:
                click.echo(f"error: {type(exc).__name__}: {exc}\n(run with --debug for the traceback)", err=True)
            ctx.exit(1)


def get_engine(ctx: click.Context):
    """The engine of this invocation, created once (plugins load here)."""
    root = ctx.find_root()
    if root.obj is None:
        from .engine import Engine
        from .plugins import PluginWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PluginWarning)  # shown by `tunery plugins` and the log instead
            root.obj = Engine()
    return root.obj


command_engine = get_engine  # the public name, for commands that plugins add


def _command_host():
    from .engine import Engine
    from .plugins import PluginHost, PluginWarning

    env = dict(os.environ)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginWarning)
        return PluginHost(env, cache_dir=Engine.default_cache_dir(env), only_hooks={"tunery_register_commands"})


def setup_logging(verbose: bool) -> None:
    """tunery's progress on stderr; the libraries' own progress bars and chatter off."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    # bitsandbytes warns at import, on AVX512-BF16 CPUs, about an optional kernel package; harmless.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\.")  # deprecations for v6
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    logger = logging.getLogger("tunery")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False


@click.group(cls=TuneryGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks of errors (or set TUNERY_DEBUG=1).")
@click.version_option(package_name="tunery")
def cli(debug: bool) -> None:
    """tunery: fine-tune language models; every technique is a plugin.

    \b
    Start with:   tunery init config.yaml   then   tunery train config.yaml
    Quick form:   tunery train --model M --method lora --format alpaca --data train.json --output-dir runs/a
    """


# --------------------------------------------------------------------------- plugins


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.option("-v", "--verbose", is_flag=True, help="Show each member's description and options.")
@click.pass_context
def plugins(ctx: click.Context, as_json: bool, verbose: bool) -> None:
    """List installed plugins, their status and the members they register."""
    engine = get_engine(ctx)
    cli.list_commands(ctx)  # plugin commands load now, so a failing one shows below
    infos = engine.plugins
    if as_json:
        items = [i.to_json() for i in infos]
        if verbose:
            for item in items:
                item["details"] = {family: {name: _member_details(engine, family, name) for name in names}
                                   for family, names in item["members"].items() if names}
        click.echo(json.dumps(items, indent=2, default=str))
        return
    width = max([16, *(len(i.name) + 1 for i in infos)])
    for info in infos:
        members = "; ".join(f"{family}: {', '.join(names)}" for family, names in info.members.items() if names)
        source = f"{info.distribution} {info.version}".strip() or "-"
        click.echo(f"{info.name:<{width}} {source:<22} {info.status}")
        if members:
            click.echo(f"{'':<{width}} {members}")
        for problem in info.problems:
            click.echo(f"{'':<{width}} ! {problem}")
        if verbose:
            for family, names in info.members.items():
                for name in names:
                    details = _member_details(engine, family, name)
                    click.echo(f"{'':<{width}}   {family[:-1]} {name}: {details['description']}")
                    for key, value in details["options"].items():
                        click.echo(f"{'':<{width}}     {key} = {value!r}")
        if info.error and _debug_requested():
            click.echo(info.error, err=True)


def _member_details(engine, family: str, name: str) -> dict:
    registry = engine.host.registries[family]
    if registry.conflict(name):
        return {"description": registry.conflict(name), "options": {}}
    member = registry.get(name)
    return {"description": member.description or "", "options": member.describe_options()}


@cli.command()
@click.pass_context
def models(ctx: click.Context) -> None:
    """List the models that resolve offline on this machine, and where they come from."""
    found = get_engine(ctx).list_models()
    if not found:
        click.echo("no model is available offline; pass a local folder or a .gguf file")
    for m in found:
        click.echo(f"{m.reference:<45} {m.kind:<10} {m.origin}  ({m.path})")


# --------------------------------------------------------------------------- train


QUICK_OPTIONS = {
    "model": "model", "method": "method", "objective": "objective", "format": "format", "output_dir": "output_dir",
    "quantizer": "quantizer", "evaluators": "evaluators", "extensions": "extensions", "max_steps": "training.max_steps",
    "epochs": "training.epochs", "eval_data": "data.eval", "seed": "seed",
}


@cli.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option("--model", help="Model reference: hub id, local folder or .gguf file.")
@click.option("--method", help="Tuning method plugin: what trains (see `tunery plugins`).")
@click.option("--objective", help="Objective plugin: what is optimised (default: sft for supervised data).")
@click.option("--format", "format", help="Data formatter plugin.")
@click.option("--data", "data", multiple=True, help="Training data: file, folder or glob (repeatable).")
@click.option("--eval-data", help="Evaluation data file.")
@click.option("--output-dir", help="Run folder to write.")
@click.option("--quantizer", help="Quantizer plugin (default: none).")
@click.option("--evaluators", help="Comma-separated evaluator plugins.")
@click.option("--extensions", help="Comma-separated extension plugins, applied in order.")
@click.option("--max-steps", type=int, help="Stop after this many optimizer steps.")
@click.option("--epochs", type=float, help="Number of epochs.")
@click.option("--seed", type=int, help="Random seed.")
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override a config key (repeatable).")
@click.option("--overwrite", is_flag=True, help="Replace a run already in the output folder.")
@click.option("--resume", is_flag=False, flag_value="auto", default=None, metavar="[PATH]",
              help="Continue from the newest complete checkpoint of the run folder, or from checkpoint PATH.")
@click.option("--force-resume", is_flag=True, help="Resume even though the config, data or plugins changed.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.pass_context
def train(ctx, config, data, overrides, overwrite, resume, force_resume, verbose, **quick) -> None:
    """Fine-tune a model, from CONFIG (YAML) or from the quick-form options."""
    setup_logging(verbose)
    raw: dict = {}
    if config:
        from .config import load_raw

        raw = load_raw(config)
    sets = [f"{QUICK_OPTIONS[k]}={json.dumps(v) if isinstance(v, str) and k not in ('evaluators', 'extensions') else v}"
            for k, v in quick.items() if v is not None]
    if data:
        sets.append(f"data.train={json.dumps(list(data))}")
    if overwrite:
        sets.append("overwrite=true")
    if resume:
        sets.append(f"resume={json.dumps(resume)}")
    if force_resume:
        sets.append("resume_force=true")
    if not config and not quick.get("model"):
        raise click.UsageError("give a CONFIG file, or at least --model, --method, --format, --data and --output-dir")
    engine = get_engine(ctx)
    run_config = engine.config(raw, [*sets, *overrides])
    extensions = "".join(f" + {c.name}" for c in run_config.extensions)
    click.echo(f"run: method {run_config.method.name}, objective {run_config.objective.name}{extensions} on "
               f"{run_config.model} with {run_config.format.name} data -> {run_config.output_dir}", err=True)
    result = engine.train(run_config)
    if run_config.stages:
        from .stages import render

        click.echo(render(result.metrics))
        click.echo(f"run folder: {result.output_dir}  (one folder per stage)")
        return
    _print_samples(result.samples)
    train_metrics = result.metrics["train"]
    click.echo(f"trained {train_metrics['steps']} steps in {train_metrics['seconds']:.1f} s, final loss "
               f"{_fmt(train_metrics['loss'])}, {train_metrics['tokens_per_s']:.0f} tokens/s")
    for phase in ("before", "after"):
        if result.metrics.get(phase):
            click.echo(f"{phase:>6}: " + ", ".join(f"{k}={_fmt(v)}" for k, v in result.metrics[phase].items()
                                                   if isinstance(v, (int, float))))
    from .datatools import summary_lines

    for line in summary_lines(result.metrics.get("data") or {}, result.output_dir):
        click.echo(line)
    click.echo(f"run folder: {result.output_dir}  ({result.model_dir.name}/ holds the result)")


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _print_samples(samples: dict) -> None:
    before, after = samples.get("before") or [], samples.get("after") or []
    for i, item in enumerate(after):
        click.echo(f"\nprompt: {item['prompt']}")
        if i < len(before):
            click.echo(f"  before: {before[i]['output']}")
        click.echo(f"  after:  {item['output']}")
    if after:
        click.echo("")


# --------------------------------------------------------------------------- data


@cli.group()
def data() -> None:
    """Check data files, and preview what a model will learn from them."""


def _format_options(overrides: tuple[str, ...]) -> dict:
    from .config import apply_overrides

    return apply_overrides({}, list(overrides))


_DATA_OPTIONS = [
    click.option("--format", "format_name", required=True, help="Data formatter plugin (see `tunery plugins`)."),
    click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                 help="A formatter option, e.g. --set train_on=last_assistant (repeatable)."),
    click.option("--max-length", type=int, help="Token limit (default 512 with --model, none without)."),
]


def _data_options(fn):
    for option in reversed(_DATA_OPTIONS):
        fn = option(fn)
    return fn


@data.command()
@click.argument("paths", nargs=-1)
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="The run's config file: check with its model's tokenizer, format options, max_length and "
                   "truncation, as training will (PATHS default to its data; a first PATH ending .yaml works too).")
@click.option("--format", "format_name", help="Data formatter plugin (required without a config).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="With a config: any config key (data.max_length=1024); without: a formatter option "
                   "(train_on=last_assistant). Repeatable.")
@click.option("--max-length", type=int, help="Token limit (default: the config's, 512 with --model, none otherwise).")
@click.option("--model", help="Tokenize with this model's tokenizer (default: the config's model, else a small built-in one).")
@click.option("--truncation", type=click.Choice(["error", "right", "left", "drop"]),
              help="What a row longer than the limit is (default: as training, right; left for preference pairs).")
@click.pass_context
def check(ctx, paths, config_file, format_name, overrides, max_length, model, truncation) -> None:
    """List every bad row of PATHS (files, folders, globs, hub names), or of a run's data (CONFIG),
    with its file, line or row and reason, then the count per reason. Exit code 5 when any row is bad."""
    from .datatools import check as check_data, check_config, check_report
    from .errors import DataError

    if not config_file and paths and paths[0].endswith((".yaml", ".yml")):
        config_file, paths = paths[0], paths[1:]
    engine = get_engine(ctx)
    if config_file:
        from .config import load_raw

        sets = [f"{key}={json.dumps(value)}" for key, value in (
            ("model", model), ("format.name", format_name), ("data.max_length", max_length),
            ("data.truncation", truncation)) if value is not None]
        results = check_config(engine, engine.config(load_raw(config_file), [*sets, *overrides]), list(paths))
    else:
        if not format_name:
            raise click.UsageError("give the run's CONFIG file, or --format (and PATHS)")
        if not paths:
            raise click.UsageError("give the data PATHS to check, or the run's CONFIG file")
        results = {"": check_data(engine, format_name, list(paths), options=_format_options(overrides),
                                  model=model, max_length=max_length, truncation=truncation)}
    bad = False
    for split, result in results.items():
        if split and len(results) > 1:
            click.echo(f"{split} data:")
        for line in check_report(result):
            click.echo(line)
        bad = bad or bool(result.problems)
    if not config_file and not model:
        click.echo("not checked: token lengths and masking with the run's tokenizer and data.max_length (a small "
                   "built-in tokenizer was used, with no length limit); pass the run's config "
                   "(tunery data check CONFIG) or --model to check what training will see")
    if bad:
        ctx.exit(DataError.exit_code)


@data.command()
@click.argument("paths", nargs=-1, required=True)
@_data_options
@click.option("--model", required=True, help="The model whose tokenizer and chat template render the data.")
@click.option("-n", "count", type=int, default=3, show_default=True, help="How many examples.")
@click.pass_context
def preview(ctx, paths, format_name, overrides, max_length, model, count) -> None:
    """Print the first examples of PATHS as the model sees them; the tokens it learns (the loss
    falls on them) are marked \u27e6like this\u27e7."""
    from .datatools import preview as preview_data

    for block in preview_data(get_engine(ctx), format_name, list(paths), model, options=_format_options(overrides),
                              n=count, max_length=max_length or 512):
        click.echo(block)


# --------------------------------------------------------------------------- init


STARTER = """\
# tunery run configuration. Every key is optional unless marked "required".
# Run it with:  tunery train {name}
# Override any key on the command line:  tunery train {name} --set training.max_steps=10

model: HuggingFaceTB/SmolLM2-135M-Instruct   # required: hub id, local folder or .gguf file
output_dir: runs/my-run                      # required: the run folder (never overwritten without --overwrite)
seed: 0

method:                 # required: `tunery plugins` lists the methods
  name: lora
  r: 16
  alpha: 32
  target_modules: all-linear

format:                 # required: the data formatter
  name: alpaca          # instruction / input / output rows

data:
  train: data/train.json    # required: file, folder or glob (json, jsonl, csv, parquet, txt)
  val_split: 0.1            # or  eval: data/eval.json; unset: 10% (1..200) held out for the evaluators
  max_length: 512
  on_bad_row: error         # or skip (bad rows are counted and written to bad_rows.json)

quantizer: none         # bnb-4bit / bnb-8bit when installed

evaluators: [loss]      # measured before and after training; also classification, generation,
                        # {{name: multiple_choice, data: questions.jsonl}}; `tunery eval` runs them later

training:
  epochs: 3
  # learning_rate: 2.0e-4   # unset: the method's default (lora 2e-4, full 2e-5, prompt 1e-2: docs/learning-rates.md)
  batch_size: 4
  grad_accum: 1
  eval_steps: null      # also evaluate every N steps (needed by early_stopping)
  report_to: []         # trackers: tensorboard, wandb, mlflow (pip install 'tunery[tensorboard]')

# early_stopping:       # stop when an evaluation metric stops improving; the best checkpoint is kept
#   metric: loss/loss
#   patience: 3

generation:             # answered before and after training, so the change is visible
  prompts: ["Who are you?"]
  max_new_tokens: 48
"""


@cli.command()
@click.argument("path", default="tunery.yaml", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init(path: str, force: bool) -> None:
    """Write a commented starter config to PATH (default tunery.yaml)."""
    target = Path(path)
    if target.exists() and not force:
        raise click.UsageError(f"{target} exists; pass --force to overwrite it")
    target.write_text(STARTER.format(name=target.name))
    click.echo(f"wrote {target}; edit it, then run: tunery train {target}")


# --------------------------------------------------------------------------- generate and merge


@cli.command()
@click.argument("target")
@click.option("--prompt", "prompts", multiple=True, required=True, help="Prompt text (repeatable).")
@click.option("--chat/--no-chat", default=None, help="Apply the tokenizer's chat template (default: when it has one).")
@click.option("--max-new-tokens", type=int, default=64, show_default=True)
@click.option("--temperature", type=float, default=0.0, show_default=True, help="0 = greedy.")
@click.option("--constraint", "constraints", multiple=True, metavar="NAME[:ARG]",
              help="Decoding constraint (repeatable): stop:###, ban:words.txt, require:a,b, regex:PATTERN, "
                   "json-schema:schema.json, repetition:1.3, length:10-40; `tunery plugins` lists them.")
@click.option("--control", "control", multiple=True, metavar="COLUMN=VALUE",
              help="Control code of a run trained with data.control (repeatable): --control sentiment=positive.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True, help="Prompts generated together.")
@click.pass_context
def generate(ctx, target, prompts, chat, max_new_tokens, temperature, constraints, control, batch_size) -> None:
    """Generate with a run folder (base + adapter, or full model) or any model reference."""
    setup_logging(False)
    values = {}
    for item in control:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise click.UsageError(f"--control {item!r}: give COLUMN=VALUE, e.g. --control sentiment=positive")
        values[key.strip()] = value.strip()
    outputs = get_engine(ctx).generate(target, list(prompts), chat=chat, max_new_tokens=max_new_tokens,
                                       temperature=temperature, constraints=list(constraints),
                                       control=values or None, batch_size=batch_size)
    for prompt, output in zip(prompts, outputs):
        if len(prompts) > 1:
            click.echo(f"### {prompt}")
        click.echo(output)


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--output-dir", required=True, type=click.Path(file_okay=False), help="Folder for the merged model.")
@click.pass_context
def merge(ctx, run_dir, output_dir) -> None:
    """Fold a run's adapter into the base weights: a standalone model folder."""
    setup_logging(False)
    out = get_engine(ctx).merge(run_dir, output_dir)
    click.echo(f"merged model written to {out}")


# --------------------------------------------------------------------------- eval


@cli.command("eval")
@click.argument("target", required=False)
@click.option("--evaluator", "evaluators", multiple=True, help="Evaluator plugin (repeatable); default: the run's own.")
@click.option("--data", "data", multiple=True,
              help="Evaluation data (repeatable); default: the run's own evaluation data.")
@click.option("--format", "format", help="Data formatter for --data (default: the run's).")
@click.option("--set", "overrides", multiple=True, metavar="EVALUATOR.KEY=VALUE", help="Set an evaluator option.")
@click.option("--compare", nargs=2, metavar="RUN_A RUN_B", type=click.Path(file_okay=False, exists=True),
              help="Put two finished runs' metrics side by side instead.")
@click.option("--output", type=click.Path(dir_okay=False), help="Write metrics, worst examples and outputs here (JSON).")
@click.option("--few-shot", type=click.IntRange(min=0), default=0, metavar="K",
              help="Prompting baseline: K training examples in front of each evaluation prompt.")
@click.option("--shots-from", multiple=True, help="Data to draw the --few-shot examples from (default: the run's training data).")
@click.pass_context
def eval_(ctx, target, evaluators, data, format, overrides, compare, output, few_shot, shots_from) -> None:
    """Evaluate a run folder or model (TARGET), or compare two runs (--compare RUN_A RUN_B)."""
    setup_logging(False)
    if compare:
        if target:
            raise click.UsageError("give either TARGET or --compare RUN_A RUN_B, not both")
        _print_comparison(compare)
        return
    if not target:
        raise click.UsageError("give a run folder or model to evaluate, or --compare RUN_A RUN_B")
    results = get_engine(ctx).evaluate(target, evaluators, data, format, overrides, few_shot, shots_from)
    for name, result in results.items():
        for key, value in result.metrics.items():
            click.echo(f"{name}/{key} = {_fmt(value)}")
        if result.worst:
            click.echo(f"  ({len(result.worst)} worst examples of {name}{'; --output keeps them' if not output else ''})")
    if output:
        import dataclasses

        Path(output).write_text(json.dumps({n: dataclasses.asdict(r) for n, r in results.items()}, indent=2, default=str))
        click.echo(f"results written to {output}")


def _print_comparison(run_dirs) -> None:
    from .evaluation import compare_runs

    table = compare_runs(run_dirs)
    names = [Path(d).name or str(d) for d in run_dirs]
    width = max([len(k) for k in table] + [6])
    click.echo(f"{'metric':<{width}}  {names[0]:>14}  {names[1]:>14}  {'B - A':>10}")
    for key, (a, b) in table.items():
        delta = _fmt(b - a) if a is not None and b is not None else "-"
        click.echo(f"{key:<{width}}  {_fmt(a) if a is not None else '-':>14}  {_fmt(b) if b is not None else '-':>14}  {delta:>10}")


def main() -> None:  # console-script entry point
    cli(prog_name="tunery")


if __name__ == "__main__":
    main()
