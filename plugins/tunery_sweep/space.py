"""The ``sweep:`` section of a config: what to search, what to optimise, how.

Cheap to import (optuna loads inside the functions that need it).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from typing import Any, Literal

from tunery import ConfigError, coerce, set_config_key

RANGES = ("log_uniform", "uniform", "int")


@dataclasses.dataclass
class SweepOptions:
    parameters: dict = dataclasses.field(default_factory=dict)  # config key -> range or list of choices
    metric: str = "loss/loss"  # "evaluator/metric" after training; the objective
    direction: Literal["minimize", "maximize"] | None = None  # None: minimize losses and perplexities
    trials: int = 10
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    pruner: Literal["median", "none"] = "median"  # stop trials whose during-training metric is below the median
    prune_after: int = 2  # finished trials before the pruner judges others
    startup_trials: int = 4  # TPE: random trials before it models the results
    seed: int = 0
    start_from_config: bool = True  # the first trial takes the config's own values (the baseline to beat)

    def validate(self, where: str) -> None:
        if not self.parameters:
            raise ConfigError(f"missing required config key '{where}.parameters' (config keys to search, e.g. "
                              "training.learning_rate: {log_uniform: [1.0e-5, 1.0e-3]})")
        if "/" not in self.metric:
            raise ConfigError(f"config key '{where}.metric' must be 'evaluator/metric' (e.g. loss/loss), got {self.metric!r}")
        for key, minimum in (("trials", 1), ("prune_after", 0), ("startup_trials", 0)):
            if getattr(self, key) < minimum:
                raise ConfigError(f"config key '{where}.{key}' must be at least {minimum}, got {getattr(self, key)}")
        for name, spec in self.parameters.items():
            describe(name, spec, where)  # raises on a bad spec
        if self.sampler == "grid":
            for name, spec in self.parameters.items():
                if isinstance(spec, dict) and "int" not in spec:
                    raise ConfigError(f"config key '{where}.parameters.{name}': the grid sampler needs a list of "
                                      "choices or an {int: [a, b]} range, not a continuous range")

    @property
    def maximize(self) -> bool:
        if self.direction is not None:
            return self.direction == "maximize"
        return not self.metric.rsplit("/", 1)[-1].endswith(("loss", "perplexity"))


def describe(name: str, spec: Any, where: str) -> tuple[str, Any]:
    """``(kind, argument)`` of one parameter: ``("choices", [..])``, ``("log_uniform", (a, b))``,
    ``("uniform", (a, b))`` or ``("int", (a, b))``; a ConfigError names the key otherwise."""
    path = f"{where}.parameters.{name}"
    if isinstance(spec, list):
        if not spec:
            raise ConfigError(f"config key '{path}': the list of choices is empty")
        if not all(v is None or isinstance(v, (bool, int, float, str)) for v in spec):
            raise ConfigError(f"config key '{path}': choices must be numbers, strings, booleans or null, got {spec!r}")
        return "choices", list(spec)
    if isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in RANGES:
        kind, bounds = next(iter(spec.items()))
        if (not isinstance(bounds, list) or len(bounds) != 2
                or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)):
            raise ConfigError(f"config key '{path}.{kind}' must be [low, high], got {bounds!r}")
        low, high = bounds
        if low >= high:
            raise ConfigError(f"config key '{path}.{kind}': low {low} must be below high {high}")
        if kind == "log_uniform" and low <= 0:
            raise ConfigError(f"config key '{path}.log_uniform': bounds must be positive, got {bounds!r}")
        if kind == "int" and not all(float(b).is_integer() for b in bounds):
            raise ConfigError(f"config key '{path}.int': bounds must be integers, got {bounds!r}")
        return kind, (int(low), int(high)) if kind == "int" else (float(low), float(high))
    raise ConfigError(f"config key '{path}' must be a list of choices or one of "
                      f"{{log_uniform: [a, b]}}, {{uniform: [a, b]}}, {{int: [a, b]}}; got {spec!r}")


def distributions(options: SweepOptions) -> dict:
    """Optuna distributions of the parameters."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out = {}
    for name, spec in options.parameters.items():
        kind, arg = describe(name, spec, "sweep")
        if kind == "choices":
            out[name] = CategoricalDistribution(arg)
        elif kind == "int":
            out[name] = IntDistribution(*arg)
        else:
            out[name] = FloatDistribution(*arg, log=kind == "log_uniform")
    return out


def grid(options: SweepOptions) -> dict[str, list]:
    """Every value of each parameter, for the grid sampler."""
    out = {}
    for name, spec in options.parameters.items():
        kind, arg = describe(name, spec, "sweep")
        out[name] = list(arg) if kind == "choices" else list(range(arg[0], arg[1] + 1))
    return out


def split_config(raw: dict) -> tuple[dict, SweepOptions]:
    """The config without its ``sweep:`` section, and that section validated."""
    raw = copy.deepcopy(raw)
    section = raw.pop("sweep", None)
    if section is None:
        raise ConfigError("the config has no 'sweep:' section: add one with 'parameters:' (config keys to search), "
                          "'metric:' and 'trials:' (see docs/sweep.md)")
    if not isinstance(section, dict):
        raise ConfigError(f"config key 'sweep' must be a mapping, got {section!r}")
    return raw, coerce(section, SweepOptions, "sweep")


def get_key(config: dict, path: str) -> Any:
    """The value of the dotted key ``path`` in a resolved config mapping, or None."""
    node: Any = config
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def trial_config(base: dict, params: dict, output_dir: str) -> dict:
    """The run config of one trial: ``base`` with ``params`` set, writing to ``output_dir``."""
    raw = copy.deepcopy(base)
    for name, value in params.items():
        set_config_key(raw, name, value, f"sweep.parameters.{name}")
    raw["output_dir"] = output_dir
    raw["overwrite"] = True
    raw.pop("resume", None)
    return raw


def fingerprint(base: dict, options: SweepOptions) -> str:
    """What makes two sweeps the same search (the trial count may change between resumes)."""
    search = {**dataclasses.asdict(options), "trials": None}
    base = {k: v for k, v in base.items() if k not in ("output_dir", "overwrite")}
    return hashlib.sha256(json.dumps([base, search], sort_keys=True, default=str).encode()).hexdigest()[:16]
