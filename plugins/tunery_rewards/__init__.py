"""Built-in reward sources for the online objectives (``grpo``, ``rloo``).

* ``exact_match`` -- 1.0 when the completion (stripped; optionally case-folded, or only its
  last line / the text a ``pattern`` captures) equals the row's reference answer column;
* ``regex`` -- 1.0 when the completion matches ``pattern`` (a format check), else 0.0;
* ``length`` -- ``1 - |words - target| / target`` (at most 1, falls off linearly), or per
  token when ``unit: tokens``.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Literal

from tunery import ConfigError, Reward, hookimpl


@dataclasses.dataclass
class ExactMatchOptions:
    """Which column holds the reference, and how completions are compared with it."""

    column: str = "answer"
    ignore_case: bool = True
    pattern: str = ""  # when set: compare the first capture group (or the match) of this regex


@dataclasses.dataclass
class RegexOptions:
    pattern: str = ""
    mode: Literal["search", "fullmatch"] = "search"

    def validate(self, where):
        if not self.pattern:
            raise ConfigError(f"config key '{where}.pattern' is required for the regex reward")
        try:
            re.compile(self.pattern)
        except re.error as exc:
            raise ConfigError(f"config key '{where}.pattern' is not a valid regular expression: {exc}") from None


@dataclasses.dataclass
class LengthOptions:
    target: int = 20
    unit: Literal["words", "characters", "tokens"] = "words"

    def validate(self, where):
        if self.target < 1:
            raise ConfigError(f"config key '{where}.target' must be at least 1, got {self.target}")


def _extract(text: str, pattern: str) -> str | None:
    if not pattern:
        return text
    found = re.search(pattern, text, re.DOTALL)
    return None if found is None else (found.group(1) if found.groups() else found.group(0))


class ExactMatch(Reward):
    name = "exact_match"
    description = "1 when the completion equals the row's reference answer (column option), else 0"
    Options = ExactMatchOptions

    def score(self, prompts, completions, columns, options, run):
        if options.column not in columns:
            raise ConfigError(f"reward 'exact_match': the data has no column '{options.column}' "
                              f"(columns: {', '.join(sorted(columns)) or 'none'}); set its 'column' option")
        out = []
        for completion, answer in zip(completions, columns[options.column]):
            if answer is None:
                out.append(None)
                continue
            got = _extract(completion, options.pattern)
            a, b = str(got or "").strip(), str(answer).strip()
            if options.ignore_case:
                a, b = a.casefold(), b.casefold()
            out.append(float(got is not None and a == b))
        return out


class Regex(Reward):
    name = "regex"
    description = "1 when the completion matches the pattern option (a format check), else 0"
    Options = RegexOptions

    def score(self, prompts, completions, columns, options, run):
        match = re.fullmatch if options.mode == "fullmatch" else re.search
        return [float(match(options.pattern, c, re.DOTALL) is not None) for c in completions]


class Length(Reward):
    name = "length"
    description = "1 at the target length (words, characters or tokens), falling off linearly"
    Options = LengthOptions

    def score(self, prompts, completions, columns, options, run):
        def size(text):
            if options.unit == "tokens":
                return len(run.tokenizer(text, add_special_tokens=False)["input_ids"])
            return len(text) if options.unit == "characters" else len(text.split())

        return [1.0 - abs(size(c) - options.target) / options.target for c in completions]


@hookimpl
def tunery_register_rewards(registry):
    for member in (ExactMatch(), Regex(), Length()):
        registry.add(member)
