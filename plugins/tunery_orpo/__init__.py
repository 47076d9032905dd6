"""Objective ``orpo``: Odds Ratio Preference Optimisation (Hong et al. 2024), reference-free.

The loss is the chosen response's language-model loss plus ``beta`` times the odds-ratio term
``-log sigmoid(log odds(chosen) - log odds(rejected))``, where ``odds(y) = p / (1 - p)`` of
the per-token mean probability ``p`` of response ``y`` (as TRL's ORPOTrainer). No reference
model: one model in memory with any method.
"""

from __future__ import annotations

import dataclasses

from tunery import ConfigError, Objective, hookimpl


@dataclasses.dataclass
class OrpoOptions:
    beta: float = 0.1  # weight of the odds-ratio term (lambda in the paper)

    def validate(self, where):
        if self.beta <= 0:
            raise ConfigError(f"config key '{where}.beta' must be positive, got {self.beta}")


def orpo_loss(chosen, rejected, beta: float):
    """Per-pair ORPO losses from per-token mean log-probs, and the log odds ratios (detached)."""
    import torch
    import torch.nn.functional as F

    log_odds = (chosen - rejected) - (torch.log1p(-torch.exp(chosen).clamp(max=1 - 1e-6))
                                      - torch.log1p(-torch.exp(rejected).clamp(max=1 - 1e-6)))
    return -chosen - beta * F.logsigmoid(log_odds), log_odds.detach()


class Orpo(Objective):
    name = "orpo"
    description = "ORPO: language-model loss plus an odds-ratio preference term; no reference model"
    tasks = frozenset({"preference"})
    Options = OrpoOptions

    def compute_loss(self, model, inputs, options, run):
        from tunery import pair_logps, record

        chosen, rejected = pair_logps(model, inputs, run, average=True)
        losses, log_odds = orpo_loss(chosen, rejected, options.beta)
        if model.training:
            record(run.state.setdefault(self.name, {}), log_odds_ratio=log_odds,
                   **{"rewards/accuracy": (chosen > rejected).float(), "rewards/margin": (chosen - rejected).detach(),
                      "logps/chosen": chosen.detach(), "logps/rejected": rejected.detach()})
        return losses.mean()

    def callbacks(self, options, run):
        from tunery import metrics_callback

        return [metrics_callback(run.state.setdefault(self.name, {}))]


@hookimpl
def tunery_register_objectives(registry):
    registry.add(Orpo())
