"""Evaluator ``reward_accuracy``: on held-out preference pairs, the share ranked right and the margin.

For a reward model the pair's scores are the head's outputs; for a policy (a causal LM, e.g.
trained with DPO) they are the summed log-probabilities of the chosen and rejected responses.
"""

from __future__ import annotations

import dataclasses

from tunery import Evaluator, hookimpl


@dataclasses.dataclass
class RewardAccuracyOptions:
    batch_size: int | None = None  # default: training.batch_size


class RewardAccuracy(Evaluator):
    name = "reward_accuracy"
    description = "share of held-out pairs where chosen scores above rejected, and the mean margin"
    tasks = frozenset({"preference"})
    default = True
    Options = RewardAccuracyOptions

    def evaluate(self, model, dataset, options, run):
        from tunery import pair_metrics, score_examples

        return pair_metrics(score_examples(model, dataset, run, options.batch_size))


@hookimpl
def tunery_register_evaluators(registry):
    registry.add(RewardAccuracy())
