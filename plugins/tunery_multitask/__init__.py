"""Formatter ``multitask``: a mixture of data sets, each with its own formatter and optional
instruction template, mixed by weights, interleaving or concatenation (seeded).

Each task names the files it owns among ``data.train`` / ``data.eval`` (glob patterns matched
against the path or the file name, or a folder). Every example keeps its task name under
``_task`` (the collator ignores ``_`` keys), so the ``loss`` evaluator reports each task apart.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import random
from typing import Any, Literal

from tunery import ConfigError, Formatter, RowError, hookimpl


@dataclasses.dataclass
class TaskOptions:
    name: str
    files: list[str]  # patterns picking this task's files, e.g. ["qa*.jsonl"] or a folder
    format: Any  # a formatter name, or {name: ..., its options}
    weight: float = 1.0  # share of the mixture (mixing: weights)
    template: dict = dataclasses.field(default_factory=dict)  # column -> "text with {column} fields"


@dataclasses.dataclass
class MultitaskOptions:
    tasks: list[TaskOptions] = dataclasses.field(default_factory=list)
    mixing: Literal["weights", "interleave", "concat"] = "weights"
    size: int | None = None  # training rows drawn when mixing by weights (default: all rows of all tasks)

    def validate(self, where: str) -> None:
        if not self.tasks:
            raise ConfigError(f"config key '{where}.tasks' must list at least one task")
        names = [t.name for t in self.tasks]
        for i, task in enumerate(self.tasks):
            if names.index(task.name) != i:
                raise ConfigError(f"config key '{where}.tasks[{i}].name': task '{task.name}' is named twice")
            if task.weight <= 0:
                raise ConfigError(f"config key '{where}.tasks[{i}].weight' must be positive, got {task.weight}")
            if not task.files:
                raise ConfigError(f"config key '{where}.tasks[{i}].files' must name at least one file pattern")


class Multitask(Formatter):
    name = "multitask"
    description = "a seeded mixture of data sets, each with its own formatter; examples keep their task"
    task = "causal_lm"
    Options = MultitaskOptions

    def _tasks(self, options, run) -> dict[str, tuple[Any, Any, dict]]:
        """task name -> (formatter, its parsed options, template), resolved once per run."""
        key = self.name
        if key not in run.state:
            resolved = {}
            for i, task in enumerate(options.tasks):
                where = f"format.tasks[{i}].format"
                raw = task.format if isinstance(task.format, dict) else {"name": task.format}
                raw = dict(raw)
                name = raw.pop("name", None)
                if not isinstance(name, str) or name not in run.engine.formatters or name == self.name:
                    installed = ", ".join(n for n in run.engine.formatters.names() if n != self.name)
                    raise ConfigError(f"config key '{where}': no formatter named {name!r}; installed: {installed}")
                member = run.engine.formatters.get(name)
                if member.task != self.task:
                    raise ConfigError(f"config key '{where}': formatter '{name}' makes {member.task} data; "
                                      f"every multitask task must make {self.task} data")
                resolved[task.name] = (member, member.parse_options(raw, where), task.template)
            run.state[key] = resolved
        return run.state[key]

    def prepare_rows(self, rows, options, run, split):
        tasks = self._tasks(options, run)
        groups: dict[str, list] = {t.name: [] for t in options.tasks}
        owner: dict[str, str] = {}
        for row in rows:
            file = row.source.file
            if file not in owner:
                owner[file] = _owner(file, options.tasks)
            if isinstance(row.values, dict):
                row = dataclasses.replace(row, values={**row.values, "_task": owner[file]})
            groups[owner[file]].append(row)
        for name, group in groups.items():
            member, parsed, _ = tasks[name]
            groups[name] = member.prepare_rows(group, parsed, run, split)
        if split != "train" or options.mixing == "concat":
            return [row for group in groups.values() for row in group]
        rng = random.Random(run.config.seed)
        if options.mixing == "interleave":
            mixed, position = [], 0
            while len(mixed) < sum(map(len, groups.values())):
                mixed += [group[position] for group in groups.values() if position < len(group)]
                position += 1
            return mixed
        return _weighted(groups, {t.name: t.weight for t in options.tasks}, options.size, rng)

    def format(self, row, tokenizer, options, run):
        name = row.get("_task")
        tasks = self._tasks(options, run)
        if not isinstance(name, str) or name not in tasks:
            raise RowError("missing column", "the row has no task (multitask rows come from files matched by "
                                             "format.tasks[].files)")
        member, parsed, template = tasks[name]
        values = {k: v for k, v in row.items() if k != "_task"}
        for column, text in template.items():
            try:
                values[column] = str(text).format_map(values)
            except KeyError as exc:
                raise RowError("missing column", f"task '{name}': template.{column} uses {exc}, "
                                                 "which this row lacks") from None
            except (ValueError, IndexError) as exc:
                raise RowError("bad template", f"task '{name}': template.{column}: {exc}") from None
        produced = member.format(values, tokenizer, parsed, run)
        return [{**ex, "_task": name} for ex in (produced if isinstance(produced, list) else [produced])]


def _owner(file: str, tasks: list[TaskOptions]) -> str:
    """The one task whose ``files`` patterns match ``file``."""
    def matches(pattern: str) -> bool:
        if os.path.isdir(pattern):
            return os.path.abspath(file).startswith(os.path.abspath(pattern) + os.sep)
        return fnmatch.fnmatch(file, pattern) or fnmatch.fnmatch(os.path.basename(file), pattern)

    found = [t.name for t in tasks if any(matches(p) for p in t.files)]
    if len(found) != 1:
        listing = "; ".join(f"{t.name}: {', '.join(t.files)}" for t in tasks)
        what = "no task" if not found else f"several tasks ({', '.join(found)})"
        raise ConfigError(f"data file '{file}' matches {what} in format.tasks[].files ({listing}); "
                          "give each file exactly one task")
    return found[0]


def _weighted(groups: dict[str, list], weights: dict[str, float], size: int | None, rng: random.Random) -> list:
    """``size`` rows, each from a task drawn with probability proportional to its weight; a
    task's rows are taken in a shuffled order and reused once all were taken."""
    names = [n for n, g in groups.items() if g]
    orders = {n: rng.sample(groups[n], len(groups[n])) for n in names}
    taken = dict.fromkeys(names, 0)
    mixed = []
    for name in rng.choices(names, [weights[n] for n in names], k=size or sum(map(len, groups.values()))):
        mixed.append(orders[name][taken[name] % len(orders[name])])
        taken[name] += 1
    return mixed


@hookimpl
def tunery_register_formatters(registry):
    registry.add(Multitask())
