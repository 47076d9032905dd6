"""``tunery sweep --backend ray``: the same sweep with its trials on a Ray cluster, one trial per
worker (one CPU, or one GPU where the cluster has them): Ray Tune's ``OptunaSearch`` proposes the
parameters (TPE, seeded), Ray's ``MedianStoppingRule`` stops trials whose during-training metric
falls below the median (the Ray counterpart of Optuna's median pruner). Ray keeps the experiment
in ``<sweep>/ray``; running the command again restores it. The summary is the same as with the
Optuna backend: the finished trials are copied into an Optuna study to draw it.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from tunery import ConfigError, Engine, hookimpl

from .space import distributions, trial_config
from .study import Sweep

log = logging.getLogger("tunery")

EXPERIMENT = "tunery-sweep"


class RayReporter:
    """In-process plugin of one Ray trial: each evaluation during training goes to Ray Tune,
    whose scheduler may stop the trial there."""

    def __init__(self, metric: str):
        self.metric = metric

    @hookimpl
    def tunery_evaluation(self, run, phase, metrics):
        if phase == "during" and self.metric in metrics:
            from ray import tune

            tune.report({"objective": float(metrics[self.metric]), "step": int(metrics["step"]), "finished": 0})


def ray_trial(params: dict, base: dict, folder: str, metric: str) -> None:
    """A Ray Tune function trainable: one tunery run with ``params`` set."""
    from ray import tune

    from .study import numeric

    out = Path(folder) / f"trial-{tune.get_context().get_trial_id()}"
    result = Engine(plugins=[RayReporter(metric)]).train(trial_config(base, params, str(out)))
    value = numeric(result.metrics.get("after") or {}).get(metric)
    if value is None:
        raise ConfigError(f"config key 'sweep.metric': the run has no metric '{metric}' after training")
    tune.report({"objective": float(value), "step": int(result.metrics["train"]["steps"]), "finished": 1,
                 "seconds": result.metrics.get("wall_seconds")})


def run_ray(engine: Engine, sweep: Sweep, parallel: int, address: str | None, overwrite: bool):
    """Run the sweep on Ray; returns an Optuna study of its trials and their folder names."""
    import optuna
    import ray
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler, MedianStoppingRule
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    o, folder = sweep.options, sweep.folder.resolve()
    if o.sampler == "grid":
        raise ConfigError("sweep.sampler 'grid' is not available with --backend ray; use tpe or random")
    experiment = folder / "ray" / EXPERIMENT
    if overwrite:
        shutil.rmtree(folder / "ray", ignore_errors=True)
        for path in folder.glob("trial-*"):
            shutil.rmtree(path)
    folder.mkdir(parents=True, exist_ok=True)
    mode = "max" if o.maximize else "min"
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, num_cpus=None if address else parallel, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
    trainable = tune.with_resources(
        tune.with_parameters(ray_trial, base=sweep.base, folder=str(folder), metric=o.metric), {"cpu": 1, "gpu": gpus})
    if tune.Tuner.can_restore(str(experiment)):
        log.info("sweep: resuming the Ray experiment in %s", experiment)
        tuner = tune.Tuner.restore(str(experiment), trainable, resume_errored=True)
    else:
        sampler = (optuna.samplers.RandomSampler(seed=o.seed) if o.sampler == "random"
                   else optuna.samplers.TPESampler(seed=o.seed, n_startup_trials=o.startup_trials))
        start = [sweep.base_params(engine)] if o.start_from_config else None
        searcher = ConcurrencyLimiter(OptunaSearch(space=distributions(o), metric="objective", mode=mode,
                                                   points_to_evaluate=start, sampler=sampler), max_concurrent=parallel)
        scheduler = (MedianStoppingRule(time_attr="step", metric="objective", mode=mode, grace_period=1,
                                        min_samples_required=max(o.prune_after, 1))
                     if o.pruner == "median" else FIFOScheduler())
        tuner = tune.Tuner(trainable, tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler,
                                                                  num_samples=o.trials, reuse_actors=True),
                           run_config=tune.RunConfig(name=EXPERIMENT, storage_path=str(folder / "ray"), verbose=0))
    try:
        results = tuner.fit()
    finally:
        if started:
            ray.shutdown()
    return to_study(results, sweep, engine)


def to_study(results, sweep: Sweep, engine: Engine):
    """The Ray trials as an Optuna study (in memory), for the summary, and their folder names."""
    import optuna
    from optuna.trial import TrialState, create_trial

    o = sweep.options
    space = distributions(o)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if o.maximize else "minimize")
    names = {}
    base = sweep.base_params(engine) if o.start_from_config else None
    for number, r in enumerate(results):
        history = r.metrics_dataframe
        steps = [] if history is None or "step" not in history else list(zip(history["step"], history["objective"],
                                                                              history["finished"]))
        during = {int(s): float(v) for s, v, f in steps if not f}
        metrics = r.metrics or {}
        params = {k: r.config[k] for k in space if k in r.config}
        attrs = {"from_config": params == base}
        if r.error is not None:
            state, value = TrialState.FAIL, None
            attrs["error"] = str(r.error).strip().splitlines()[-1]
        elif metrics.get("finished"):
            state, value = TrialState.COMPLETE, metrics["objective"]
            attrs.update(steps=metrics.get("step"), seconds=metrics.get("seconds"))
        else:
            state, value = TrialState.PRUNED, None
            attrs["pruned_at"] = max(during) if during else None
        study.add_trial(create_trial(params=params, distributions={k: space[k] for k in params}, value=value,
                                     state=state, intermediate_values=during, user_attrs=attrs))
        names[number] = f"trial-{metrics.get('trial_id') or _id_in_path(r.path)}"
    return study, names


def _id_in_path(path: str) -> str:
    """The trial id in a Ray trial folder name (``ray_trial_3f2a1_00004_4_...``)."""
    import re

    found = re.match(r"\w+?_([0-9a-f]{8})_", Path(path).name)
    return found.group(1) if found else Path(path).name
