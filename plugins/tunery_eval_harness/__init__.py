"""Evaluator ``harness``: any task of EleutherAI's lm-evaluation-harness (ARC, HellaSwag, MMLU,
TruthfulQA, ...) on the run's model, before and after training, or on any run folder or model
with ``tunery eval``.

The model in memory (base + adapter) is wrapped in lm_eval's ``HFLM``; nothing is reloaded.
Tasks are named as lm_eval names them (``tasks: [arc_easy, hellaswag]``); ``data`` points at a
task YAML file or a folder of them (lm_eval's ``include_path``) to define tasks of your own on
local files. Metrics are ``harness/<task>/<metric>`` (``harness/arc_easy/acc``). Needs the
``harness`` extra: ``pip install 'tunery[harness]'``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tunery import ConfigError, EvalResult, Evaluator, IncompatibleError, hookimpl


@dataclasses.dataclass
class HarnessOptions:
    tasks: list[str] = dataclasses.field(default_factory=list)  # lm_eval task names; default: the tasks in `data`
    data: str | None = None  # a task YAML file or a folder of them (a file's folder is read), for tasks on local files
    num_fewshot: int | None = None  # None: each task's own default
    limit: float | None = None  # at most this many documents per task (a number below 1: that fraction)
    batch_size: int = 8
    seed: int = 0  # lm_eval's few-shot sampling seed
    samples: bool = False  # keep each document's result in evaluations/<phase>.json

    def validate(self, where: str) -> None:
        if self.data is not None and not Path(self.data).exists():
            raise ConfigError(f"config key '{where}.data': no task file or folder '{self.data}'")
        if not self.tasks and not (self.data and Path(self.data).is_file()):
            raise ConfigError(f"missing required config key '{where}.tasks' (lm_eval task names, e.g. [arc_easy]), "
                              "or set data to a task YAML file to run the tasks it defines")
        if self.limit is not None and self.limit <= 0:
            raise ConfigError(f"config key '{where}.limit' must be positive, got {self.limit}")
        if self.num_fewshot is not None and self.num_fewshot < 0:
            raise ConfigError(f"config key '{where}.num_fewshot' must be 0 or more, got {self.num_fewshot}")


def task_names(options: HarnessOptions) -> list[str]:
    """The tasks to run: ``tasks``, or those a task YAML file given as ``data`` defines."""
    if options.tasks:
        return list(options.tasks)
    import yaml

    found = yaml.safe_load(Path(options.data).read_text()) or {}
    names = found.get("task") if isinstance(found, dict) else None
    if not names:
        raise ConfigError(f"'{options.data}' defines no 'task:'; name the tasks with the option tasks")
    return [names] if isinstance(names, str) else list(names)


def flatten(results: dict) -> dict[str, float]:
    """``{"<task>/<metric>": value}`` of lm_eval's ``results`` section (``acc,none`` -> ``acc``)."""
    out = {}
    for task, values in results.items():
        for key, value in values.items():
            metric, _, filter_name = key.partition(",")
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not filter_name:
                continue
            out[f"{task}/{metric}" if filter_name == "none" else f"{task}/{metric}/{filter_name}"] = value
    return out


class HarnessEval(Evaluator):
    name = "harness"
    description = "lm-evaluation-harness tasks (arc_easy, hellaswag, mmlu, ... or your own YAML task)"
    tasks = frozenset({"causal_lm"})
    Options = HarnessOptions
    uses_run_data = False
    requires = ("lm_eval",)

    def evaluate(self, model, dataset, options, run):
        if run.model_task != "causal_lm":
            raise IncompatibleError(f"evaluator 'harness' needs a causal language model; this one is {run.model_task}")
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager

        names = task_names(options)
        manager, folder = None, None
        if options.data:  # lm_eval reads task YAMLs from a folder: a file's own folder
            folder = str(Path(options.data) if Path(options.data).is_dir() else Path(options.data).parent)
            # indexing lm_eval's own ~15k tasks takes seconds: skip it when the local ones suffice
            manager = TaskManager(include_path=folder, include_defaults=False)
        if manager is None or any(n not in manager.all_tasks for n in names):
            manager = TaskManager(include_path=folder)
        unknown = [n for n in names if n not in manager.all_tasks]
        if unknown:
            raise ConfigError(f"evaluator 'harness': no lm_eval task named '{unknown[0]}'"
                              f"{' among the tasks of ' + options.data if options.data else ''}; "
                              "`lm_eval ls tasks` lists them")
        limit = int(options.limit) if options.limit is not None and options.limit >= 1 else options.limit
        lm = HFLM(pretrained=model, tokenizer=run.tokenizer, batch_size=options.batch_size)
        out = lm_eval.simple_evaluate(
            model=lm, tasks=names, num_fewshot=options.num_fewshot, limit=limit, task_manager=manager,
            log_samples=options.samples, bootstrap_iters=0, random_seed=options.seed,
            fewshot_random_seed=options.seed)
        records = []
        if options.samples:
            for task, samples in out.get("samples", {}).items():
                for s in samples:
                    records.append({"task": task, "doc_id": s["doc_id"], "target": s["target"],
                                    **{m: s[m] for m in s.get("metrics", []) if m in s}})
        return EvalResult(flatten(out["results"]), records=records,
                          details={"versions": out.get("versions", {}), "n_shot": out.get("n-shot", {})})


@hookimpl
def tunery_register_evaluators(registry):
    registry.add(HarnessEval())
