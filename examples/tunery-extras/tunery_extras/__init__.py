"""tunery-extras: one member of every plugin family, as a third-party package writes them.

Only the public API is used (``from tunery import ...``); heavy libraries are imported inside
the functions that need them, so importing this module stays cheap.
"""

from __future__ import annotations

import dataclasses

from tunery import (
    IGNORE_INDEX,
    ConfigError,
    EvalResult,
    Evaluator,
    Extension,
    Formatter,
    Method,
    Objective,
    RowError,
    encode,
    eos_ids,
    hookimpl,
    logits,
    prompt_response_batch,
    text_column,
)

# --------------------------------------------------------------------------- method: what trains

NORM_WORDS = ("norm", "ln_")
HEAD_WORDS = ("classifier", "score")


class LnFit(Method):
    """Train only the normalisation weights (plus a fresh classification head)."""

    name = "lnfit"
    description = "LN-fit: train only the normalisation weights (and a classification head)"
    output_kind = "adapter"
    can_merge = True

    def prepare(self, model, options, run):
        for name, parameter in model.named_parameters():
            parameter.requires_grad = any(w in name.lower() for w in NORM_WORDS + HEAD_WORDS)
        return model

    def save(self, model, path, options, run):
        from safetensors.torch import save_file

        trained = {n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}
        save_file(trained, f"{path}/lnfit.safetensors")

    def load(self, base_model, path, options):
        from safetensors.torch import load_file

        base_model.load_state_dict(load_file(f"{path}/lnfit.safetensors"), strict=False)
        return base_model

    def merge(self, model, options):
        return model  # the trained weights are the model's own


# --------------------------------------------------------------------------- objective: what is optimised


@dataclasses.dataclass
class FocalOptions:
    gamma: float = 2.0  # 0 is plain cross-entropy

    def validate(self, where):
        if self.gamma < 0:
            raise ConfigError(f"config key '{where}.gamma' must be 0 or more, got {self.gamma}")


class Focal(Objective):
    """Focal loss on the labelled tokens: ``(1 - p) ** gamma * -log p``, averaged."""

    name = "focal"
    description = "focal loss on causal-LM tokens: easy tokens count less"
    tasks = frozenset({"causal_lm"})
    Options = FocalOptions

    def compute_loss(self, model, inputs, options, run):
        import torch.nn.functional as F

        labels = inputs["labels"][:, 1:]
        scores = model(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask")).logits[:, :-1]
        log_p = -F.cross_entropy(scores.transpose(1, 2).float(), labels, ignore_index=IGNORE_INDEX, reduction="none")
        mask = labels != IGNORE_INDEX
        losses = -((1 - log_p.exp()) ** options.gamma) * log_p
        return (losses * mask).sum() / mask.sum().clamp(min=1)


# --------------------------------------------------------------------------- extension: changes training


@dataclasses.dataclass
class ShrinkOptions:
    weight: float = 1e-3

    def validate(self, where):
        if self.weight < 0:
            raise ConfigError(f"config key '{where}.weight' must be 0 or more, got {self.weight}")


class Shrink(Extension):
    """Add ``weight * sum(p ** 2)`` over the trainable parameters to whatever loss the run has."""

    name = "shrink"
    description = "L2 pull of the trainable parameters towards zero, on top of any objective"
    Options = ShrinkOptions

    def compute_loss(self, inner, model, inputs, options, run):
        loss = inner(model, inputs)
        penalty = sum((p.float() ** 2).sum() for p in model.parameters() if p.requires_grad)
        return loss + options.weight * penalty


# --------------------------------------------------------------------------- formatter: rows -> examples


class QA(Formatter):
    """``{question, answer}`` rows as ``Q: ...\\nA: ...``; the loss falls on the answer."""

    name = "qa"
    description = "question/answer rows; loss on the answer"
    task = "causal_lm"

    def format(self, row, tokenizer, options, run):
        question, answer = text_column(row, "question"), text_column(row, "answer")
        prompt = encode(tokenizer, f"Q: {question}\nA:")
        reply = encode(tokenizer, f" {answer}") + eos_ids(tokenizer)
        if not reply:
            raise RowError("empty answer", "the answer has no tokens")
        return {"input_ids": prompt + reply, "labels": [IGNORE_INDEX] * len(prompt) + reply}


class FastQA(Formatter):
    """``qa`` for large data sets: a chunk's rows are tokenized together (``format`` comes from
    ``format_batch``); the prompt starts with the tokenizer's bos token where it uses one."""

    name = "qa_fast"
    description = "question/answer rows, tokenized a chunk at a time; loss on the answer"
    task = "causal_lm"

    def format_batch(self, rows, tokenizer, options, run):
        out, prompts, answers, where = [], [], [], []
        for row in rows:
            try:
                question, answer = text_column(row, "question"), text_column(row, "answer")
            except RowError as exc:
                out.append(exc)
                continue
            where.append(len(out))
            out.append(None)
            prompts.append(f"Q: {question}\nA:")
            answers.append(f" {answer}")
        for at, example in zip(where, prompt_response_batch(tokenizer, prompts, answers)):
            out[at] = example  # an example, or the RowError of an answer with no tokens
        return out


# --------------------------------------------------------------------------- evaluator: measures


class TokenAccuracy(Evaluator):
    """Share of labelled tokens whose most likely prediction is right."""

    name = "token_accuracy"
    description = "share of labelled tokens predicted right (argmax)"
    tasks = frozenset({"causal_lm"})

    def evaluate(self, model, dataset, options, run):
        import torch

        right = total = 0
        with torch.no_grad():
            for batch in run.batches(dataset):
                predicted = logits(model, batch)[:, :-1].argmax(-1)
                labels = batch["labels"][:, 1:]
                mask = labels != IGNORE_INDEX
                right += int(((predicted == labels) & mask).sum())
                total += int(mask.sum())
        return EvalResult({"accuracy": right / max(total, 1), "tokens": total})


# --------------------------------------------------------------------------- registration


@hookimpl
def tunery_register_methods(registry):
    registry.add(LnFit())


@hookimpl
def tunery_register_objectives(registry):
    registry.add(Focal())


@hookimpl
def tunery_register_extensions(registry):
    registry.add(Shrink())


@hookimpl
def tunery_register_formatters(registry):
    registry.add(QA())
    registry.add(FastQA())


@hookimpl
def tunery_register_evaluators(registry):
    registry.add(TokenAccuracy())
