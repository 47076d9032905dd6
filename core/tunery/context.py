"""The run context: what every plugin member receives during a run, and what a run returns.

Part of the contract (imported by members and hook specs): imports nothing above it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:  # pragma: no cover
    from .config import RunConfig
    from .engine import Engine
    from .models import ResolvedModel


@dataclasses.dataclass
class RunContext:
    """Everything a plugin may need during a run. Plugins read it; only the core writes it
    (plugins keep their own per-run values in :attr:`state`, under their member's name).

    Build one with :meth:`RunContext.create`; the chosen members are :attr:`method`,
    :attr:`objective`, :attr:`formatter`, :attr:`quantizer` and :attr:`extensions`."""

    config: RunConfig
    output_dir: Path
    engine: Engine
    data_task: str  # what the formatter produces: causal_lm, classification, preference, ...
    model_task: str = "causal_lm"  # the head loaded: causal_lm, classification, seq2seq, token_classification
    num_labels: int | None = None
    label_names: list[str] | None = None
    tokenizer: Any = None
    model_source: ResolvedModel | None = None
    total_steps: int | None = None  # planned optimizer steps
    device: Any = None
    model: Any = None  # the run's model once loaded: the base model, then the one being trained
    state: dict = dataclasses.field(default_factory=dict)  # free space for plugins, keyed by member name

    @classmethod
    def create(cls, engine: Engine, config: RunConfig, **fields: Any) -> RunContext:
        """The context of a run of ``config``; ``data_task`` defaults to the formatter's task
        and ``model_task``/``num_labels`` to what the objective loads for it."""
        fields.setdefault("output_dir", Path(config.output_dir))
        fields.setdefault("data_task", engine.formatters.get(config.format.name).task)
        if "model_task" not in fields:
            fields["model_task"], num_labels = engine.objectives.get(config.objective.name).model_task(fields["data_task"])
            fields.setdefault("num_labels", num_labels)
        return cls(config=config, engine=engine, **fields)

    # The chosen members, looked up by name.
    @property
    def method(self):
        return self.engine.methods.get(self.config.method.name)

    @property
    def objective(self):
        return self.engine.objectives.get(self.config.objective.name)

    @property
    def formatter(self):
        return self.engine.formatters.get(self.config.format.name)

    @property
    def quantizer(self):
        return self.engine.quantizers.get(self.config.quantizer.name)

    @property
    def extensions(self) -> list[tuple[Any, Any]]:
        """``(extension, options)`` of each configured extension, in order."""
        return [(self.engine.extensions.get(c.name), c.options) for c in self.config.extensions]

    @property
    def quantized(self) -> bool:
        return self.quantizer.quantizes

    @property
    def can_generate(self) -> bool:
        """Whether the tuned model of this run generates text."""
        from .members import GENERATIVE_TASKS

        return self.model_task in GENERATIVE_TASKS and self.method.can_generate and self.objective.can_generate

    def notify(self, hook: str, **kwargs) -> None:
        """Call a lifecycle hook; a plugin that raises is reported by name and the run goes on."""
        self.engine.notify(hook, run=self, **kwargs)

    def batches(self, examples: list[dict], batch_size: int | None = None) -> Iterator[dict]:
        """Padded batches of ``examples`` on the model's device, in order."""
        from .collate import Collator

        collate = Collator(self.tokenizer.pad_token_id)
        size = batch_size or self.config.training.batch_size
        for start in range(0, len(examples), size):
            batch = collate(examples[start:start + size])
            yield {k: v.to(self.device) if self.device is not None else v for k, v in batch.items()}


@dataclasses.dataclass
class RunResult:
    """What a finished run produced."""

    output_dir: Path
    model_dir: Path
    metrics: dict
    samples: dict = dataclasses.field(default_factory=dict)
    model: Any = dataclasses.field(default=None, repr=False)  # the trained model, still in memory
