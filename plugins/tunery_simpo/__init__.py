"""Objective ``simpo``: Simple Preference Optimisation (Meng et al. 2024), reference-free.

The loss is ``-log sigmoid(beta * (mean logp(chosen) - mean logp(rejected)) - gamma)``: the
length-normalised log-probability is the implicit reward and ``gamma`` a target margin (as
TRL's CPOTrainer with ``loss_type="simpo"``). ``sft_weight`` adds the chosen response's
language-model loss (CPO-SimPO). No reference model: one model in memory with any method.
"""

from __future__ import annotations

import dataclasses

from tunery import ConfigError, Objective, hookimpl


@dataclasses.dataclass
class SimpoOptions:
    beta: float = 2.0
    gamma: float = 0.5  # target reward margin
    sft_weight: float = 0.0

    def validate(self, where):
        if self.beta <= 0 or self.gamma < 0 or self.sft_weight < 0:
            raise ConfigError(f"config keys '{where}.beta' must be positive and '{where}.gamma', "
                              f"'{where}.sft_weight' >= 0, got {self.beta}, {self.gamma}, {self.sft_weight}")


def simpo_loss(chosen, rejected, beta: float, gamma: float):
    """Per-pair SimPO losses from per-token mean log-probs."""
    import torch.nn.functional as F

    return -F.logsigmoid(beta * (chosen - rejected) - gamma)


class Simpo(Objective):
    name = "simpo"
    description = "SimPO: length-normalised log-prob margin with a target gap; no reference model"
    tasks = frozenset({"preference"})
    Options = SimpoOptions

    def compute_loss(self, model, inputs, options, run):
        from tunery import pair_logps, record

        chosen, rejected = pair_logps(model, inputs, run, average=True)
        losses = simpo_loss(chosen, rejected, options.beta, options.gamma)
        if options.sft_weight:
            losses = losses - options.sft_weight * chosen
        if model.training:
            record(run.state.setdefault(self.name, {}),
                   **{"rewards/chosen": options.beta * chosen.detach(), "rewards/rejected": options.beta * rejected.detach(),
                      "rewards/accuracy": (chosen > rejected).float(),
                      "rewards/margin": options.beta * (chosen - rejected).detach()})
        return losses.mean()

    def callbacks(self, options, run):
        from tunery import metrics_callback

        return [metrics_callback(run.state.setdefault(self.name, {}))]


@hookimpl
def tunery_register_objectives(registry):
    registry.add(Simpo())
