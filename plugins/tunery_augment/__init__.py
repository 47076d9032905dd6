"""Extension ``augment``: more training rows from the ones there are, keeping labels valid.

Each training row gets ``copies`` augmented copies; each copy applies one of ``ops``, chosen at
random, to the text ``columns`` (never to other columns, so labels and responses stay as they
were):

* ``swap`` -- swap two words, ``p`` of the words times (at least once);
* ``delete`` -- delete each word with probability ``p`` (never all of them);
* ``insert`` -- insert ``p`` of the words again (a word of the same text) at random places;
* ``mask`` -- replace a span of ``p`` of the words with ``mask_token`` (the tokenizer's mask token, or ``_``);
* ``paraphrase`` -- the base model itself rewrites the text (greedy, ``max_new_tokens``).

Evaluation rows are never augmented, augmented rows are never held out for evaluation, and the
data summary (``metrics.json`` "data", ``report.md``) counts them as ``augmented``.
"""

from __future__ import annotations

import dataclasses
import logging
import random

from tunery import ConfigError, Extension, hookimpl

OPS = ("swap", "delete", "insert", "mask", "paraphrase")
TEXT_COLUMNS = ("text", "sentence", "instruction", "input", "prompt", "question")  # the default columns
log = logging.getLogger("tunery")


@dataclasses.dataclass
class AugmentOptions:
    copies: int = 1  # augmented copies of each training row
    ops: list[str] = dataclasses.field(default_factory=lambda: ["swap", "delete", "insert", "mask"])
    p: float = 0.1  # share of the words an op changes
    columns: list[str] = dataclasses.field(default_factory=list)  # empty: those of TEXT_COLUMNS a row has
    mask_token: str | None = None
    max_new_tokens: int = 48  # paraphrase

    def validate(self, where):
        if self.copies < 1:
            raise ConfigError(f"config key '{where}.copies' must be 1 or more, got {self.copies}")
        if not self.ops:
            raise ConfigError(f"config key '{where}.ops' is empty; choose from {', '.join(OPS)}")
        for op in self.ops:
            if op not in OPS:
                raise ConfigError(f"config key '{where}.ops': unknown op '{op}'; choose from {', '.join(OPS)}")
        if not 0.0 < self.p < 1.0:
            raise ConfigError(f"config key '{where}.p' must be in (0, 1), got {self.p}")


def transform(text: str, op: str, p: float, rng: random.Random, mask_token: str = "_") -> str:
    """``text`` changed by one word-level ``op`` (swap, delete, insert, mask)."""
    words = text.split()
    if len(words) < 2:
        return text if op != "insert" or not words else f"{words[0]} {words[0]}"
    count = max(1, round(p * len(words)))
    if op == "swap":
        for _ in range(count):
            i, j = rng.sample(range(len(words)), 2)
            words[i], words[j] = words[j], words[i]
    elif op == "delete":
        kept = [w for w in words if rng.random() >= p]
        words = kept or [rng.choice(words)]
        if len(words) == len(text.split()):
            del words[rng.randrange(len(words))]
    elif op == "insert":
        for _ in range(count):
            words.insert(rng.randrange(len(words) + 1), rng.choice(words))
    elif op == "mask":
        start = rng.randrange(len(words) - count + 1)
        words[start:start + count] = [mask_token]
    else:
        raise ConfigError(f"unknown augmentation op '{op}'")
    return " ".join(words)


class Augment(Extension):
    name = "augment"
    description = "data augmentation: word swap/delete/insert, span masking, base-model paraphrases (train rows only)"
    Options = AugmentOptions

    def transform_rows(self, rows, options, run, split):
        if split != "train":
            return rows
        rng = random.Random(run.config.seed)
        mask = options.mask_token or getattr(run.tokenizer, "mask_token", None) or "_"
        plans = []  # (row, column values to set, op)
        for row in rows:
            if not isinstance(row.values, dict):
                continue
            columns = options.columns or [c for c in TEXT_COLUMNS if isinstance(row.values.get(c), str)
                                          and row.values[c].strip()]
            for _ in range(options.copies):
                plans.append((row, columns, rng.choice(options.ops)))
        paraphrases = self._paraphrases(plans, options, run)
        out = list(rows)
        empty = 0
        for k, (row, columns, op) in enumerate(plans):
            values = dict(row.values)
            for column in columns:
                if not isinstance(values.get(column), str):
                    continue
                values[column] = paraphrases.get((k, column)) if op == "paraphrase" else transform(
                    values[column], op, options.p, rng, mask)
            if any(not values.get(c) for c in columns if isinstance(row.values.get(c), str)):
                empty += 1  # a paraphrase came back empty: no copy
                continue
            out.append(dataclasses.replace(row, values=values, tags={**row.tags, "_augmented": True}))
        if empty:
            log.warning("augment: %d paraphrase(s) came back empty; those rows got no copy", empty)
        return out

    def _paraphrases(self, plans, options, run) -> dict:
        wanted = [(k, c, row.values[c]) for k, (row, columns, op) in enumerate(plans) if op == "paraphrase"
                  for c in columns if isinstance(row.values.get(c), str)]
        if not wanted:
            return {}
        from tunery import generate

        model = run.engine.load(run.config.model).model
        prompts = [f"Rewrite the following text in other words, keeping its meaning.\nText: {text}\nRewritten:"
                   for _, _, text in wanted]
        outputs = generate(model, run.tokenizer, prompts, max_new_tokens=options.max_new_tokens)
        return {(k, c): out.strip().split("\n")[0].strip() for (k, c, _), out in zip(wanted, outputs)}


@hookimpl
def tunery_register_extensions(registry):
    registry.add(Augment())
