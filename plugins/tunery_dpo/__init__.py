"""Objective ``dpo``: Direct Preference Optimisation of a policy on preference pairs.

The loss compares the policy's log-probabilities of the chosen and rejected responses with a
reference model's (``sigmoid``: DPO; ``ipo``; ``hinge``: SLiC), scaled by ``beta``. Any method
trains the weights (``method: lora``, ``ia3``, ``full`` ...). The reference costs no second copy
of the weights:

* with a method that can switch itself off (a peft adapter: ``Method.can_disable``), the
  reference is the same base with the adapter disabled, computed at every step;
* with a method that changes the weights themselves (``full``, ``freeze``, ...), the reference
  log-probabilities of every training pair are computed once, before the first step, with the
  initial weights.

Each log record gets the implicit rewards ``beta * (log pi - log pi_ref)`` of the chosen and
rejected responses, the pairs' accuracy and margin (``rewards/*``) and the log-probabilities.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from tunery import ConfigError, Objective, TrainingError, hookimpl

DPO_LOSSES = ("sigmoid", "ipo", "hinge")


@dataclasses.dataclass
class DpoOptions:
    """DPO settings."""

    beta: float = 0.1
    loss: Literal["sigmoid", "ipo", "hinge"] = "sigmoid"
    label_smoothing: float = 0.0  # sigmoid only: assumed share of flipped labels (conservative DPO)

    def validate(self, where):
        if self.beta <= 0:
            raise ConfigError(f"config key '{where}.beta' must be positive, got {self.beta}")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ConfigError(f"config key '{where}.label_smoothing' must be in [0, 0.5), got {self.label_smoothing}")


def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, *, beta: float, kind: str = "sigmoid",
             label_smoothing: float = 0.0):
    """Per-pair DPO losses and the implicit rewards ``beta * (log pi - log pi_ref)`` of chosen and
    rejected responses (detached). ``kind``: ``sigmoid`` (DPO, with optional label smoothing as in
    conservative DPO), ``ipo`` (squared distance to ``1 / (2 beta)``; pass per-token mean
    log-probs) or ``hinge`` (SLiC)."""
    import torch.nn.functional as F

    logits = (policy_chosen - policy_rejected) - (ref_chosen - ref_rejected)
    if kind == "sigmoid":
        losses = (-F.logsigmoid(beta * logits) * (1 - label_smoothing)
                  - F.logsigmoid(-beta * logits) * label_smoothing)
    elif kind == "ipo":
        losses = (logits - 1 / (2 * beta)) ** 2
    elif kind == "hinge":
        losses = F.relu(1 - beta * logits)
    else:
        raise ConfigError(f"unknown DPO loss '{kind}'; use one of {', '.join(DPO_LOSSES)}")
    chosen_rewards = beta * (policy_chosen - ref_chosen).detach()
    rejected_rewards = beta * (policy_rejected - ref_rejected).detach()
    return losses, chosen_rewards, rejected_rewards


class Dpo(Objective):
    name = "dpo"
    description = "Direct Preference Optimisation (sigmoid, IPO, hinge); the reference costs no weight copy"
    tasks = frozenset({"preference"})
    Options = DpoOptions

    def compute_loss(self, model, inputs, options, run):
        import torch
        from tunery import pair_logps, record

        average = options.loss == "ipo"  # IPO compares per-token mean log-probabilities
        policy_chosen, policy_rejected = pair_logps(model, inputs, run, average)
        if "ref_chosen_logps" in inputs:
            ref_chosen, ref_rejected = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        elif run.method.can_disable:
            with torch.no_grad(), model.disable_adapter():
                ref_chosen, ref_rejected = pair_logps(model, inputs, run, average)
        else:
            raise TrainingError("dpo: no reference log-probabilities for this batch (they are computed "
                                "when training begins; was the batch built outside the trainer?)")
        losses, chosen_rewards, rejected_rewards = dpo_loss(
            policy_chosen, policy_rejected, ref_chosen, ref_rejected,
            beta=options.beta, kind=options.loss, label_smoothing=options.label_smoothing)
        if model.training:
            record(run.state.setdefault(self.name, {}),
                   **{"rewards/chosen": chosen_rewards, "rewards/rejected": rejected_rewards,
                      "rewards/accuracy": (chosen_rewards > rejected_rewards).float(),
                      "rewards/margin": chosen_rewards - rejected_rewards,
                      "logps/chosen": policy_chosen.detach(), "logps/rejected": policy_rejected.detach()})
        return losses.mean()

    def callbacks(self, options, run):
        from tunery import metrics_callback, pair_logps, precompute_values

        def reference_logps(model, train_dataloader):
            """Without an adapter to disable, the reference is the initial weights: compute its
            log-probabilities of every training pair now, once, before the first step."""
            if not run.method.can_disable:
                precompute_values(run, model, train_dataloader.dataset, ("ref_chosen_logps", "ref_rejected_logps"),
                                  lambda m, batch: pair_logps(m, batch, run, average=options.loss == "ipo"))

        return [metrics_callback(run.state.setdefault(self.name, {}), reference_logps)]


@hookimpl
def tunery_register_objectives(registry):
    registry.add(Dpo())
