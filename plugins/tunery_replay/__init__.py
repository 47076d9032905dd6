"""Extension ``replay``: rehearsal for continual learning. A ``fraction`` of earlier tasks'
training examples (drawn at random) joins this run's training data, each formatted with its own
task's formatter. In a ``stages:`` config the earlier stages' data is filled in (``sources``); in
a chained run name it: ``{name: replay, data: [task1.jsonl], format: alpaca, fraction: 0.2}``."""

from __future__ import annotations

import dataclasses
import logging
import random
from typing import Any

from tunery import ConfigError, Extension, hookimpl

log = logging.getLogger("tunery")


@dataclasses.dataclass
class ReplayOptions:
    fraction: float = 0.2  # share of the earlier data that is replayed
    data: list[str] = dataclasses.field(default_factory=list)  # earlier data (chained runs)
    format: Any = None  # its format (name or mapping); None: this run's
    sources: list[dict] = dataclasses.field(default_factory=list)  # [{data, format}], filled in by stages

    def validate(self, where):
        if not 0.0 < self.fraction <= 1.0:
            raise ConfigError(f"config key '{where}.fraction' must be in (0, 1], got {self.fraction}")
        for i, source in enumerate(self.sources):
            if not isinstance(source, dict) or not source.get("data"):
                raise ConfigError(f"config key '{where}.sources[{i}]' must be a mapping with 'data' (and 'format')")


class Replay(Extension):
    name = "replay"
    description = "continual learning: replay a fraction of earlier tasks' training data"
    Options = ReplayOptions

    def transform_examples(self, examples, options, run, split):
        from tunery import source_examples, sources_of

        sources = sources_of(options)
        if split != "train":
            return examples
        if not sources:
            log.info("replay: no earlier data (the first stage); nothing replayed")
            return examples
        rng = random.Random(run.config.seed)
        replayed = []
        for i, source in enumerate(sources):
            earlier = source_examples(run, source["data"], source.get("format"), f"replay.sources[{i}]")
            take = max(1, round(options.fraction * len(earlier))) if earlier else 0
            replayed += [{**ex, "_replay": True} for ex in rng.sample(earlier, take)]
        run.state[self.name] = {"replayed": len(replayed)}
        log.info("replay: %d earlier example(s) join %d of this task", len(replayed), len(examples))
        return examples + replayed


@hookimpl
def tunery_register_extensions(registry):
    registry.add(Replay())
