"""A sweep on Optuna: each trial an ordinary run (``Engine.train``) in ``<sweep>/trial-NNN``, the
study in ``<sweep>/sweep.db`` (SQLite), so a sweep killed at any point resumes where it was and
several processes share one search.

Pruning: every ``training.eval_steps`` the trial's run reports the sweep metric to Optuna from
the ``tunery_evaluation`` hook (an in-process plugin object); when the pruner says stop, the
hook raises :class:`Pruned`, which is no ``Exception`` so the engine's observer guard lets it
end the run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from tunery import ConfigError, Engine, Interrupted, TuneryError, hookimpl

from .space import SweepOptions, distributions, fingerprint, get_key, grid, split_config, trial_config

log = logging.getLogger("tunery")

STUDY = "tunery-sweep"
DB = "sweep.db"
OWN_FILES = (DB, "best.yaml", "sweep.md", "summary.json", "objective.png", "importances.png",
             "parallel_coordinates.png", "intermediate.png", "ray", ".lock")


class Pruned(BaseException):
    """Stops a trial's run from inside a hook (derives from BaseException on purpose)."""

    def __init__(self, step: int):
        super().__init__(f"pruned at step {step}")
        self.step = step


class PruningReporter:
    """In-process plugin of one trial: reports the sweep metric of each evaluation during
    training to the Optuna trial and stops the run when the pruner says so."""

    def __init__(self, trial: Any, metric: str):
        self.trial, self.metric = trial, metric

    @hookimpl
    def tunery_evaluation(self, run, phase, metrics):
        if phase != "during" or self.metric not in metrics:
            return
        self.trial.report(float(metrics[self.metric]), step=int(metrics["step"]))
        if self.trial.should_prune():
            raise Pruned(int(metrics["step"]))


@dataclasses.dataclass
class Sweep:
    """A validated sweep: its folder, the config of every trial without the ``sweep:`` section,
    and that section."""

    folder: Path
    base: dict
    options: SweepOptions

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.base, self.options)

    def base_params(self, engine: Engine) -> dict:
        """The config's own value of each searched key (where it has one)."""
        resolved = engine.config(trial_config(self.base, {}, str(self.folder / "trial"))).to_dict()
        found = {name: get_key(resolved, name) for name in self.options.parameters}
        if found.get("training.learning_rate", 0) is None:  # unset: the method's own default applies
            found["training.learning_rate"] = engine.methods.get(resolved["method"]["name"]).default_learning_rate
        return {k: v for k, v in found.items() if v is not None}

    def run_config(self, params: dict, name: str) -> dict:
        return trial_config(self.base, params, str(self.folder / name))


def prepare(engine: Engine, raw: dict, trials: int | None = None, output_dir: str | None = None) -> Sweep:
    """Validate a config with a ``sweep:`` section: the section, and a trial at each end of every
    range (so a misspelt key or an impossible value is refused before anything trains)."""
    from .space import describe

    base, options = split_config(raw)
    if trials is not None:
        options.trials = trials
    if options.trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {options.trials}")
    folder = Path(output_dir or base.get("output_dir") or "")
    if not str(folder) or str(folder) == ".":
        raise ConfigError("missing required config key 'output_dir' (the sweep folder; trials go in it)")
    sweep = Sweep(folder, base, options)
    for end in (0, -1):
        params = {}
        for name, spec in options.parameters.items():
            kind, arg = describe(name, spec, "sweep")
            params[name] = arg[end]
        try:
            config = engine.check(sweep.run_config(params, "trial-check"))
        except ConfigError as exc:
            raise type(exc)(f"sweep: a trial with {', '.join(f'{k}={_fmt(v)}' for k, v in params.items())} "
                            f"is refused: {exc}") from None
    evaluator = options.metric.split("/", 1)[0]
    names = [c.name for c in config.evaluators]
    if evaluator not in names:
        raise ConfigError(f"config key 'sweep.metric': '{options.metric}' names evaluator '{evaluator}', which the "
                          f"runs do not use; their evaluators: {', '.join(names) or 'none'} (metrics are evaluator/metric)")
    if engine.evaluators.get(evaluator).uses_run_data and not (config.data.eval or config.data.val_split):
        raise ConfigError("config key 'sweep.metric' is measured on evaluation data: set data.eval or data.val_split")
    if options.pruner != "none" and not config.training.eval_steps:
        log.info("sweep: no pruning, the runs evaluate only at the end (set training.eval_steps to prune bad trials)")
    return sweep


# ----------------------------------------------------------------------------- the study


def storage(folder: Path):
    import optuna

    return optuna.storages.RDBStorage(f"sqlite:///{folder.resolve() / DB}",
                                      engine_kwargs={"connect_args": {"timeout": 120}})


def open_study(sweep: Sweep, worker: int = 0):
    """The sweep's study (created when new); ``worker`` varies the sampler's seed between processes."""
    import optuna

    o = sweep.options
    seed = o.seed + worker
    if o.sampler == "grid":
        sampler = optuna.samplers.GridSampler(grid(o), seed=seed)
    elif o.sampler == "random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=o.startup_trials)
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=o.prune_after, n_warmup_steps=0)
              if o.pruner == "median" else optuna.pruners.NopPruner())
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(study_name=STUDY, storage=storage(sweep.folder), sampler=sampler, pruner=pruner,
                               direction="maximize" if o.maximize else "minimize", load_if_exists=True)


def start(engine: Engine, sweep: Sweep, overwrite: bool = False):
    """Create the study in the sweep folder, or resume the one there: trials that a crash left
    running are run again (their folders are replaced); finished ones are kept."""
    from optuna.trial import TrialState

    folder = sweep.folder
    if overwrite:
        for name in [*OWN_FILES, *(p.name for p in folder.glob("trial-*"))]:
            path = folder / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    resuming = (folder / DB).is_file()
    if not resuming and folder.is_dir() and any(folder.iterdir()):
        raise ConfigError(f"sweep folder '{folder}' already holds files but no sweep ({DB}); "
                          "choose another output_dir, or pass --overwrite to replace a sweep's files there")
    folder.mkdir(parents=True, exist_ok=True)
    study = open_study(sweep)
    if resuming:
        if study.user_attrs.get("fingerprint") != sweep.fingerprint:
            raise ConfigError(f"sweep folder '{folder}' holds a sweep of another config or search space; "
                              "pass --overwrite to start it again, or choose another output_dir")
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            log.info("sweep: trial %d was interrupted; running its parameters again", trial.number)
            study.tell(trial.number, state=TrialState.FAIL)
            study.enqueue_trial(trial.params, user_attrs={**trial.user_attrs, "retry_of": trial.number})
            shutil.rmtree(folder / trial_name(trial.number), ignore_errors=True)
    else:
        study.set_user_attr("fingerprint", sweep.fingerprint)
        study.set_user_attr("metric", sweep.options.metric)
        if sweep.options.start_from_config and sweep.options.sampler != "grid":
            study.enqueue_trial(sweep.base_params(engine), user_attrs={"from_config": True})
    return study


def trial_name(number: int) -> str:
    return f"trial-{number:03d}"


def counted(study) -> int:
    """Trials that count towards the total: finished, failed with an error, or running now
    (a trial failed because a crash interrupted it is run again and does not count)."""
    from optuna.trial import TrialState

    n = 0
    for t in study.get_trials(deepcopy=False):
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING):
            n += 1
        elif t.state == TrialState.FAIL and "error" in t.user_attrs:
            n += 1
    return n


@contextlib.contextmanager
def _locked(folder: Path):
    """One process at a time decides whether another trial starts (no overshoot in parallel)."""
    import fcntl

    with open(folder / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def work(sweep: Sweep, worker: int = 0, plugins: tuple = ()) -> None:
    """Run trials until the sweep has ``trials`` of them (this process's share of the work)."""
    study = open_study(sweep, worker)
    space = distributions(sweep.options)
    while True:
        with _locked(sweep.folder):
            if counted(study) >= sweep.options.trials:
                return
            trial = study.ask(space)
        run_trial(sweep, study, trial, plugins)


def run_trial(sweep: Sweep, study, trial, plugins: tuple = ()) -> None:
    """One trial: its run to the end (the objective is the metric after training), stopped
    early by the pruner, or failed with the run's error (recorded; the sweep goes on)."""
    from optuna.trial import TrialState

    metric, name = sweep.options.metric, trial_name(trial.number)
    log.info("sweep: %s: %s", name, ", ".join(f"{k}={_fmt(v)}" for k, v in trial.params.items()))
    engine = Engine(plugins=[*plugins, PruningReporter(trial, metric)])
    try:
        result = engine.train(sweep.run_config(trial.params, name))
    except Pruned as stop:
        trial.set_user_attr("pruned_at", stop.step)
        study.tell(trial, state=TrialState.PRUNED)
        log.info("sweep: %s pruned at step %d", name, stop.step)
        return
    except Interrupted:  # Ctrl-C or SIGTERM: the sweep stops; this trial is run again on resume
        study.tell(trial, state=TrialState.FAIL)
        raise
    except TuneryError as exc:
        trial.set_user_attr("error", str(exc))
        study.tell(trial, state=TrialState.FAIL)
        log.warning("sweep: %s failed: %s", name, exc)
        return
    value = numeric(result.metrics.get("after") or {}).get(metric)
    if value is None:
        have = ", ".join(numeric(result.metrics.get("after") or {})) or "none"
        trial.set_user_attr("error", f"no metric '{metric}' after training")
        study.tell(trial, state=TrialState.FAIL)
        raise ConfigError(f"config key 'sweep.metric': the runs have no metric '{metric}' after training; they have: {have}")
    trial.set_user_attr("seconds", result.metrics.get("wall_seconds"))
    trial.set_user_attr("steps", result.metrics.get("train", {}).get("steps"))
    study.tell(trial, value)
    log.info("sweep: %s: %s = %.6g", name, metric, value)


def _worker(folder: str, base: dict, options: dict, worker: int, threads: int) -> None:
    """Entry point of a parallel worker process."""
    import sys

    if threads:
        import torch

        torch.set_num_threads(threads)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s [worker {worker}] %(levelname)s %(message)s", "%H:%M:%S"))
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    work(Sweep(Path(folder), base, SweepOptions(**options)), worker)


def run(engine: Engine, sweep: Sweep, parallel: int = 1, overwrite: bool = False, plugins: tuple = ()):
    """Run (or resume) the sweep with ``parallel`` processes; returns the study."""
    import multiprocessing

    study = start(engine, sweep, overwrite)
    if parallel <= 1:
        work(sweep, 0, plugins)
        return study
    threads = 0 if "OMP_NUM_THREADS" in os.environ else max(1, (os.cpu_count() or 1) // parallel)
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_worker, args=(str(sweep.folder), sweep.base, dataclasses.asdict(sweep.options),
                                                     i, threads)) for i in range(parallel)]
    for process in workers:
        process.start()
    for process in workers:
        process.join()
    failed = [i for i, p in enumerate(workers) if p.exitcode != 0]
    if failed:
        raise TuneryError(f"sweep worker(s) {', '.join(map(str, failed))} stopped with an error (see the log above); "
                          "run the same command again to resume")
    return study


def numeric(metrics: dict) -> dict:
    """The metrics that are plain numbers."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
