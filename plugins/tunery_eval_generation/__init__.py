"""Evaluator ``generation``: generates an answer to each evaluation prompt and scores it against
the reference (exact match, token-level F1 and ROUGE-L on normalised text); every prompt,
reference and output is kept.

The prompt of an example is its leading unlabelled tokens and the reference its labelled ones,
so any prompt/response formatter (alpaca, chat...) works as it is. Texts are normalised as in
SQuAD: lower case, no punctuation, no articles (a, an, the), single spaces."""

from __future__ import annotations

import collections
import dataclasses
import re
import string

from tunery import ConfigError, EvalResult, Evaluator, at_least, hookimpl


@dataclasses.dataclass
class GenerationOptions:
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0: greedy decoding
    top_p: float = 1.0  # with temperature > 0
    num_beams: int = 1
    repetition_penalty: float = 1.0
    limit: int | None = None  # generate for at most this many examples (the first ones)
    worst: int = 5  # lowest-scoring outputs kept for error analysis (0: none)

    def validate(self, where: str) -> None:
        at_least(self, where, max_new_tokens=1, num_beams=1)


_PUNCTUATION = set(string.punctuation)


def normalize(text: str) -> list[str]:
    """The words of ``text``, SQuAD-normalised."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return re.sub(r"\b(a|an|the)\b", " ", text).split()


def exact_match(output: str, reference: str) -> float:
    return float(normalize(output) == normalize(reference))


def token_f1(output: str, reference: str) -> float:
    """Harmonic mean of word precision and recall (words counted with multiplicity)."""
    out, ref = normalize(output), normalize(reference)
    if not out or not ref:
        return float(out == ref)
    common = sum((collections.Counter(out) & collections.Counter(ref)).values())
    if not common:
        return 0.0
    precision, recall = common / len(out), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def rouge_l(output: str, reference: str) -> float:
    """ROUGE-L F1: from the longest common subsequence of the normalised words."""
    out, ref = normalize(output), normalize(reference)
    if not out or not ref:
        return float(out == ref)
    previous = [0] * (len(ref) + 1)
    for word in out:
        current = [0]
        for j, other in enumerate(ref):
            current.append(previous[j] + 1 if word == other else max(previous[j + 1], current[j]))
        previous = current
    lcs = previous[-1]
    if not lcs:
        return 0.0
    precision, recall = lcs / len(out), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


class GenerationEval(Evaluator):
    name = "generation"
    description = "generated answers vs references: exact match, token F1, ROUGE-L"
    tasks = frozenset({"causal_lm"})
    Options = GenerationOptions

    def evaluate(self, model, dataset, options, run):
        from tunery import complete, split_example

        decoding = {"num_beams": options.num_beams, "repetition_penalty": options.repetition_penalty}
        if options.temperature > 0:
            decoding["top_p"] = options.top_p
        records, skipped = [], 0
        for example in dataset[:options.limit]:
            prompt_ids, target_ids = split_example(example)
            if not prompt_ids:  # nothing to answer (e.g. plain text where every token is learned)
                skipped += 1
                continue
            decode = run.tokenizer.decode
            reference = decode(target_ids, skip_special_tokens=True).strip()
            output = complete(model, run.tokenizer, prompt_ids, max_new_tokens=options.max_new_tokens,
                              temperature=options.temperature, seed=run.config.seed, **decoding)
            records.append({"prompt": decode(prompt_ids, skip_special_tokens=True), "reference": reference,
                            "output": output, "exact_match": exact_match(output, reference),
                            "token_f1": token_f1(output, reference), "rouge_l": rouge_l(output, reference)})
        if not records:
            raise ConfigError("evaluator 'generation' found no example with a prompt to answer: it needs "
                              "prompt/response data (e.g. format alpaca), not plain text")
        metrics = {key: sum(r[key] for r in records) / len(records) for key in ("exact_match", "token_f1", "rouge_l")}
        metrics["examples"] = len(records)
        if skipped:
            metrics["skipped_without_prompt"] = skipped
        worst = sorted(records, key=lambda r: (r["token_f1"], r["rouge_l"]))[:options.worst]
        return EvalResult(metrics, worst=worst, records=records)


@hookimpl
def tunery_register_evaluators(registry):
    registry.add(GenerationEval())
