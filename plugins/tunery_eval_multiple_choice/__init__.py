"""Evaluator ``multiple_choice``: log-likelihood scoring of answer options, the way ARC,
HellaSwag, MMLU and TruthfulQA-MC are scored.

It reads its own JSONL file (option ``data``), one question per line::

    {"question": "...", "choices": ["...", "..."], "answer": 1, "context": "optional"}

``answer`` is the index of the right choice (or its text). Each choice is scored by the sum of
the log-probabilities of its tokens after the prompt (``context``, a new line, then
``template``). ``accuracy`` picks the highest sum; ``accuracy_norm`` divides each sum by the
choice's length in bytes first (lm-evaluation-harness ``acc_norm``), which removes the bias
towards short answers."""

from __future__ import annotations

import dataclasses

from tunery import ConfigError, DataError, EvalResult, Evaluator, RowError, hookimpl
from tunery import logits as aligned_logits


@dataclasses.dataclass
class MultipleChoiceOptions:
    data: str = ""  # required: the JSONL file of questions
    template: str = "Question: {question}\nAnswer:"
    choice_prefix: str = " "  # put between the prompt and each choice
    batch_size: int | None = None  # sequences (question x choice) per forward pass
    limit: int | None = None  # score at most this many questions
    worst: int = 5  # wrongly answered questions kept for error analysis (0: none)

    def validate(self, where: str) -> None:
        if not self.data:
            raise ConfigError(f"missing required config key '{where}.data' (a JSONL file of "
                              "{question, choices, answer} rows)")
        if "{question}" not in self.template:
            raise ConfigError(f"config key '{where}.template' must contain {{question}}, got {self.template!r}")


def read_questions(path: str, limit: int | None) -> list[dict]:
    """The questions of ``path``, checked; a DataError lists every bad row by file and line."""
    from tunery import Problem, load_rows, problems_message

    rows, _, problems = load_rows([path], limit)
    questions = []
    for row in rows:
        try:
            questions.append(_question(row.values))
        except RowError as exc:
            problems.append(Problem(row.source, exc.reason, exc.detail))
    if problems:
        raise DataError(problems_message(problems, "multiple-choice"), problems)
    if not questions:
        raise DataError(f"no question in {path}")
    return questions


def _question(row) -> dict:
    if not isinstance(row, dict):
        raise RowError("wrong type", "a row must be an object")
    question, choices, answer = row.get("question"), row.get("choices"), row.get("answer")
    if not isinstance(question, str):
        raise RowError("missing column", "'question' must be text")
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
        raise RowError("wrong type", "'choices' must be a list of at least two non-empty texts")
    if isinstance(answer, str) and answer in choices:
        answer = choices.index(answer)
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
        raise RowError("bad answer", f"'answer' must be a choice index 0..{len(choices) - 1} or a choice's text, got {answer!r}")
    context = row.get("context") or ""
    if not isinstance(context, str):
        raise RowError("wrong type", "'context' must be text")
    return {"question": question, "choices": choices, "answer": answer, "context": context}


class MultipleChoice(Evaluator):
    name = "multiple_choice"
    description = "log-likelihood multiple choice (raw and length-normalised accuracy)"
    tasks = frozenset({"causal_lm"})
    uses_run_data = False
    Options = MultipleChoiceOptions

    def evaluate(self, model, dataset, options, run):
        from tunery import bos_ids, encode

        questions = read_questions(options.data, options.limit)
        tokenizer = run.tokenizer
        sequences, owners = [], []
        for q, item in enumerate(questions):
            prompt = (item["context"] + "\n" if item["context"] else "") + options.template.format(question=item["question"])
            prompt_ids = bos_ids(tokenizer) + encode(tokenizer, prompt)
            for choice in item["choices"]:
                choice_ids = encode(tokenizer, options.choice_prefix + choice)
                sequences.append({"input_ids": prompt_ids + choice_ids,
                                  "labels": [-100] * len(prompt_ids) + choice_ids})
                owners.append(q)
        logliks = []
        for batch in run.batches(sequences, options.batch_size):
            logits = aligned_logits(model, batch).float()  # without virtual tokens of prompt-learning methods
            logprobs = logits[:, :-1].log_softmax(-1)
            labels = batch["labels"][:, 1:]
            mask = labels != -100
            picked = logprobs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            logliks += (picked * mask).sum(1).tolist()
        right = right_norm = 0
        records = []
        start = 0
        for item in questions:
            scores = logliks[start:start + len(item["choices"])]
            start += len(item["choices"])
            lengths = [len((options.choice_prefix + c).encode("utf-8")) for c in item["choices"]]
            normed = [s / n for s, n in zip(scores, lengths)]
            predicted = max(range(len(scores)), key=scores.__getitem__)
            predicted_norm = max(range(len(normed)), key=normed.__getitem__)
            right += predicted == item["answer"]
            right_norm += predicted_norm == item["answer"]
            records.append({"question": item["question"], "choices": item["choices"],
                            "answer": item["choices"][item["answer"]], "predicted": item["choices"][predicted],
                            "predicted_norm": item["choices"][predicted_norm], "logliks": scores,
                            "margin": scores[item["answer"]] - max(s for i, s in enumerate(scores) if i != item["answer"])})
        metrics = {"accuracy": right / len(questions), "accuracy_norm": right_norm / len(questions),
                   "questions": len(questions)}
        wrong = sorted((r for r in records if r["predicted"] != r["answer"]), key=lambda r: r["margin"])
        worst = [{k: r[k] for k in ("question", "choices", "answer", "predicted", "margin")} for r in wrong[:options.worst]]
        return EvalResult(metrics, worst=worst, records=records)


@hookimpl
def tunery_register_evaluators(registry):
    registry.add(MultipleChoice())
