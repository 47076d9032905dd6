"""Objective ``sft``: supervised fine-tuning with the model's own loss.

The default objective of supervised data: next-token cross-entropy on the labelled tokens of
causal-LM examples (computed in chunks from the hidden states, never building the full logits,
and with packed rows), cross-entropy on the label of classification examples, on the decoder's
target tokens of seq2seq examples and on each labelled token of token-classification examples.
"""

from __future__ import annotations

from tunery import Objective, hookimpl


class Sft(Objective):
    name = "sft"
    description = "supervised fine-tuning: the model's own loss (causal LM tokens, class labels, seq2seq, tokens)"
    tasks = frozenset({"causal_lm", "classification", "seq2seq", "token_classification"})
    default = True
    supports_packing = True


@hookimpl
def tunery_register_objectives(registry):
    registry.add(Sft())
