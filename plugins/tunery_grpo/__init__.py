"""Objectives ``grpo`` and ``rloo``: online RL on prompts, with rewards from reward sources.

Each training step takes a batch of prompts (formatter ``prompts``), samples
``num_generations`` completions of each with the run's model (no gradients), scores them with
the ``rewards`` sources (reward functions, reward model run folders, registered rewards:
see :mod:`tunery.rewards`) and updates the policy with a clipped policy-gradient loss:

* ``grpo`` (Shao et al. 2024, as TRL's GRPOTrainer): group-normalised advantages
  ``(r - mean_group) / std_group``; a per-token KL term ``beta * k3`` towards the reference in
  the loss (``k3 = exp(ref - logp) - (ref - logp) - 1``);
* ``rloo`` (Ahmadian et al. 2024): leave-one-out baseline ``r - mean of the other G-1``; the
  KL penalty ``beta * sum_t (logp - ref)`` is taken off the reward of each completion.

The reference model is the adapter-disabled model for adapter methods (``Method.can_disable``:
no second copy); for methods that change the weights (``full``, ``freeze``, ...) a frozen copy
of the initial weights is kept when ``beta > 0``. ``num_iterations`` > 1 reuses one generation
batch for that many optimizer steps (the ratio to the generating policy is then clipped to
``1 +- epsilon``); the prompts of the steps in between are not used.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Literal

from tunery import ConfigError, IncompatibleError, Objective, TrainingError, hookimpl


@dataclasses.dataclass
class OnlineOptions:
    """Generation, reward and update settings."""

    rewards: list[Any] = dataclasses.field(default_factory=list)  # reward sources, see docs/rlhf.md
    num_generations: int = 4  # completions sampled per prompt (G)
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k filter
    max_new_tokens: int = 32
    beta: float = 0.04  # KL coefficient towards the reference (0: no reference model)
    epsilon: float = 0.2  # clipping of the probability ratio to the generating policy
    num_iterations: int = 1  # optimizer steps per generation batch
    loss_type: Literal["grpo", "bnpo", "dr_grpo"] = "grpo"  # per-sequence mean, token mean, fixed length
    scale_rewards: bool = True  # grpo: divide advantages by the group's reward std
    samples: int = 4  # completions (with rewards) kept from the first and last steps in rl_samples.json

    def validate(self, where):
        if self.num_generations < 2:
            raise ConfigError(f"config key '{where}.num_generations' must be at least 2 (advantages compare "
                              f"completions of one prompt), got {self.num_generations}")
        for key in ("max_new_tokens", "num_iterations"):
            if getattr(self, key) < 1:
                raise ConfigError(f"config key '{where}.{key}' must be at least 1, got {getattr(self, key)}")
        if self.temperature <= 0:
            raise ConfigError(f"config key '{where}.temperature' must be positive (online RL samples), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"config key '{where}.top_p' must be in (0, 1], got {self.top_p}")
        if self.beta < 0 or self.epsilon <= 0 or self.top_k < 0:
            raise ConfigError(f"config keys '{where}.beta' and '{where}.top_k' must be >= 0 and "
                              f"'{where}.epsilon' > 0, got {self.beta}, {self.top_k}, {self.epsilon}")


def token_logps(model, input_ids, attention_mask, n_prompt: int, temperature: float):
    """Per-token log-probabilities of the completion tokens (after ``n_prompt`` prompt tokens)."""
    import torch

    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    logits = logits[:, n_prompt - 1:-1].float() / temperature
    targets = input_ids[:, n_prompt:]
    return torch.gather(logits, 2, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def group_advantages(rewards, kind: str, scale: bool = True):
    """Advantages of rewards shaped ``[prompts, G]``: group-normalised (grpo) or leave-one-out (rloo)."""
    if kind == "rloo":
        g = rewards.shape[1]
        return rewards - (rewards.sum(1, keepdim=True) - rewards) / (g - 1)
    centred = rewards - rewards.mean(1, keepdim=True)
    return centred / (rewards.std(1, keepdim=True) + 1e-4) if scale else centred


def clipped_loss(logps, old_logps, advantages, mask, epsilon: float, kl=None, beta: float = 0.0,
                 loss_type: str = "grpo", max_new_tokens: int = 1):
    """The clipped policy-gradient loss (plus ``beta * kl`` per token) and the share of clipped tokens."""
    import torch

    ratio = torch.exp(logps - old_logps)
    adv = advantages.unsqueeze(1)
    per_token = -torch.min(ratio * adv, torch.clamp(ratio, 1 - epsilon, 1 + epsilon) * adv)
    if kl is not None and beta:
        per_token = per_token + beta * kl
    if loss_type == "grpo":
        loss = ((per_token * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()
    elif loss_type == "bnpo":
        loss = (per_token * mask).sum() / mask.sum().clamp(min=1)
    else:  # dr_grpo: a constant normaliser, no length bias
        loss = (per_token * mask).sum() / (mask.shape[0] * max_new_tokens)
    clipped = ((ratio < 1 - epsilon) & (adv < 0)) | ((ratio > 1 + epsilon) & (adv > 0))
    clip_ratio = (clipped.float() * mask).sum() / mask.sum().clamp(min=1)
    return loss, clip_ratio.detach()


class Grpo(Objective):
    name = "grpo"
    description = "GRPO: online RL on prompts with group-normalised rewards, clipping and a KL term"
    tasks = frozenset({"prompts"})
    Options = OnlineOptions
    advantage = "grpo"

    def check(self, options, run):
        from tunery import check_reward_sources

        if not options.rewards:
            raise ConfigError(f"config key 'objective.rewards' is required for {self.name}: name at least one "
                              "reward source, e.g. [{function: mypkg.rewards:short}] or [{model: runs/rm}]")
        check_reward_sources(options.rewards, run, "objective.rewards")
        t = run.config.training
        if t.auto_batch_size:
            raise IncompatibleError(f"objective '{self.name}' with training.auto_batch_size: the batch size of an "
                                    "online objective is not searched; set training.auto_batch_size=false")
        if options.num_iterations > 1 and isinstance(t.save_steps, int) and t.save_steps % options.num_iterations:
            raise ConfigError(f"config key 'training.save_steps' ({t.save_steps}) must be a multiple of "
                              f"'objective.num_iterations' ({options.num_iterations}) so that every checkpoint "
                              "starts a generation batch (exact resume)")

    def prepare(self, model, options, run):
        import copy

        import torch
        from tunery import reward_sources

        store = run.state.setdefault(self.name, {})
        if options.beta and not run.method.can_disable:  # the initial weights, frozen
            with torch.random.fork_rng(devices=[]):
                reference = copy.deepcopy(model).eval()
            for p in reference.parameters():
                p.requires_grad_(False)
            store["reference"] = reference
        store["sources"] = reward_sources(options.rewards, run, "objective.rewards")
        return model

    # ------------------------------------------------------------------ the step

    def training_step(self, step, model, inputs, options, run):
        store = run.state[self.name]
        if store.get("batch") is None or store.get("global_step", 0) % options.num_iterations == 0:
            store["batch"] = self.generate(model, inputs, options, run)
        return step(model, store["batch"])

    def generate(self, model, inputs, options, run) -> dict:
        """Sample, score and prepare one generation batch: ids, masks, advantages, old and reference log-probs."""
        import torch

        store, tokenizer, g = run.state[self.name], run.tokenizer, options.num_generations
        examples = [store["examples"][i] for i in inputs["prompt_index"].tolist()]
        device = inputs["input_ids"].device
        pad = tokenizer.pad_token_id
        n_prompt = max(len(e["input_ids"]) for e in examples)
        prompt_ids = torch.tensor([[pad] * (n_prompt - len(e["input_ids"])) + e["input_ids"] for e in examples],
                                  device=device).repeat_interleave(g, 0)
        prompt_mask = torch.tensor([[0] * (n_prompt - len(e["input_ids"])) + [1] * len(e["input_ids"]) for e in examples],
                                   device=device).repeat_interleave(g, 0)
        policy = getattr(model, "module", model)
        was_training = policy.training
        policy.eval()
        try:
            with torch.no_grad():
                out = policy.generate(input_ids=prompt_ids, attention_mask=prompt_mask, do_sample=True,
                                      temperature=options.temperature, top_p=options.top_p, top_k=options.top_k or None,
                                      max_new_tokens=options.max_new_tokens, pad_token_id=pad, use_cache=True)
        finally:
            policy.train(was_training)
        completion = out[:, n_prompt:]
        eos = {tokenizer.eos_token_id, *_as_list(getattr(policy.generation_config, "eos_token_id", None))} - {None}
        is_eos = torch.isin(completion, torch.tensor(sorted(eos), device=device))
        first = torch.where(is_eos.any(1), is_eos.int().argmax(1), torch.full_like(is_eos[:, 0], completion.shape[1], dtype=torch.long))
        mask = (torch.arange(completion.shape[1], device=device).unsqueeze(0) <= first.unsqueeze(1)).long()
        texts = [tokenizer.decode(ids[:n], skip_special_tokens=True) for ids, n in zip(completion.tolist(), mask.sum(1).tolist())]

        prompts = [e["_prompt"] for e in examples for _ in range(g)]
        keys = sorted({k for e in examples for k in e["_columns"]})
        columns = {k: [e["_columns"].get(k) for e in examples for _ in range(g)] for k in keys}
        totals, per_source = store["sources"](prompts, texts, columns)

        batch = {"input_ids": out, "attention_mask": torch.cat([prompt_mask, mask], 1), "completion_mask": mask.float(),
                 "n_prompt": torch.tensor(n_prompt)}
        with torch.no_grad():
            if options.beta:
                batch["ref_logps"] = self.reference_logps(model, batch, options, run)
            if options.num_iterations > 1 or self.advantage == "rloo" and options.beta:
                batch["old_logps"] = token_logps(model, out, batch["attention_mask"], n_prompt, options.temperature)
        rewards = torch.tensor(totals, device=device, dtype=torch.float32)
        shaped = rewards
        if self.advantage == "rloo" and options.beta:  # the KL penalty is part of the reward
            shaped = rewards - options.beta * ((batch["old_logps"] - batch["ref_logps"]) * mask).sum(1)
        batch["advantages"] = group_advantages(shaped.view(-1, g), self.advantage, options.scale_rewards).reshape(-1)
        metrics = {"reward": rewards.mean(), "reward_std": rewards.view(-1, g).std(1).mean(),
                   "completion_length": mask.sum(1).float().mean()}
        for name, values in per_source.items():
            t = torch.tensor(values).nan_to_num(0.0)
            metrics[f"rewards/{name}/mean"], metrics[f"rewards/{name}/std"] = t.mean(), t.std()
        store["pending"] = metrics
        kept = [{"prompt": p, "completion": c, "reward": round(r, 4)}
                for p, c, r in zip(prompts, texts, totals)][:options.samples]
        store.setdefault("first_samples", kept)
        store["last_samples"] = kept
        return batch

    def reference_logps(self, model, batch, options, run):
        args = (batch["input_ids"], batch["attention_mask"], int(batch["n_prompt"]), options.temperature)
        reference = run.state[self.name].get("reference")
        if reference is not None:
            if next(reference.parameters()).device != batch["input_ids"].device:
                reference.to(batch["input_ids"].device)
            return token_logps(reference, *args)
        with getattr(model, "module", model).disable_adapter():
            return token_logps(model, *args)

    def compute_loss(self, model, inputs, options, run):
        from tunery import record

        if "advantages" not in inputs:
            raise TrainingError(f"{self.name}: this batch was not built by the online step (it has no advantages)")
        mask = inputs["completion_mask"]
        logps = token_logps(model, inputs["input_ids"], inputs["attention_mask"], int(inputs["n_prompt"]), options.temperature)
        old = inputs.get("old_logps", logps.detach())
        kl = None
        if "ref_logps" in inputs:
            delta = inputs["ref_logps"] - logps
            kl = delta.exp() - delta - 1
        loss, clip_ratio = clipped_loss(logps, old, inputs["advantages"], mask, options.epsilon,
                                        kl if self.advantage == "grpo" else None, options.beta, options.loss_type,
                                        options.max_new_tokens)
        if model.training:
            store = run.state[self.name]
            values = dict(store.pop("pending", {}))
            if kl is not None:
                values["kl"] = (kl.detach() * mask).sum() / mask.sum().clamp(min=1)
            record(store.setdefault("metrics", {}), clip_ratio=clip_ratio, **values)
        return loss

    def callbacks(self, options, run):
        from transformers import TrainerCallback

        from tunery import add_example_values, metrics_callback

        store = run.state.setdefault(self.name, {})

        def index_prompts(model, train_dataloader):
            examples = train_dataloader.dataset
            add_example_values(examples, "prompt_index", range(len(examples)))
            store["examples"] = examples

        class Steps(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                store["global_step"] = state.global_step

            def on_train_end(self, args, state, control, **kwargs):
                if state.is_world_process_zero and "first_samples" in store:
                    path = run.output_dir / "rl_samples.json"
                    path.write_text(json.dumps({"first": store["first_samples"], "last": store["last_samples"]}, indent=1))

        return [metrics_callback(store.setdefault("metrics", {}), index_prompts), Steps()]


class Rloo(Grpo):
    name = "rloo"
    description = "RLOO: online RL on prompts with a leave-one-out baseline and the KL penalty in the reward"
    advantage = "rloo"


def _as_list(value):
    return [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]


@hookimpl
def tunery_register_objectives(registry):
    registry.add(Grpo())
    registry.add(Rloo())
