"""Batching of examples: pads every token sequence of a batch to its longest member.

Keys ending in ``input_ids`` are padded with the pad token and get a matching
``attention_mask`` (``chosen_input_ids`` -> ``chosen_attention_mask``); keys ending in
``labels`` are padded with -100 when they are sequences; scalar values are stacked. The same
rule serves language modelling, classification and preference pairs.

Packed rows (see :mod:`tunery.packing`) bring ``position_ids``: their batches get no attention
mask, so transformers reads the example boundaries from the positions; with ``flatten`` the
rows of a batch are concatenated into one row (for flash attention).
"""

from __future__ import annotations

from collections import deque
from typing import Any

IGNORE_INDEX = -100


class Collator:
    """Pads a list of examples into a batch of tensors, counting real and padded tokens.

    With ``count_when_trained`` a batch is counted only when :meth:`trained` is called for it
    (batches are trained in the order they are made): a data loader fetches one batch ahead,
    and that batch is not trained yet when a checkpoint is saved."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None, flatten: bool = False,
                 count_when_trained: bool = False):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of
        self.flatten = flatten
        self.real_tokens = 0
        self.padded_tokens = 0
        self.count_when_trained = count_when_trained
        self._made: deque[tuple[int, int]] = deque()  # counts of the batches made, not yet trained

    def trained(self) -> None:
        """Count the oldest batch made and not yet counted (``count_when_trained``)."""
        if self._made:
            real, padded = self._made.popleft()
            self.real_tokens += real
            self.padded_tokens += padded

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        counts = (self.real_tokens, self.padded_tokens)
        batch = self._collate(features)
        if self.count_when_trained:
            self._made.append((self.real_tokens - counts[0], self.padded_tokens - counts[1]))
            self.real_tokens, self.padded_tokens = counts
        return batch

    def _collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        batch: dict[str, Any] = {}
        keys = [k for k in features[0] if not k.startswith("_")]
        packed = "position_ids" in keys
        if packed and self.flatten:
            features = [{k: [t for f in features for t in f[k]] for k in keys}]
        for key in keys:
            values = [f[key] for f in features]
            if isinstance(values[0], (list, tuple)):
                if key.endswith("attention_mask"):
                    continue  # rebuilt below from the padded ids
                pad = IGNORE_INDEX if key.endswith("labels") else (0 if key.endswith("position_ids") else self.pad_token_id)
                length = max(len(v) for v in values)
                if self.pad_to_multiple_of:
                    length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
                batch[key] = torch.tensor([list(v) + [pad] * (length - len(v)) for v in values], dtype=torch.long)
                if key.endswith("input_ids") and packed:
                    self.real_tokens += sum(len(v) for v in values)
                    self.padded_tokens += batch[key].numel()
                elif key.endswith("input_ids"):
                    prefix = key[: -len("input_ids")]
                    mask = torch.tensor([[1] * len(v) + [0] * (length - len(v)) for v in values], dtype=torch.long)
                    batch[prefix + "attention_mask"] = mask
                    self.real_tokens += int(mask.sum())
                    self.padded_tokens += mask.numel()
            elif isinstance(values[0], float):
                batch[key] = torch.tensor(values, dtype=torch.float32)
            elif isinstance(values[0], (int, bool)):
                batch[key] = torch.tensor(values, dtype=torch.long)
        return batch
