"""Extension ``curriculum``: train from easy to hard.

Each training example gets a difficulty (``by``): ``length`` (its tokens), ``loss`` (the base
model's own loss on it, computed once and cached under tunery's cache folder) or ``column`` (a
numeric column of the rows, ``column: NAME``). The ``pacing`` decides the order the examples are
trained in (tunery then samples sequentially, no shuffling):

* ``sorted`` -- every example once, easiest first;
* ``staged`` -- ``stages`` equal steps ("baby steps"): step k draws, in random order, from the
  easiest k/stages of the data;
* ``competence`` -- Platanios et al. (2019): at training progress t the pool is the easiest
  c(t) = min(1, sqrt(t (1 - c0^2) + c0^2)) of the data, sampled at random.

What was seen when: ``curriculum.json`` in the run folder (the difficulty of each position of
the order, and its mean per tenth of the epoch) and ``curriculum/difficulty`` (mean difficulty of
the examples trained since the previous record) in each ``train_log.jsonl`` record.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
from typing import Literal

from tunery import ConfigError, DataError, Extension, IncompatibleError, hookimpl


@dataclasses.dataclass
class CurriculumOptions:
    by: Literal["length", "loss", "column"] = "length"
    column: str | None = None  # by: column
    pacing: Literal["sorted", "staged", "competence"] = "sorted"
    stages: int = 3  # pacing: staged
    c0: float = 0.2  # pacing: competence, the share of the data available at the start
    hardest_first: bool = False  # reverse the difficulty (anti-curriculum)

    def validate(self, where):
        if self.by == "column" and not self.column:
            raise ConfigError(f"config key '{where}.column' is required with by: column (the row column to read)")
        if self.by != "column" and self.column:
            raise ConfigError(f"config key '{where}.column' is set but '{where}.by' is {self.by}; set by: column")
        if self.stages < 1:
            raise ConfigError(f"config key '{where}.stages' must be 1 or more, got {self.stages}")
        if not 0.0 < self.c0 <= 1.0:
            raise ConfigError(f"config key '{where}.c0' must be in (0, 1], got {self.c0}")


def length_of(example: dict) -> int:
    return sum(len(v) for k, v in example.items() if k.endswith("input_ids") and isinstance(v, list))


def schedule(difficulty: list[float], pacing: str, stages: int = 3, c0: float = 0.2, seed: int = 0) -> list[int]:
    """Indices of the examples in training order (easy to hard) under ``pacing``."""
    n = len(difficulty)
    ranked = sorted(range(n), key=lambda i: (difficulty[i], i))
    rng = random.Random(seed)
    if pacing == "sorted":
        return ranked
    if pacing == "staged":
        order: list[int] = []
        for k in range(1, stages + 1):
            pool = ranked[: max(1, math.ceil(n * k / stages))]
            take = (n * k) // stages - (n * (k - 1)) // stages
            order.extend(rng.sample(pool, min(take, len(pool))))
        return order
    if pacing == "competence":
        out = []
        for i in range(n):
            c = min(1.0, math.sqrt((i / n) * (1 - c0 ** 2) + c0 ** 2))
            out.append(ranked[rng.randrange(max(1, math.ceil(c * n)))])
        return out
    raise ConfigError(f"unknown curriculum pacing '{pacing}'; use sorted, staged or competence")


class Curriculum(Extension):
    name = "curriculum"
    description = "curriculum learning: easy to hard by length, base-model loss or a column; sorted/staged/competence pacing"
    keeps_order = True
    Options = CurriculumOptions

    def check(self, options, run):
        if options.by == "loss" and run.data_task not in ("causal_lm", "classification"):
            raise IncompatibleError(f"extension 'curriculum': by: loss needs causal_lm or classification data, "
                                    f"not {run.data_task}; use by: length or by: column")

    def transform_rows(self, rows, options, run, split):
        if options.by != "column" or split != "train":
            return rows
        out = []
        for row in rows:
            value = row.values.get(options.column) if isinstance(row.values, dict) else None
            try:
                score = float(value)
            except (TypeError, ValueError):
                raise DataError(f"{row.source}: extension 'curriculum' reads the difficulty from column "
                                f"'{options.column}', which is {'missing' if value is None else repr(value)}; "
                                "give every row a number there") from None
            out.append(dataclasses.replace(row, tags={**row.tags, "_difficulty": score}))
        return out

    def transform_examples(self, examples, options, run, split):
        if split != "train" or not examples:
            return examples
        if options.by == "length":
            difficulty = [float(length_of(ex)) for ex in examples]
        elif options.by == "loss":
            difficulty = base_losses(run, examples)
        else:
            difficulty = [float(ex["_difficulty"]) for ex in examples]
        if options.hardest_first:
            difficulty = [-d for d in difficulty]
        order = schedule(difficulty, options.pacing, options.stages, options.c0, run.config.seed)
        ordered = [{**examples[i], "_difficulty": abs(difficulty[i])} for i in order]
        seen = [ex["_difficulty"] for ex in ordered]
        tenth = max(1, len(seen) // 10)
        summary = {"by": options.by, "pacing": options.pacing, "difficulty": seen,
                   "mean_by_tenth": [round(sum(seen[i:i + tenth]) / len(seen[i:i + tenth]), 4)
                                     for i in range(0, len(seen), tenth)]}
        run.state[self.name] = {"seen": seen, "summary": summary}
        if run.output_dir.is_dir():
            (run.output_dir / "curriculum.json").write_text(json.dumps(summary))
        return ordered

    def callbacks(self, options, run):
        from transformers import TrainerCallback

        state = run.state

        class Seen(TrainerCallback):
            last = 0

            def on_log(self, args, st, control, logs=None, **kwargs):
                seen = state.get("curriculum", {}).get("seen")
                if logs is None or not seen or "loss" not in logs:
                    return
                per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
                end = st.global_step * per_step
                window = [seen[p % len(seen)] for p in range(self.last, max(end, self.last + 1))]
                self.last = end
                logs["curriculum/difficulty"] = round(sum(window) / len(window), 4)

        return [Seen()]


def base_losses(run, examples: list[dict]) -> list[float]:
    """Each example's loss under the run's base model (``run.model``), cached by model and data."""
    import torch
    from tunery import example_losses, logits

    key = hashlib.sha256(json.dumps([run.config.model, run.model_source.path if run.model_source else None,
                                     [{k: v for k, v in ex.items() if not k.startswith("_")} for ex in examples]],
                                    sort_keys=True, default=str).encode()).hexdigest()[:32]
    path = run.engine.cache_dir / "curriculum" / f"{key}.json"
    if path.is_file():
        return json.loads(path.read_text())
    model = run.model
    was_training = model.training
    model.eval()
    causal = run.model_task == "causal_lm"
    out: list[float] = []
    with torch.no_grad():
        for batch in run.batches([{k: v for k, v in ex.items() if not k.startswith("_")} for ex in examples]):
            batch = {k: v.to(next(model.parameters()).device) for k, v in batch.items()}
            out.extend(example_losses(logits(model, batch), batch["labels"], causal))
    model.train(was_training)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out))
    return out


@hookimpl
def tunery_register_extensions(registry):
    registry.add(Curriculum())
