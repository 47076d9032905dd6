"""Sequence packing: several causal-LM examples share one training row, never one another's attention.

A packed row holds ``input_ids``, ``labels`` and ``position_ids`` that restart at 0 for every
example; the first label of each example is masked, so the last token of one example is never
asked to predict the first token of the next. Batches of packed rows carry *no* attention mask:
transformers then reads the example boundaries from the restarting ``position_ids``
(``masking_utils.find_packed_sequence_indices``) and builds a block-diagonal causal mask for the
sdpa, eager and flex attention -- provided the model runs with ``use_cache=False``
(transformers looks for packed examples only without a KV cache; the trainer passes it). Flash
attention only finds the boundaries in a single flattened row, so for it
:class:`~tunery.collate.Collator` concatenates a batch into one ``[1, tokens]`` row
(transformers' ``DataCollatorWithFlattening`` layout) and flash runs its variable-length kernel.
"""

from __future__ import annotations

import bisect

from .collate import IGNORE_INDEX

PACKED_KEYS = ("input_ids", "labels")


def pack(examples: list[dict], max_length: int) -> list[dict]:
    """Pack ``examples`` into rows of at most ``max_length`` tokens (best fit, longest first).

    Deterministic; every token of every example is kept. An example longer than ``max_length``
    gets a row of its own."""
    order = sorted(range(len(examples)), key=lambda i: (-len(examples[i]["input_ids"]), i))
    rows: list[list[int]] = []
    room: list[tuple[int, int]] = []  # (free tokens, row index), sorted
    for i in order:
        n = len(examples[i]["input_ids"])
        at = bisect.bisect_left(room, (n, -1))
        if at == len(room):
            rows.append([i])
            free = max_length - n
            if free > 0:
                bisect.insort(room, (free, len(rows) - 1))
            continue
        free, row = room.pop(at)
        rows[row].append(i)
        if free - n > 0:
            bisect.insort(room, (free - n, row))
    return [_join([examples[i] for i in sorted(members)]) for members in rows]


def _join(members: list[dict]) -> dict:
    row: dict[str, list[int]] = {"input_ids": [], "labels": [], "position_ids": []}
    for example in members:
        ids = list(example["input_ids"])
        labels = list(example["labels"])
        row["input_ids"] += ids
        row["labels"] += [IGNORE_INDEX] + labels[1:]
        row["position_ids"] += list(range(len(ids)))
    return row


def can_pack(examples: list[dict]) -> bool:
    """Whether the examples are plain causal-LM examples (``input_ids`` and ``labels`` lists)."""
    return bool(examples) and all(
        isinstance(ex.get("input_ids"), list) and isinstance(ex.get("labels"), list)
        and not (set(ex) - set(PACKED_KEYS)) - {k for k in ex if k.startswith("_")}
        for ex in examples
    )


def packing_enabled(run) -> bool:
    """``data.packing``, or when unset: on for causal-LM data if the method and objective support it."""
    packing = run.config.data.packing
    if packing is None:
        return run.data_task == "causal_lm" and run.method.supports_packing and run.objective.supports_packing
    return packing


def needs_flat_batches(model) -> bool:
    """Flash attention finds packed examples only in a single flattened row."""
    config = getattr(model, "config", None)
    return "flash" in str(getattr(config, "_attn_implementation", "") or "")
