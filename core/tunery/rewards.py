"""Reward sources of the online objectives (``grpo``, ``rloo``): what scores a generated completion.

An objective's ``rewards`` option lists them, each with a ``weight`` (default 1.0):

* ``{function: mypkg.rewards:short}`` -- a Python function with TRL's convention
  ``f(prompts, completions, **columns) -> list[float]`` (completions as text, the other data
  columns of each prompt's row passed by name; ``None`` where it does not apply);
* ``{model: runs/rm}`` -- a reward model run folder (objective ``reward``): the score of
  prompt + completion, rendered as the reward model was trained (its chat template if it has one);
* ``{name: exact_match, ...}`` or ``exact_match`` -- a :class:`tunery.Reward` registered by a
  plugin (hook ``tunery_register_rewards``); the other keys are its options.

The total reward of a completion is the weighted sum of its sources (a ``None`` counts as 0).
Heavy imports stay inside the functions.
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .errors import ConfigError, IncompatibleError, RowError

if TYPE_CHECKING:  # pragma: no cover
    from .context import RunContext


class Source:
    """One reward source: ``name`` (for the logs), ``weight`` and ``score(prompts, completions, columns)``."""

    def __init__(self, name: str, weight: float, score: Callable[[list, list[str], dict], list]):
        self.name, self.weight, self._score = name, weight, score

    def score(self, prompts: list, completions: list[str], columns: dict[str, list], where: str) -> list[float]:
        values = list(self._score(prompts, completions, columns))
        if len(values) != len(completions):
            raise ConfigError(f"{where}: reward '{self.name}' returned {len(values)} values for {len(completions)} completions")
        out = []
        for v in values:
            if v is None:
                out.append(math.nan)
            elif isinstance(v, bool) or not isinstance(v, (int, float)) and not hasattr(v, "__float__"):
                raise ConfigError(f"{where}: reward '{self.name}' returned {v!r}; it must return numbers (or None)")
            else:
                out.append(float(v))
        return out


class RewardSources:
    """The weighted reward sources of a run; call it on completions for totals and per-source values."""

    def __init__(self, sources: list[Source], where: str):
        self.sources, self.where = sources, where

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sources]

    def __call__(self, prompts: list, completions: list[str], columns: dict[str, list]) -> tuple[list[float], dict[str, list[float]]]:
        """``(total per completion, {source name: values})``; non-finite totals are refused."""
        per = {s.name: s.score(prompts, completions, columns, self.where) for s in self.sources}
        totals = []
        for i in range(len(completions)):
            values = [s.weight * per[s.name][i] for s in self.sources if not math.isnan(per[s.name][i])]
            total = sum(values)
            if not math.isfinite(total):
                raise ConfigError(f"{self.where}: the reward of completion {completions[i]!r} is {total}; "
                                  "reward sources must return finite numbers")
            totals.append(total)
        return totals, per


def import_function(path: str, where: str) -> Callable:
    """The function named ``module.path:function``."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"config key '{where}.function' must be 'module.path:function', got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"config key '{where}.function': cannot import module '{module_name}' ({exc}); "
                          "is it installed or on PYTHONPATH?") from None
    func = getattr(module, attr, None)
    if not callable(func):
        raise ConfigError(f"config key '{where}.function': module '{module_name}' has no function '{attr}'")
    return func


def _entries(raw: Any, where: str) -> list[dict]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"config key '{where}' must be a non-empty list of reward sources, e.g. "
                          "[{function: mypkg.rewards:short}, {model: runs/rm}, {name: exact_match}]")
    out = []
    for i, entry in enumerate(raw):
        entry = {"name": entry} if isinstance(entry, str) else entry
        if not isinstance(entry, dict):
            raise ConfigError(f"config key '{where}[{i}]' must be a mapping or a reward name, got {entry!r}")
        kinds = [k for k in ("function", "model", "name") if k in entry]
        if len(kinds) != 1:
            raise ConfigError(f"config key '{where}[{i}]' needs exactly one of 'function', 'model' or 'name', "
                              f"got {sorted(entry)}")
        weight = entry.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise ConfigError(f"config key '{where}[{i}].weight' must be a finite number, got {weight!r}")
        out.append(entry)
    return out


def check_reward_sources(raw: Any, run: RunContext, where: str) -> None:
    """Validate the ``rewards`` option before any weights load: functions import, names are
    registered with valid options, model folders are reward model runs."""
    from .runs import is_run_dir

    for i, entry in enumerate(_entries(raw, where)):
        here = f"{where}[{i}]"
        if "function" in entry:
            extra = set(entry) - {"function", "weight"}
            if extra:
                raise ConfigError(f"config key '{here}': unknown key(s) {', '.join(sorted(extra))} for a function reward")
            import_function(entry["function"], here)
        elif "model" in entry:
            extra = set(entry) - {"model", "weight", "batch_size"}
            if extra:
                raise ConfigError(f"config key '{here}': unknown key(s) {', '.join(sorted(extra))} for a reward model")
            if not is_run_dir(entry["model"]):
                raise ConfigError(f"config key '{here}.model': '{entry['model']}' is not a tunery run folder "
                                  "(train one with --objective reward --format preference)")
        else:
            member = run.engine.rewards.get(entry["name"])
            member.parse_options({k: v for k, v in entry.items() if k not in ("name", "weight")}, here)


def reward_sources(raw: Any, run: RunContext, where: str) -> RewardSources:
    """The reward sources of an objective's ``rewards`` option, ready to score (reward model
    run folders are loaded now, onto ``run.device``, without touching the random state)."""
    import torch

    sources = []
    with torch.random.fork_rng(devices=[]):
        for i, entry in enumerate(_entries(raw, where)):
            here, weight = f"{where}[{i}]", float(entry.get("weight", 1.0))
            if "function" in entry:
                func = import_function(entry["function"], here)
                sources.append(Source(entry["function"].rpartition(":")[2], weight,
                                      lambda p, c, cols, f=func: f(prompts=p, completions=c, **cols)))
            elif "model" in entry:
                scorer = RewardModel(run, entry["model"], entry.get("batch_size"), here)
                sources.append(Source(Path(entry["model"]).name or "model", weight, scorer))
            else:
                member = run.engine.rewards.get(entry["name"])
                options = member.parse_options({k: v for k, v in entry.items() if k not in ("name", "weight")}, here)
                sources.append(Source(member.name, weight,
                                      lambda p, c, cols, m=member, o=options: m.score(p, c, cols, o, run)))
    names = [s.name for s in sources]
    for i, source in enumerate(sources):  # the logs need distinct names
        if names.count(source.name) > 1:
            source.name = f"{source.name}_{i}"
    return RewardSources(sources, where)


class RewardModel:
    """Scores prompt + completion with a reward model run folder (a one-output sequence classifier)."""

    def __init__(self, run: RunContext, path: str, batch_size: int | None, where: str):
        loaded = run.engine.load(path)
        task = loaded.manifest["task"]
        if task["model"] != "classification" or task.get("num_labels") != 1:
            raise IncompatibleError(f"config key '{where}.model': run '{path}' is not a reward model; "
                                    "train one with --objective reward --format preference")
        self.model = loaded.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.run = run
        self.tokenizer, self.max_length = loaded.tokenizer, loaded.config.data.max_length
        self.batch_size = batch_size or run.config.training.batch_size

    def ids(self, prompt: Any, completion: str) -> list[int]:
        from .text import bos_ids, chat_prompt_response, encode, has_chat_template, prompt_response

        tok = self.tokenizer
        try:
            if has_chat_template(tok):
                messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
                ids = chat_prompt_response(tok, messages, completion, allow_empty=True)["input_ids"]
            else:
                text = prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)
                ids = prompt_response(tok, text, completion)["input_ids"]
        except RowError:  # an empty completion without an end-of-sequence token: the prompt alone
            ids = bos_ids(tok) + encode(tok, prompt if isinstance(prompt, str) else str(prompt))
        return ids[-self.max_length:]

    def __call__(self, prompts: list, completions: list[str], columns: dict) -> list[float]:
        import torch

        from .collate import Collator

        device = next(self.model.parameters()).device
        if self.run.device is not None and device != self.run.device:  # follow the policy onto its device
            self.model.to(self.run.device)
            device = next(self.model.parameters()).device
        collate, scores = Collator(self.tokenizer.pad_token_id), []
        examples = [{"input_ids": self.ids(p, c)} for p, c in zip(prompts, completions)]
        with torch.no_grad():
            for start in range(0, len(examples), self.batch_size):
                batch = {k: v.to(device) for k, v in collate(examples[start:start + self.batch_size]).items()}
                scores += self.model(**batch).logits[:, 0].float().tolist()
        return scores
