"""Decoding constraints ``regex`` and ``json-schema``: the output matches a regular expression
or is a JSON document valid against a JSON Schema, through xgrammar's grammar-constrained
decoding (optional extra ``tunery[structured]``; chosen by measurement, docs/generation.md).

The grammar masks every token that cannot continue a valid output and allows end-of-text only
once the output is complete, so an output is valid unless ``max_new_tokens`` cuts it short."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

from tunery import ConfigError, Constraint, hookimpl

_COMPILERS: dict = {}
_GRAMMARS: dict = {}


def compiler(tokenizer, vocab_size: int):
    """xgrammar's grammar compiler for a tokenizer (built once: it reads the whole vocabulary)."""
    import xgrammar as xgr

    key = (id(tokenizer), vocab_size)
    if key not in _COMPILERS:
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
        _COMPILERS[key] = (tokenizer, xgr.GrammarCompiler(info))  # keeps the tokenizer alive with its id
    return _COMPILERS[key][1]


class GrammarProcessor:
    """Masks, for each row of a batch, the tokens its grammar cannot accept next. A row whose
    last token the grammar refused (another constraint forced it, or every allowed token was
    masked by one) is ended with end-of-text instead of failing the whole batch."""

    def __init__(self, compiled, vocab_size: int, eos_token_id: int):
        self.compiled, self.vocab_size, self.eos = compiled, vocab_size, eos_token_id
        self.matchers, self.dead, self.bitmask = None, set(), None

    def __call__(self, input_ids, scores):
        import xgrammar as xgr

        if self.matchers is None:
            self.matchers = [xgr.GrammarMatcher(self.compiled) for _ in range(input_ids.shape[0])]
            self.bitmask = xgr.allocate_token_bitmask(input_ids.shape[0], self.vocab_size)
        else:
            for i, matcher in enumerate(self.matchers):
                if i not in self.dead and not matcher.is_terminated() and not matcher.accept_token(int(input_ids[i, -1])):
                    self.dead.add(i)
        for i, matcher in enumerate(self.matchers):
            if i not in self.dead and not matcher.is_terminated():
                matcher.fill_next_token_bitmask(self.bitmask, i)
        device = scores.device
        scores = scores.to("cpu") if device.type not in ("cpu", "cuda") else scores
        xgr.apply_token_bitmask_inplace(scores, self.bitmask.to(scores.device))
        scores = scores.to(device)
        for i in self.dead:
            scores[i] = float("-inf")
            scores[i, self.eos] = 0.0
        return scores


class _Grammar(Constraint):
    requires = ("xgrammar",)

    def compiled(self, options, compiler_):
        raise NotImplementedError

    def logits_processors(self, options, tokenizer, vocab_size, max_new_tokens):
        key = (id(tokenizer), vocab_size, self.name, json.dumps(dataclasses.asdict(options), sort_keys=True))
        if key not in _GRAMMARS:  # compiled once, a fresh matcher per batch
            _GRAMMARS[key] = self.compiled(options, compiler(tokenizer, vocab_size))
        return [GrammarProcessor(_GRAMMARS[key], vocab_size, tokenizer.eos_token_id)]


@dataclasses.dataclass
class RegexOptions:
    pattern: str = ""  # the whole output must match it

    def validate(self, where: str) -> None:
        try:
            re.compile(self.pattern)
        except re.error as exc:
            raise ConfigError(f"config key '{where}.pattern' is not a valid regular expression: {exc}") from None
        if not self.pattern:
            raise ConfigError(f"config key '{where}.pattern' is empty (regex:PATTERN)")


class Regex(_Grammar):
    name = "regex"
    description = "the output matches a regular expression (regex:PATTERN)"
    Options = RegexOptions
    argument = "pattern"

    def compiled(self, options, compiler_):
        return compiler_.compile_regex(options.pattern)

    def satisfied(self, text, options):
        return re.fullmatch(options.pattern, text) is not None


@dataclasses.dataclass
class SchemaOptions:
    schema: Any = None  # a JSON Schema: a file path, or the schema itself (a mapping)
    any_whitespace: bool = False  # false: compact JSON (a weak model cannot loop on whitespace)

    def validate(self, where: str) -> None:
        if isinstance(self.schema, str):
            path = Path(self.schema)
            if not path.is_file():
                raise ConfigError(f"config key '{where}.schema': file '{path.absolute()}' does not exist")
            try:
                self.schema = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise ConfigError(f"config key '{where}.schema': {path.absolute()}:{exc.lineno}: not JSON ({exc.msg})") from None
        if not isinstance(self.schema, dict):
            raise ConfigError(f"config key '{where}.schema' must be a JSON Schema file or mapping, got {self.schema!r}")
        import jsonschema

        try:
            jsonschema.validators.validator_for(self.schema).check_schema(self.schema)
        except jsonschema.SchemaError as exc:
            raise ConfigError(f"config key '{where}.schema' is not a valid JSON Schema: {exc.message}") from None


class JsonSchema(_Grammar):
    name = "json-schema"
    description = "the output is JSON valid against a schema (json-schema:schema.json)"
    Options = SchemaOptions
    argument = "schema"
    requires = ("xgrammar", "jsonschema")

    def compiled(self, options, compiler_):
        return compiler_.compile_json_schema(json.dumps(options.schema), any_whitespace=options.any_whitespace)

    def satisfied(self, text, options):
        import jsonschema

        try:
            jsonschema.validate(json.loads(text), options.schema)
        except (ValueError, jsonschema.ValidationError):
            return False
        return True


@hookimpl
def tunery_register_constraints(registry):
    registry.add(Regex())
    registry.add(JsonSchema())
