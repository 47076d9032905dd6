"""Evaluator ``rewards``: the reward of the model's own completions of held-out prompts.

For each evaluation prompt (formatter ``prompts``) the model writes one completion (greedy by
default, so before/after compare like with like) and the run's reward sources score it: those of
the online objective (``grpo``, ``rloo``), or the evaluator's own ``rewards`` option (same
entries, see docs/rlhf.md). Metrics: ``mean`` (weighted total), ``<source>`` (each source's
mean) and ``completion_length`` (tokens); every completion with its reward goes to
``evaluations/<phase>.json``, the lowest-rewarded ones to the report.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tunery import ConfigError, EvalResult, Evaluator, hookimpl


@dataclasses.dataclass
class RewardsEvalOptions:
    rewards: list[Any] = dataclasses.field(default_factory=list)  # default: the objective's reward sources
    max_new_tokens: int = 0  # 0: the objective's max_new_tokens (else 32)
    temperature: float = 0.0  # 0: greedy
    worst: int = 3


class RewardsEval(Evaluator):
    name = "rewards"
    description = "reward of the model's completions of held-out prompts (grpo, rloo), with the run's reward sources"
    tasks = frozenset({"prompts"})
    default = True
    Options = RewardsEvalOptions

    def evaluate(self, model, dataset, options, run):
        from tunery import complete, reward_sources

        objective = run.config.objective.options
        store = run.state.setdefault(self.name, {})
        if options.rewards:
            sources = store.get("sources") or reward_sources(options.rewards, run, "evaluators.rewards.rewards")
        else:
            sources = run.state.get(run.config.objective.name, {}).get("sources")
            if sources is None:
                raw = getattr(objective, "rewards", None)
                if not raw:
                    raise ConfigError("evaluator 'rewards' needs reward sources: set its 'rewards' option "
                                      "(or train with objective grpo or rloo)")
                sources = reward_sources(raw, run, "objective.rewards")
        store["sources"] = sources
        new_tokens = options.max_new_tokens or getattr(objective, "max_new_tokens", 32)
        was_training = model.training
        model.eval()
        try:
            texts = [complete(model, run.tokenizer, ex["input_ids"], max_new_tokens=new_tokens,
                              temperature=options.temperature, seed=run.config.seed) for ex in dataset]
        finally:
            model.train(was_training)
        prompts = [ex["_prompt"] for ex in dataset]
        keys = sorted({k for ex in dataset for k in ex["_columns"]})
        totals, per_source = sources(prompts, texts, {k: [ex["_columns"].get(k) for ex in dataset] for k in keys})
        n = max(len(texts), 1)
        lengths = [len(run.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
        metrics = {"mean": sum(totals) / n, "completion_length": sum(lengths) / n}
        for name, values in per_source.items():
            finite = [v for v in values if v == v]
            metrics[name] = sum(finite) / max(len(finite), 1)
        records = [{"prompt": p if isinstance(p, str) else p[-1]["content"], "completion": c, "reward": round(r, 4)}
                   for p, c, r in zip(prompts, texts, totals)]
        worst = sorted(records, key=lambda r: r["reward"])[:options.worst]
        return EvalResult(metrics=metrics, worst=worst, records=records)


@hookimpl
def tunery_register_evaluators(registry):
    registry.add(RewardsEval())
