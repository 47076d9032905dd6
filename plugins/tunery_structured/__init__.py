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


class _Grammar(Constraint):
    requires = ("xgrammar",)

    def compiled(self, options, compiler_):
        raise NotImplementedError

    def logits_processors(self, options, tokenizer, vocab_size, max_new_tokens):
        import xgrammar as xgr

        key = (id(tokenizer), vocab_size, self.name, json.dumps(dataclasses.asdict(options), sort_keys=True))
        if key not in _GRAMMARS:  # compiled once, a fresh matcher per batch
            _GRAMMARS[key] = self.compiled(options, compiler(tokenizer, vocab_size))
        return [xgr.contrib.hf.LogitsProcessor(_GRAMMARS[key])]


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
