"""Objective ``distill``: knowledge distillation from a teacher model into the trained student.

loss = alpha * T^2 * D(teacher || student) on temperature-softened distributions (the labelled
tokens of causal-LM examples, the class distribution of classification examples) + (1 - alpha)
* the task loss. ``D`` is the forward KL (default), the reverse KL, or the generalised
Jensen-Shannon divergence with mixing weight ``beta``. The teacher (a model reference or a tunery
run folder) shares the student's tokenizer, runs without gradients, and in bf16 where that is
fast. Any method trains the student. ``tunery distill-init`` makes a smaller student from a
teacher by keeping every k-th layer (as DistilBERT did).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from tunery import ConfigError, IncompatibleError, Objective, hookimpl


@dataclasses.dataclass
class DistillOptions:
    """Distillation settings."""

    teacher: str = ""  # a model reference or a tunery run folder
    alpha: float = 0.5  # weight of the distillation term; 1 - alpha for the task loss
    temperature: float = 2.0
    loss: Literal["forward_kl", "reverse_kl", "jsd"] = "forward_kl"
    beta: float = 0.5  # jsd: weight of the teacher in the mixture
    bf16: bool | None = None  # teacher in bf16; None: where it is fast (tunery.bf16_default)

    def validate(self, where):
        if not self.teacher:
            raise ConfigError(f"missing config key '{where}.teacher' (a model reference or a tunery run folder)")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"config key '{where}.alpha' must be in [0, 1], got {self.alpha}")
        if self.temperature <= 0:
            raise ConfigError(f"config key '{where}.temperature' must be positive, got {self.temperature}")
        if not 0.0 < self.beta < 1.0:
            raise ConfigError(f"config key '{where}.beta' must be in (0, 1), got {self.beta}")


def divergence(student_logits, teacher_logits, kind: str = "forward_kl", temperature: float = 1.0,
               beta: float = 0.5):
    """Mean over rows of D(teacher || student) between softened distributions, times T^2.
    Rows are the last dimension's distributions (``[N, V]``)."""
    import torch
    import torch.nn.functional as F

    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    if kind == "forward_kl":
        per_row = F.kl_div(s, t, log_target=True, reduction="none").sum(-1)
    elif kind == "reverse_kl":
        per_row = F.kl_div(t, s, log_target=True, reduction="none").sum(-1)
    elif kind == "jsd":
        m = torch.logsumexp(torch.stack([t + torch.log(torch.tensor(beta)), s + torch.log(torch.tensor(1 - beta))]), 0)
        per_row = (beta * F.kl_div(m, t, log_target=True, reduction="none").sum(-1)
                   + (1 - beta) * F.kl_div(m, s, log_target=True, reduction="none").sum(-1))
    else:
        raise ConfigError(f"unknown distillation loss '{kind}'; use forward_kl, reverse_kl or jsd")
    return per_row.mean() * temperature ** 2


class Distill(Objective):
    name = "distill"
    description = "knowledge distillation: KL to a teacher's softened outputs (forward, reverse, JSD) + task loss"
    tasks = frozenset({"causal_lm", "classification"})
    Options = DistillOptions

    def prepare(self, model, options, run):
        import torch
        from tunery import bf16_default

        loaded = run.engine.load(options.teacher, task=run.model_task)
        if loaded.tokenizer.get_vocab() != run.tokenizer.get_vocab():
            raise IncompatibleError(f"objective.teacher '{options.teacher}' has another tokenizer than the student "
                                    f"'{run.config.model}'; distillation compares token distributions, so both "
                                    "must share one")
        teacher = loaded.model.eval()
        if options.bf16 if options.bf16 is not None else bf16_default():
            teacher = teacher.to(torch.bfloat16)
        teacher.requires_grad_(False)
        run.state[self.name] = {"teacher": teacher, "metrics": {}}
        return model

    def compute_loss(self, model, inputs, options, run):
        import torch
        from tunery import labelled_logits, record

        state = run.state[self.name]
        teacher = state["teacher"]
        device = inputs["input_ids"].device
        if next(teacher.parameters()).device != device:
            state["teacher"] = teacher = teacher.to(device)
        outputs = model(**inputs)
        labels = inputs["labels"]
        forward = {k: v for k, v in inputs.items() if k != "labels"}
        with torch.no_grad():
            teacher_logits = teacher(**forward).logits
        if teacher_logits.shape[-1] != outputs.logits.shape[-1]:
            size = min(teacher_logits.shape[-1], outputs.logits.shape[-1])  # padded vocabularies
            teacher_logits, student_logits = teacher_logits[..., :size], outputs.logits[..., :size]
        else:
            student_logits = outputs.logits
        kd = divergence(labelled_logits(student_logits, labels), labelled_logits(teacher_logits, labels), options.loss,
                        options.temperature, options.beta)
        if model.training:
            record(state["metrics"], **{"distill/kd": kd.detach(), "distill/task": outputs.loss.detach()})
        return options.alpha * kd + (1 - options.alpha) * outputs.loss

    def callbacks(self, options, run):
        from tunery import metrics_callback

        return [metrics_callback(run.state.setdefault(self.name, {}).setdefault("metrics", {}))]


def student_from_teacher(teacher: str, output: str, every: int, engine=None) -> str:
    """Write a student made of every ``every``-th decoder layer of ``teacher`` (and its
    embeddings, norms and head) with the teacher's tokenizer to ``output``; returns ``output``."""
    import torch
    from tunery import Engine

    engine = engine or Engine()
    loaded = engine.load(teacher)
    model = loaded.model
    layers = _layer_list(model)
    if every < 1 or every > len(layers):
        raise ConfigError(f"--every must be in 1..{len(layers)} (the teacher has {len(layers)} layers), got {every}")
    kept = [layers[i] for i in range(every - 1, len(layers), every)]
    layers_parent, attr = _layer_owner(model)
    setattr(layers_parent, attr, torch.nn.ModuleList(kept))
    for i, layer in enumerate(kept):  # caches index layers by position
        attn = getattr(layer, "self_attn", None)
        if attn is not None and hasattr(attn, "layer_idx"):
            attn.layer_idx = i
    config = model.config
    config.num_hidden_layers = len(kept)
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in range(every - 1, len(layers), every)]
    model.save_pretrained(output)
    loaded.tokenizer.save_pretrained(output)
    return output


def _layer_owner(model):
    """(module, attribute) holding the decoder/encoder layer list."""
    import torch

    base = getattr(model, "base_model", model)
    for owner in (getattr(base, "model", None), getattr(base, "encoder", None), base,
                  getattr(getattr(base, "model", None), "encoder", None)):
        if owner is None:
            continue
        for attr in ("layers", "layer", "h"):
            if isinstance(getattr(owner, attr, None), torch.nn.ModuleList):
                return owner, attr
    raise IncompatibleError(f"cannot find the layer list of {type(model).__name__} to make a student from")


def _layer_list(model):
    owner, attr = _layer_owner(model)
    return list(getattr(owner, attr))


@hookimpl
def tunery_register_objectives(registry):
    registry.add(Distill())


@hookimpl
def tunery_register_commands(cli):
    import click

    @cli.command("distill-init")
    @click.argument("teacher")
    @click.argument("output", type=click.Path(file_okay=False))
    @click.option("--every", type=int, default=2, show_default=True, help="Keep every k-th layer of the teacher.")
    @click.pass_context
    def distill_init(ctx, teacher, output, every):
        """Make a smaller student from TEACHER (every k-th layer) in OUTPUT, for `objective: distill`."""
        from tunery import command_engine

        student_from_teacher(teacher, output, every, command_engine(ctx))
        click.echo(f"student with every {every}th layer of {teacher} ({output})")
