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
import heapq
from collections.abc import Sequence as SequenceABC
from typing import Any, Sequence

from .collate import IGNORE_INDEX

PACKED_KEYS = ("input_ids", "labels")


def pack(examples: Sequence[dict], max_length: int) -> PackedRows:
    """Pack ``examples`` into rows of at most ``max_length`` tokens (best fit, longest first).

    Deterministic; every token of every example is kept. An example longer than ``max_length``
    gets a row of its own. Only the lengths are held in memory (read from the Arrow column of
    memory-mapped examples); a row is joined when it is read."""
    import numpy as np

    sizes = np.asarray(examples.lengths() if hasattr(examples, "lengths")  # memory-mapped: a column
                       else [len(ex["input_ids"]) for ex in examples], dtype=np.int32)
    order = np.argsort(-sizes, kind="stable").astype(np.int32)  # longest first, then in order
    row_of = np.empty(len(sizes), dtype=np.int32)
    frees: list[int] = []  # the free room values that some row has, sorted
    rows_with: dict[int, list[int]] = {}  # free room -> heap of the rows with it
    n_rows = 0
    smallest = max(1, int(sizes.min())) if len(sizes) else 1
    for i, n in _blocks(order, sizes):
        at = bisect.bisect_left(frees, n)
        if at == len(frees):  # no row has room: a new one
            row, free = n_rows, max_length - n
            n_rows += 1
        else:  # the fullest row with room (the first one made among equals)
            room = frees[at]
            row = heapq.heappop(rows_with[room])
            if not rows_with[room]:
                del rows_with[room], frees[at]
            free = room - n
        row_of[i] = row
        if free >= smallest:  # a row with less room than the shortest example is full
            if free not in rows_with:
                rows_with[free] = []
                bisect.insort(frees, free)
            heapq.heappush(rows_with[free], row)
    members = np.argsort(row_of, kind="stable").astype(np.int32)  # each row's examples, in their order
    starts = np.searchsorted(row_of[members], np.arange(n_rows + 1))
    return PackedRows(examples, members, starts)


def _blocks(order, sizes, size: int = 1 << 16):
    """``(index, length)`` in ``order`` as Python ints, a block at a time (a million-row list of
    ints would cost more memory than the arrays themselves)."""
    for start in range(0, len(order), size):
        block = order[start:start + size]
        yield from zip(block.tolist(), sizes[block].tolist())


class PackedRows(SequenceABC):
    """Packed training rows (a sequence of dicts): which examples each row holds, joined when read."""

    def __init__(self, examples: Sequence[dict], members: Any, starts: Any):
        self.examples, self._members, self._starts = examples, members, starts

    def __len__(self) -> int:
        return len(self._starts) - 1

    def __getitem__(self, r):
        if isinstance(r, slice):
            return [self[i] for i in range(*r.indices(len(self)))]
        if r < 0:
            r += len(self)
        if not 0 <= r < len(self):
            raise IndexError(f"packed row {r} of {len(self)}")
        return _join([self.examples[int(i)] for i in self._members[self._starts[r]:self._starts[r + 1]]])

    def lengths(self):
        """The token count of every packed row (numpy), without joining them."""
        import numpy as np

        examples = self.examples
        sizes = np.asarray(examples.lengths() if hasattr(examples, "lengths")
                           else [len(ex["input_ids"]) for ex in examples], dtype=np.int32)[self._members]
        return np.add.reduceat(sizes, self._starts[:-1]) if len(self) else sizes[:0]

    def __eq__(self, other) -> bool:
        return isinstance(other, SequenceABC) and len(self) == len(other) and all(a == b for a, b in zip(self, other))

    __hash__ = None


def _join(members: list[dict]) -> dict:
    row: dict[str, list[int]] = {"input_ids": [], "labels": [], "position_ids": []}
    for example in members:
        ids = list(example["input_ids"])
        labels = list(example["labels"])
        row["input_ids"] += ids
        row["labels"] += [IGNORE_INDEX] + labels[1:]
        row["position_ids"] += list(range(len(ids)))
    return row


def can_pack(examples: Sequence[dict]) -> bool:
    """Whether the examples are plain causal-LM examples (``input_ids`` and ``labels`` lists);
    for memory-mapped examples, as found when they were formatted."""
    packable = getattr(examples, "packable", None)
    if packable is not None:
        return bool(examples) and packable
    return bool(examples) and all(
        isinstance(ex.get("input_ids"), list) and isinstance(ex.get("labels"), list)
        and not (set(ex) - set(PACKED_KEYS)) - {k for k in ex if k.startswith("_")}
        for ex in examples
    )


def packing_enabled(run) -> bool:
    """``data.packing``, or when unset: on for causal-LM data if the method and objective support it
    and no extension sets the order of the examples (packing reorders them)."""
    packing = run.config.data.packing
    if packing is None:
        return (run.data_task == "causal_lm" and run.method.supports_packing and run.objective.supports_packing
                and not any(ext.keeps_order for ext, _ in run.extensions))
    return packing


def needs_flat_batches(model) -> bool:
    """Flash attention finds packed examples only in a single flattened row."""
    config = getattr(model, "config", None)
    return "flash" in str(getattr(config, "_attn_implementation", "") or "")
