"""Shared machinery for methods built on ``peft`` (LoRA, IA3, prefix tuning, ...).

A peft-based method subclasses :class:`PeftMethod` and implements :meth:`PeftMethod.peft_config`;
wrapping, saving (safetensors, loadable with ``peft.PeftModel.from_pretrained``), loading and
merging are shared. Third-party plugins may use it the same way.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from .errors import IncompatibleError
from .members import HEAD_CLASSES, Method

TASK_TYPES = {"causal_lm": "CAUSAL_LM", "classification": "SEQ_CLS", "seq2seq": "SEQ_2_SEQ_LM",
              "token_classification": "TOKEN_CLS"}
REGEX_CHARS = re.compile(r"[.*+?^$|()\[\]\\]")


def target_modules(value: str | list[str] | None) -> str | list[str] | None:
    """peft's ``target_modules`` from a config value: ``all-linear``, a regex, or names
    (a list, or one comma-separated string)."""
    if value is None or isinstance(value, list):
        return value
    if value == "all-linear" or REGEX_CHARS.search(value):
        return value
    return [v.strip() for v in value.split(",") if v.strip()]


class PeftMethod(Method):
    """A method whose trainable part is a peft adapter."""

    output_kind: ClassVar[str] = "adapter"
    can_disable: ClassVar[bool] = True  # model.disable_adapter() gives the base model back

    def peft_config(self, model: Any, options: Any, run: Any) -> Any:
        """The ``peft.PeftConfig`` to wrap ``model`` with (``task_type`` is filled in for you)."""
        raise NotImplementedError

    def prepare(self, model: Any, options: Any, run: Any) -> Any:
        from peft import get_peft_model

        config = self.peft_config(model, options, run)
        if getattr(config, "task_type", None) is None:
            config.task_type = TASK_TYPES[run.model_task]
        if run.model_task == "token_classification" and getattr(config, "target_modules", None) == "all-linear":
            config.target_modules = linear_names(model)  # peft's all-linear would wrap the head it trains in full
        try:
            peft_model = get_peft_model(model, config)
        except ValueError as exc:
            raise IncompatibleError(f"method '{self.name}' cannot wrap this model: {exc}") from None
        if run.model_task == "causal_lm" and getattr(model.config, "use_cache", None):
            model.config.use_cache = False  # no KV cache while training
        return peft_model

    def save(self, model: Any, path: str, options: Any, run: Any) -> None:
        model.save_pretrained(path, safe_serialization=True)

    def load(self, base_model: Any, path: str, options: Any) -> Any:
        from peft import PeftModel

        if getattr(base_model.config, "use_cache", None) is False:
            base_model.config.use_cache = True
        return PeftModel.from_pretrained(base_model, path, is_trainable=False)

    def model_card(self, options: Any, run: Any) -> dict:
        head = HEAD_CLASSES.get(run.model_task, "CausalLM")
        return {"library_name": "peft",
                "summary": f"a peft adapter trained with the **{self.name}** method (the base model is "
                           f"`{run.config.model}`, loaded from the hub or your cache)",
                "usage": f"from peft import AutoPeftModelFor{head}\n"
                         f"model = AutoPeftModelFor{head}.from_pretrained(\"adapter\")"}

    def merge(self, model: Any, options: Any) -> Any:
        if not self.can_merge:
            return super().merge(model, options)
        return model.merge_and_unload()


class PromptLearningMethod(PeftMethod):
    """A peft prompt-learning method (prefix tuning, P-tuning, prompt tuning): trained virtual
    tokens are put in front of every sequence, so nothing can be merged into the base weights
    and examples cannot be packed (each packed example would need its own virtual tokens)."""

    can_merge: ClassVar[bool] = False
    supports_packing: ClassVar[bool] = False
    accepts_quantized: ClassVar[bool] = True
    default_learning_rate: ClassVar[float] = 1e-2  # virtual tokens need far more than weights: docs/learning-rates.md
    #: The technique's name in messages ("prefix tuning").
    technique: ClassVar[str] = ""

    def check(self, options: Any, run: Any) -> None:
        """Refuses token classification: peft puts the virtual tokens in front of the tokens but
        not of their labels. Subclasses that override this call ``super().check``."""
        if run.model_task == "token_classification":
            raise IncompatibleError(
                f"{self.technique} (method '{self.name}') cannot train token classification: peft puts its virtual "
                "tokens in front of the tokens but not of their labels; use method 'lora', 'ia3', 'adalora' or 'full'"
            )

    def merge_refusal(self) -> str:
        return f"{self.technique} (method '{self.name}') cannot be merged into the base weights; use the adapter folder"


def linear_names(model: Any) -> list[str]:
    """Names of the linear layers inside the model's blocks (what peft's all-linear selects),
    without the output embeddings and classification heads (``classifier``, ``score``)."""
    import torch

    head = model.get_output_embeddings()
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if isinstance(module, torch.nn.Linear) and module is not head
                   and name.split(".")[0] not in ("classifier", "score")})


def trainable_summary(model: Any) -> dict[str, int | float]:
    """Trainable and total parameter counts of ``model``."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": trainable, "total": total, "percent": round(100.0 * trainable / max(total, 1), 4)}
