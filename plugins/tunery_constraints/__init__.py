"""Decoding constraints ``stop``, ``ban``, ``require``, ``repetition`` and ``length``
(``tunery generate --constraint NAME:ARG``; see docs/generation.md).

``ban`` and ``require`` match text, not tokens: a banned phrase is refused however the model
would spell it in tokens (its text so far plus a candidate token must not contain the phrase),
case-insensitively unless ``ignore_case: false``. Token texts are each token decoded alone,
exact for byte-level BPE tokenizers (GPT-2, Llama 3, SmolLM2, Qwen)."""

from __future__ import annotations

import bisect
import dataclasses
from pathlib import Path

from tunery import ConfigError, Constraint, at_least, hookimpl


def _words(arg: str, where: str) -> dict:
    """``ban:words.txt`` (one word or phrase a line) or ``ban:cat,dog``."""
    if Path(arg).is_file():
        return {"file": arg}
    if arg.endswith(".txt"):
        raise ConfigError(f"{where}: word file '{Path(arg).absolute()}' does not exist")
    return {"words": arg}


@dataclasses.dataclass
class WordsOptions:
    words: list[str] = dataclasses.field(default_factory=list)
    file: str | None = None  # one word or phrase a line (blank lines and lines starting with # ignored)
    ignore_case: bool = True

    def validate(self, where: str) -> None:
        if self.file:
            path = Path(self.file)
            if not path.is_file():
                raise ConfigError(f"config key '{where}.file': '{path.absolute()}' does not exist")
            lines = path.read_text(encoding="utf-8").splitlines()
            self.words += [w.strip() for w in lines if w.strip() and not w.lstrip().startswith("#")]
            self.file = str(path.absolute())
        self.words = [w for w in (w.strip() for w in self.words) if w]
        if not self.words:
            raise ConfigError(f"config key '{where}.words' is empty: give words (ban:cat,dog) or a file (ban:words.txt)")

    def phrases(self) -> list[str]:
        return [w.lower() for w in self.words] if self.ignore_case else list(self.words)


_TOKEN_TEXTS: dict = {}


def token_texts(tokenizer, vocab_size: int) -> list[str]:
    """The text of every token id decoded alone (ids past the tokenizer's vocabulary: '')."""
    key = (id(tokenizer), vocab_size)
    if key not in _TOKEN_TEXTS:
        known = len(tokenizer)
        special = set(tokenizer.all_special_ids)
        _TOKEN_TEXTS[key] = [tokenizer.decode([i]) if i < known and i not in special else "" for i in range(vocab_size)]
    return _TOKEN_TEXTS[key]


class _TextProcessor:
    """Base of the text-level processors: the decoded continuation of each row so far."""

    def __init__(self, tokenizer):
        self.tokenizer, self.prompt_length = tokenizer, None

    def texts(self, input_ids, tail: int | None = None) -> list[str]:
        if self.prompt_length is None:
            self.prompt_length = input_ids.shape[1]
        new = input_ids[:, self.prompt_length:]
        if tail is not None:
            new = new[:, -tail:] if tail else new[:, :0]
        return self.tokenizer.batch_decode(new, skip_special_tokens=True)


class BanProcessor(_TextProcessor):
    """Masks every token that would complete a banned phrase."""

    def __init__(self, phrases: list[str], ignore_case: bool, tokenizer, vocab_size: int):
        import torch

        super().__init__(tokenizer)
        texts = token_texts(tokenizer, vocab_size)
        texts = [t.lower() for t in texts] if ignore_case else texts
        self.ignore_case = ignore_case
        ranked = sorted((t, i) for i, t in enumerate(texts) if t)
        keys = [t for t, _ in ranked]
        longest = max(map(len, keys), default=0)

        def starting(prefix: str):  # ids of the tokens whose text starts with prefix: a range of the sorted texts
            low, high = bisect.bisect_left(keys, prefix), bisect.bisect_left(keys, prefix + "\U0010ffff")
            return torch.tensor([i for _, i in ranked[low:high]], dtype=torch.long)

        def containing(phrase: str):
            if len(phrase) > longest:
                return torch.tensor([], dtype=torch.long)
            return torch.tensor([i for i, t in enumerate(texts) if phrase in t], dtype=torch.long)

        # per phrase: tokens containing it, and for each split k, the tokens starting with phrase[k:]
        self.rules = [(p, containing(p), {k: starting(p[k:]) for k in range(1, len(p))}) for p in phrases]
        self.tail = max(len(p) for p in phrases)  # tokens enough to hold any phrase prefix

    def __call__(self, input_ids, scores):
        for row, text in enumerate(self.texts(input_ids, self.tail)):
            text = text.lower() if self.ignore_case else text
            for phrase, inside, starts in self.rules:
                scores[row, inside] = float("-inf")
                for k, ids in starts.items():
                    if text.endswith(phrase[:k]):
                        scores[row, ids] = float("-inf")
        return scores


class RequireProcessor(_TextProcessor):
    """Keeps end-of-text away until every required word is in the output, and spells the missing
    ones out when the token budget is about to run out."""

    def __init__(self, words: list[str], ignore_case: bool, tokenizer, max_new_tokens: int):
        super().__init__(tokenizer)
        self.words, self.ignore_case, self.max_new_tokens = words, ignore_case, max_new_tokens
        self.spelled = {w: tokenizer(" " + w, add_special_tokens=False)["input_ids"] for w in words}
        self.stop_ids = sorted({i for i in (tokenizer.eos_token_id, tokenizer.pad_token_id) if i is not None})
        self.forcing: dict[int, list[int]] = {}

    def __call__(self, input_ids, scores):
        texts = self.texts(input_ids)
        left = self.max_new_tokens - (input_ids.shape[1] - self.prompt_length)
        for row, text in enumerate(texts):
            text = text.lower() if self.ignore_case else text
            missing = [w for w in self.words if (w.lower() if self.ignore_case else w) not in text]
            queue = self.forcing.get(row) or []
            if not queue and missing and left <= sum(len(self.spelled[w]) for w in missing):
                queue = self.forcing[row] = list(self.spelled[missing[0]])
            if queue:
                token = queue.pop(0)
                kept = scores[row, token].clone()
                scores[row] = float("-inf")
                scores[row, token] = kept if kept > float("-inf") else 0.0
            elif missing:
                scores[row, self.stop_ids] = float("-inf")
        return scores


class Ban(Constraint):
    name = "ban"
    description = "banned words or phrases never appear (ban:words.txt or ban:cat,dog)"
    Options = WordsOptions

    def from_argument(self, arg, where):
        return _words(arg, where)

    def logits_processors(self, options, tokenizer, vocab_size, max_new_tokens):
        return [BanProcessor(options.phrases(), options.ignore_case, tokenizer, vocab_size)]

    def satisfied(self, text, options):
        text = text.lower() if options.ignore_case else text
        return not any(p in text for p in options.phrases())


class Require(Constraint):
    name = "require"
    description = "required words appear in every output (require:words.txt or require:cat,dog)"
    Options = WordsOptions

    def from_argument(self, arg, where):
        return _words(arg, where)

    def logits_processors(self, options, tokenizer, vocab_size, max_new_tokens):
        return [RequireProcessor(options.words, options.ignore_case, tokenizer, max_new_tokens)]

    def satisfied(self, text, options):
        text = text.lower() if options.ignore_case else text
        return all(p in text for p in options.phrases())


@dataclasses.dataclass
class StopOptions:
    strings: list[str] = dataclasses.field(default_factory=list)  # generation ends at the first one (cut off)

    def validate(self, where: str) -> None:
        if not self.strings or not all(self.strings):
            raise ConfigError(f"config key '{where}.strings' needs non-empty stop strings (stop:###)")


class Stop(Constraint):
    name = "stop"
    description = "generation ends at a stop string, which is cut off (stop:###)"
    Options = StopOptions

    def from_argument(self, arg, where):
        return {"strings": [arg]}

    def stopping_criteria(self, options, tokenizer):
        from transformers import StopStringCriteria

        return [StopStringCriteria(tokenizer, options.strings)]

    def finish(self, text, options):
        cuts = [text.find(s) for s in options.strings if s in text]
        return text[:min(cuts)] if cuts else text

    def satisfied(self, text, options):
        return not any(s in text for s in options.strings)


@dataclasses.dataclass
class RepetitionOptions:
    penalty: float = 1.3  # > 1 makes tokens already present less likely (transformers' repetition_penalty)
    no_repeat_ngram: int = 0  # > 0: no token n-gram of this size occurs twice

    def validate(self, where: str) -> None:
        if self.penalty <= 0:
            raise ConfigError(f"config key '{where}.penalty' must be > 0 (1 = no penalty), got {self.penalty}")
        at_least(self, where, no_repeat_ngram=0)


class Repetition(Constraint):
    name = "repetition"
    description = "repetition penalty and no repeated n-grams (repetition:1.3)"
    Options = RepetitionOptions
    argument = "penalty"

    def generate_kwargs(self, options):
        return {"repetition_penalty": options.penalty,
                **({"no_repeat_ngram_size": options.no_repeat_ngram} if options.no_repeat_ngram else {})}


@dataclasses.dataclass
class LengthOptions:
    min_tokens: int = 0
    max_tokens: int | None = None  # None: the max_new_tokens of the call

    def validate(self, where: str) -> None:
        at_least(self, where, min_tokens=0)
        if self.max_tokens is not None and (self.max_tokens < 1 or self.max_tokens < self.min_tokens):
            raise ConfigError(f"config key '{where}': need 1 <= max_tokens and min_tokens <= max_tokens, "
                              f"got min {self.min_tokens}, max {self.max_tokens}")


class Length(Constraint):
    name = "length"
    description = "between MIN and MAX new tokens (length:10-40, or length:40 for a maximum)"
    Options = LengthOptions

    def from_argument(self, arg, where):
        low, sep, high = arg.partition("-")
        return {"min_tokens": low, "max_tokens": high} if sep else {"max_tokens": arg}

    def generate_kwargs(self, options):
        return {"min_new_tokens": options.min_tokens,
                **({"max_new_tokens": options.max_tokens} if options.max_tokens else {})}


@hookimpl
def tunery_register_constraints(registry):
    for member in (Stop(), Ban(), Require(), Repetition(), Length()):
        registry.add(member)
