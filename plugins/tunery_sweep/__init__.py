"""The ``tunery sweep CONFIG`` command: hyper-parameter search on Optuna (or Ray Tune with the
Optuna searcher, ``--backend ray``) over any config key, from the config's ``sweep:`` section::

    sweep:
      parameters:
        training.learning_rate: {log_uniform: [1.0e-5, 1.0e-3]}
        method.r: [4, 8, 16]
      metric: loss/loss
      trials: 12

Each trial is an ordinary run folder under the sweep folder (the config's ``output_dir``).
Needs the ``sweep`` extra (``ray`` for ``--backend ray``); see docs/sweep.md.
"""

from __future__ import annotations

from tunery import hookimpl


@hookimpl
def tunery_register_commands(cli):
    import click

    @cli.command()
    @click.argument("config", type=click.Path(dir_okay=False, exists=True))
    @click.option("--trials", type=click.IntRange(min=1), help="Number of trials (default: sweep.trials).")
    @click.option("--parallel", type=click.IntRange(min=1), default=1, show_default=True,
                  help="Trials run at once, each in its own process (Ray: at most this many workers).")
    @click.option("--backend", type=click.Choice(["optuna", "ray"]), default="optuna", show_default=True,
                  help="optuna: processes on this machine sharing the SQLite study; ray: Ray Tune trials on a cluster.")
    @click.option("--address", help="Ray cluster address (default: a local Ray instance with --parallel workers).")
    @click.option("--output-dir", help="Sweep folder (default: the config's output_dir).")
    @click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override a config key (repeatable).")
    @click.option("--overwrite", is_flag=True, help="Start again: delete the sweep's study and trials in the folder.")
    @click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
    @click.pass_context
    def sweep(ctx, config, trials, parallel, backend, address, output_dir, overrides, overwrite, verbose):
        """Search hyper-parameters: run the trials of CONFIG's sweep: section; resumes when run again."""
        import importlib.util

        from tunery import PluginError, apply_overrides, command_engine, load_raw, setup_logging

        from . import summary as summary_files
        from .study import prepare, run

        setup_logging(verbose)
        engine = command_engine(ctx)
        for module, extra in (("optuna", "sweep"), *((("ray", "ray"),) if backend == "ray" else ())):
            if importlib.util.find_spec(module) is None:
                raise PluginError(f"tunery sweep{' --backend ray' if extra == 'ray' else ''} needs {module}: "
                                  f"pip install 'tunery[{extra}]'")
        plan = prepare(engine, apply_overrides(load_raw(config), list(overrides)), trials, output_dir)
        click.echo(f"sweep: {plan.options.trials} trials of {', '.join(plan.options.parameters)} on "
                   f"{plan.options.metric} ({'maximize' if plan.options.maximize else 'minimize'}) -> {plan.folder}",
                   err=True)
        if backend == "ray":
            from .ray_backend import run_ray

            study, names = run_ray(engine, plan, parallel, address, overwrite)
        else:
            study, names = run(engine, plan, parallel, overwrite), {}
        result = summary_files.write(study, plan.folder, plan.base, plan.options, names)
        click.echo(f"{result['trials']} trials: {result['complete']} complete, {result['pruned']} pruned, "
                   f"{result['failed']} failed")
        best, base = result["best"], result["config_trial"]
        if base and base["value"] is not None:
            click.echo(f"config's own values: {plan.options.metric} = {base['value']:.6g} ({base['folder']})")
        if best:
            click.echo(f"best: {plan.options.metric} = {best['value']:.6g} ({best['folder']}) with "
                       + ", ".join(f"{k}={v}" for k, v in best["params"].items()))
            click.echo(f"best config: {plan.folder / 'best.yaml'}; summary: {plan.folder / 'sweep.md'}")
