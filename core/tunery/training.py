"""Training settings: ``transformers.TrainingArguments`` of a run, checked before anything
loads. Cheap to import (the trainer itself is :mod:`tunery.trainer`)."""

from __future__ import annotations

import ast
import importlib.util
import logging
import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, IncompatibleError

if TYPE_CHECKING:  # pragma: no cover
    from .context import RunContext

log = logging.getLogger("tunery")


# ----------------------------------------------------------------------------- settings


def bf16_default() -> bool:
    """bf16 autocast where it is fast: CUDA with bf16 support, or a CPU with AVX512-BF16/AMX."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def uses_bf16(run: RunContext) -> bool:
    """Whether the run trains with bf16 autocast (``training.bf16``, or the hardware default)."""
    t = run.config.training
    if t.bf16 is not None:
        return t.bf16
    return not t.extra.get("fp16") and bf16_default()


@lru_cache(maxsize=1)
def training_argument_fields() -> frozenset[str]:
    """The field names of ``transformers.TrainingArguments``, read from its source without
    importing transformers (which takes seconds), so a bad key is refused at once."""
    spec = importlib.util.find_spec("transformers")
    path = Path(next(iter(spec.submodule_search_locations))) / "training_args.py"
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "TrainingArguments":
            return frozenset(n.target.id for n in node.body
                             if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name))
    from transformers import TrainingArguments  # an unusual layout: ask the class itself

    return frozenset(TrainingArguments.__dataclass_fields__)


def checkpointed(setting: bool | float, layers: int) -> list[bool]:
    """Which of ``layers`` decoder layers ``training.gradient_checkpointing`` checkpoints: all
    (true), none (false), a share (0-1) or a number of them, spread evenly over the depth."""
    if isinstance(setting, bool) or layers == 0:
        return [bool(setting)] * layers
    count = min(layers, round(setting * layers) if setting < 1 else int(setting))
    return [(i + 1) * count // layers > i * count // layers for i in range(layers)]


def check_extra(run: RunContext) -> None:
    """``training.extra``: every key a TrainingArguments field, a DeepSpeed file that exists."""
    from .options import closest

    extra = run.config.training.extra
    fields = training_argument_fields()
    for key in sorted(extra):
        if key not in fields:
            raise ConfigError(f"config key 'training.extra.{key}' is not a transformers.TrainingArguments field"
                              f"{closest(key, fields)}")
    deepspeed = extra.get("deepspeed")
    if deepspeed:
        if importlib.util.find_spec("deepspeed") is None:
            raise ConfigError("config key 'training.extra.deepspeed' needs the deepspeed package: pip install deepspeed")
        if isinstance(deepspeed, str) and not os.path.isfile(deepspeed):
            raise ConfigError(f"config key 'training.extra.deepspeed': no DeepSpeed config file "
                              f"'{os.path.abspath(deepspeed)}'")
    fsdp_config = extra.get("fsdp_config")
    if isinstance(fsdp_config, str) and not os.path.isfile(fsdp_config):
        raise ConfigError(f"config key 'training.extra.fsdp_config': no FSDP config file '{os.path.abspath(fsdp_config)}'")


def training_arguments(run: RunContext) -> Any:
    """The run's ``transformers.TrainingArguments``; a ConfigError names what is wrong."""
    import torch
    from transformers import TrainingArguments

    from .evaluation import early_stopping_args

    t, config = run.config.training, run.config
    check_extra(run)
    bf16 = uses_bf16(run)  # an explicit fp16 wins over the automatic bf16
    ordered = [name for name, ext in zip((c.name for c in config.extensions), run.extensions) if ext[0].keeps_order]
    if ordered and config.data.group_by_length:
        raise IncompatibleError(f"extension '{ordered[0]}' sets the order of the training examples, which "
                                "data.group_by_length would change; set data.group_by_length=false")
    if ordered and config.data.packing:
        raise IncompatibleError(f"extension '{ordered[0]}' sets the order of the training examples, which "
                                "data.packing would change; set data.packing=false")
    args = dict(
        output_dir=str(run.output_dir / "checkpoints"),
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        learning_rate=t.learning_rate,
        warmup_steps=t.warmup_ratio,  # a float below 1 is a ratio of the total steps
        weight_decay=t.weight_decay,
        lr_scheduler_type=t.lr_scheduler,
        max_grad_norm=t.max_grad_norm,
        optim=t.optim,
        bf16=bf16,
        logging_steps=t.logging_steps,
        save_strategy="steps" if t.save_steps else "no",
        save_steps=t.save_steps or 500,
        save_total_limit=t.save_total_limit,
        report_to=list(t.report_to),
        seed=config.seed,
        data_seed=config.seed,
        disable_tqdm=True,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        train_sampling_strategy=("sequential" if ordered else "group_by_length" if config.data.group_by_length
                                 else "random"),
        use_cpu=not torch.cuda.is_available(),
    )
    if t.gradient_checkpointing:
        args["activation_checkpointing"] = True
    if t.eval_steps and config.evaluators:
        args.update(eval_strategy="steps", eval_steps=t.eval_steps, **early_stopping_args(config))
    args.update(t.extra)
    try:
        return TrainingArguments(**args)
    except (ValueError, TypeError) as exc:
        hint = (" (training.bf16 was switched on automatically for this hardware; set training.bf16=false)"
                if bf16 and t.bf16 is None and "bf16" in str(exc) else "")
        raise ConfigError(f"invalid training settings: {exc}{hint}") from None
