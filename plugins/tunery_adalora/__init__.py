"""Method ``adalora``: AdaLoRA, LoRA whose rank budget is reallocated between layers during training.

The schedule needs the run's length: ``total_step`` is the run's planned optimizer steps, and
the rank allocation is updated after every optimizer step by a trainer callback."""

from __future__ import annotations

import dataclasses

from tunery import ConfigError, IncompatibleError, PeftMethod, hookimpl, target_modules


@dataclasses.dataclass
class AdaLoraOptions:
    """AdaLoRA settings (see peft.AdaLoraConfig)."""

    init_r: int = 12  # starting rank of every adapted matrix
    target_r: int = 8  # average rank the budget is pruned to
    alpha: float = 32.0
    dropout: float = 0.0
    target_modules: str | list[str] = "all-linear"  # names, a regex, or all-linear
    tinit: int = 0  # steps of warm-up before the budget starts shrinking
    tfinal: int = 0  # steps at the end with the final budget fixed
    delta_t: int = 1  # steps between two reallocations
    beta1: float = 0.85
    beta2: float = 0.85
    orth_reg_weight: float = 0.5

    def validate(self, where):
        if not 1 <= self.target_r <= self.init_r:
            raise ConfigError(f"config key '{where}.target_r' must be between 1 and init_r ({self.init_r}), got {self.target_r}")
        if self.tinit < 0 or self.tfinal < 0 or self.delta_t < 1:
            raise ConfigError(f"config keys '{where}.tinit', '{where}.tfinal' must be >= 0 and '{where}.delta_t' >= 1")


class AdaLora(PeftMethod):
    name = "adalora"
    description = "AdaLoRA: adaptive rank budget, total steps taken from the run"
    Options = AdaLoraOptions
    accepts_quantized = True
    can_merge = True

    def check(self, options, run):
        steps = run.config.training.max_steps
        if steps > 0 and options.tinit + options.tfinal >= steps:
            raise IncompatibleError(
                f"method 'adalora' needs training steps between its warm-up and final phases: "
                f"method.tinit ({options.tinit}) + method.tfinal ({options.tfinal}) >= training.max_steps ({steps}); "
                "lower tinit/tfinal or train longer"
            )

    def peft_config(self, model, options, run):
        from peft import AdaLoraConfig

        total = run.total_steps
        if options.tinit + options.tfinal >= total:
            raise IncompatibleError(
                f"method 'adalora': method.tinit ({options.tinit}) + method.tfinal ({options.tfinal}) must be below "
                f"the run's {total} optimizer steps; lower them or train longer"
            )
        return AdaLoraConfig(
            init_r=options.init_r, target_r=options.target_r, lora_alpha=options.alpha, lora_dropout=options.dropout,
            target_modules=target_modules(options.target_modules), total_step=total, tinit=options.tinit,
            tfinal=options.tfinal, deltaT=options.delta_t, beta1=options.beta1, beta2=options.beta2,
            orth_reg_weight=options.orth_reg_weight,
        )

    def callbacks(self, options, run):
        from transformers import TrainerCallback

        class RankAllocation(TrainerCallback):
            """peft's budget update, after each optimizer step and before the gradients are cleared."""

            def on_optimizer_step(self, args, state, control, model=None, **kwargs):
                model.base_model.update_and_allocate(state.global_step)

        return [RankAllocation()]


@hookimpl
def tunery_register_methods(registry):
    registry.add(AdaLora())
