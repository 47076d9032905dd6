"""Evaluator ``generation``: generates an answer to each evaluation prompt and scores it against
the reference (exact match, token-level F1 and ROUGE-L on normalised text); every prompt,
reference and output is kept. Prompts are generated in batches (``batch_size``).

With ``constraints`` (decoding constraints, as for ``tunery generate --constraint``) it also
reports each one's satisfaction: the share of outputs that keep it (``constraint/<name>``).
For a run trained with control codes (``data.control``) each prompt carries its row's tags;
``control_rules`` (``{"sentiment=positive": "regex", ...}``) judge whether an output follows
its requested attribute (``control/follows``: share of outputs whose own value's rule matches
and no other value's rule does).

The prompt of an example is its leading unlabelled tokens and the reference its labelled ones,
so any prompt/response formatter (alpaca, chat...) works as it is. Texts are normalised as in
SQuAD: lower case, no punctuation, no articles (a, an, the), single spaces."""

from __future__ import annotations

import collections
import dataclasses
import re
import string

from typing import Any

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
    batch_size: int = 16  # prompts generated together
    constraints: list[Any] = dataclasses.field(default_factory=list)  # "NAME:ARG" or {name: NAME, ...}
    control_rules: dict = dataclasses.field(default_factory=dict)  # "column=value" -> regex an output following it matches

    def validate(self, where: str) -> None:
        at_least(self, where, max_new_tokens=1, num_beams=1, batch_size=1)
        for key, pattern in self.control_rules.items():
            if "=" not in str(key):
                raise ConfigError(f"config key '{where}.control_rules': key {key!r} must be COLUMN=VALUE")
            try:
                re.compile(str(pattern))
            except re.error as exc:
                raise ConfigError(f"config key '{where}.control_rules.{key}' is not a valid regular expression: {exc}") from None


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
        from tunery import complete_batch, resolve_constraints, satisfaction, split_example

        constraints = resolve_constraints(run.engine.constraints, options.constraints, "generation.constraints")
        decoding = {"num_beams": options.num_beams}
        if options.repetition_penalty != 1.0:  # else a `repetition` constraint's penalty holds
            decoding["repetition_penalty"] = options.repetition_penalty
        if options.temperature > 0:
            decoding["top_p"] = options.top_p
        chosen, skipped = [], 0
        for example in dataset[:options.limit]:
            prompt_ids, target_ids = split_example(example)
            if not prompt_ids:  # nothing to answer (e.g. plain text where every token is learned)
                skipped += 1
                continue
            chosen.append((example, prompt_ids, target_ids))
        if not chosen:
            raise ConfigError("evaluator 'generation' found no example with a prompt to answer: it needs "
                              "prompt/response data (e.g. format alpaca), not plain text")
        outputs = complete_batch(model, run.tokenizer, [p for _, p, _ in chosen], max_new_tokens=options.max_new_tokens,
                                 temperature=options.temperature, seed=run.config.seed, constraints=constraints,
                                 batch_size=options.batch_size, **decoding)
        decode, records = run.tokenizer.decode, []
        for (example, prompt_ids, target_ids), output in zip(chosen, outputs):
            reference = decode(target_ids, skip_special_tokens=True).strip()
            record = {"prompt": decode(prompt_ids, skip_special_tokens=True), "reference": reference,
                      "output": output, "exact_match": exact_match(output, reference),
                      "token_f1": token_f1(output, reference), "rouge_l": rouge_l(output, reference)}
            if example.get("_control"):
                record["control"] = example["_control"]
                follows = control_follows(output, example["_control"], options.control_rules)
                if follows is not None:
                    record["follows_control"] = follows
            records.append(record)
        metrics = {key: sum(r[key] for r in records) / len(records) for key in ("exact_match", "token_f1", "rouge_l")}
        metrics.update(satisfaction(constraints, outputs))
        judged = [r["follows_control"] for r in records if "follows_control" in r]
        if judged:
            metrics["control/follows"] = sum(judged) / len(judged)
            metrics["control/judged"] = len(judged)
        metrics["examples"] = len(records)
        if skipped:
            metrics["skipped_without_prompt"] = skipped
        worst = sorted(records, key=lambda r: (r["token_f1"], r["rouge_l"]))[:options.worst]
        return EvalResult(metrics, worst=worst, records=records)


def control_follows(output: str, control: dict, rules: dict) -> bool | None:
    """Whether ``output`` follows its requested attribute values by the ``rules`` (``"col=value"``
    -> regex, searched case-insensitively): for each column with rules, its own value's rule
    matches and no other value's rule does. ``None`` when no rule covers the columns."""
    verdicts = []
    for column, value in control.items():
        mine = rules.get(f"{column}={value}")
        others = [p for key, p in rules.items() if key.startswith(f"{column}=") and key != f"{column}={value}"]
        if mine is None and not others:
            continue
        hit = lambda pattern: re.search(str(pattern), output, re.IGNORECASE) is not None  # noqa: E731
        verdicts.append((mine is None or hit(mine)) and not any(hit(p) for p in others))
    return all(verdicts) if verdicts else None


@hookimpl
def tunery_register_evaluators(registry):
    registry.add(GenerationEval())
