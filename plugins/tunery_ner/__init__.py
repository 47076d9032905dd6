"""Formatter ``ner``: words with BIO/BIOES tags -> token classification (named entities, parts of speech).

Reads JSONL/JSON/parquet rows ``{"tokens": [...], "tags": [...]}`` and CoNLL-style files
(``.conll``, and ``.txt``/``.iob``/``.bio`` when this formatter is chosen): one token per line,
its tag in the last column, a blank line between sentences, ``-DOCSTART-`` lines ignored.
Each word's first sub-token carries its tag, the others ``-100`` (``label_all_subtokens: true``
labels them too, a ``B-`` continuing as ``I-``). The label names (``O`` first, then sorted, or
``labels``) are saved with the run. Tags must follow the scheme (``auto``: BIOES when an ``E-``
or ``S-`` tag occurs in the data, else BIO). A sentence longer than ``data.max_length`` tokens is
cut at its end (``data.truncation`` ``error``/``drop`` refuse it instead)."""

from __future__ import annotations

import dataclasses
import os
from typing import Literal

from tunery import Formatter, Problem, Row, RowError, Source, hookimpl, note

CONLL_SUFFIXES = (".conll", ".txt", ".iob", ".bio")
PREFIXES = {"BIO": ("B", "I"), "BIOES": ("B", "I", "E", "S")}


@dataclasses.dataclass
class NerOptions:
    tokens: str = "tokens"  # column of the words (JSON rows)
    tags: str = "tags"  # column of their tags (JSON rows)
    scheme: Literal["auto", "BIO", "BIOES"] = "auto"
    labels: list[str] | None = None  # fixed label names (order = ids); default: O, then the tags found, sorted
    label_all_subtokens: bool = False  # label every sub-token of a word, not only its first


class Ner(Formatter):
    name = "ner"
    description = "tagged words (CoNLL files or tokens/tags JSON) for token classification"
    task = "token_classification"
    Options = NerOptions

    def read_file(self, path, options, problems):
        if os.path.splitext(path)[1].lower() in CONLL_SUFFIXES:
            return read_conll(path, problems)
        return None

    def label_names(self, rows, options):
        if options.labels:
            return list(options.labels)
        found = set()
        for row in rows:
            tags = row.get(options.tags)
            if isinstance(tags, list):
                found.update(t for t in tags if isinstance(t, str) and _valid(t, ("B", "I", "E", "S")))
        found.discard("O")
        return ["O", *sorted(found, key=lambda t: (t[2:], t))]

    def format(self, row, tokenizer, options, run):
        words, tags = _column(row, options.tokens), _column(row, options.tags)
        if not words:
            raise RowError("empty sentence", f"'{options.tokens}' has no tokens")
        if len(words) != len(tags):
            raise RowError("tag count mismatch", f"{len(words)} tokens but {len(tags)} tags")
        names = run.label_names or []
        scheme = self._scheme(options, names)
        lines = row.get("_lines")
        for i, tag in enumerate(tags):
            where = f"line {lines[i]}" if lines else f"token {i + 1}"
            if not _valid(tag, PREFIXES[scheme]):
                raise RowError("unknown tag scheme", f"tag '{tag}' ({where}) is not O or {'/'.join(PREFIXES[scheme])}-TYPE "
                                                     f"(scheme {scheme}); fix the tag or set format.scheme")
            if tag not in names:
                raise RowError("unknown label", f"tag '{tag}' ({where}) is not one of {', '.join(names)}")
        enc = tokenizer(words, is_split_into_words=True)
        ids, word_ids = list(enc["input_ids"]), enc.word_ids()
        labels, first, previous = [], [], None
        for position, word in enumerate(word_ids):
            if word is None:
                labels.append(-100)
            elif word != previous:
                labels.append(names.index(tags[word]))
                first.append(position)
            elif options.label_all_subtokens:
                tag = tags[word]
                inner = "I-" + tag[2:] if tag[:2] in ("B-", "S-") and "I-" + tag[2:] in names else tag
                labels.append(names.index(inner))
            else:
                labels.append(-100)
            previous = word if word is not None else previous
        if len(first) != len(words):
            raise RowError("empty token", f"{len(words) - len(first)} token(s) give no sub-token (blank words?)")
        limit, policy = run.config.data.max_length, run.config.data.truncation
        if len(ids) > limit:  # cut here, so that the word positions stay right
            if policy in ("error", "drop"):
                raise RowError("too long", f"{len(ids)} tokens > data.max_length {limit} (data.truncation={policy})")
            ids, labels, first = ids[:limit], labels[:limit], [p for p in first if p < limit]
            note("sentence cut to data.max_length (its last words are not labelled)")
        return {"input_ids": ids, "labels": labels, "_first": first}

    @staticmethod
    def _scheme(options, names):
        if options.scheme != "auto":
            return options.scheme
        return "BIOES" if any(n[:2] in ("E-", "S-") for n in names) else "BIO"


def _column(row, column):
    value = row.get(column)
    if value is None:
        raise RowError("missing column", f"no '{column}'")
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RowError("wrong type", f"'{column}' must be a list of strings")
    return value


def _valid(tag: str, prefixes) -> bool:
    return tag == "O" or (len(tag) > 2 and tag[1] == "-" and tag[0] in prefixes)


def read_conll(path: str, problems: list):
    """Sentences of a CoNLL-style file as rows ``{"tokens", "tags", "_lines"}`` (source: the
    line of the sentence's first token); a line without a tag column is a bad row."""
    with open(path, "rb") as f:
        text = f.read().decode("utf-8-sig", errors="replace")
    tokens, tags, lines, bad = [], [], [], None

    def sentence():
        if bad is not None:
            problems.append(bad)
        elif tokens:
            return Row({"tokens": tokens, "tags": tags, "_lines": lines}, Source(path, line=lines[0]))
        return None

    for n, line in enumerate(text.split("\n"), 1):
        fields = line.split()
        if not fields or fields[0] == "-DOCSTART-":
            row = sentence()
            if row is not None:
                yield row
            tokens, tags, lines, bad = [], [], [], None
            continue
        if len(fields) < 2 and bad is None:
            bad = Problem(Source(path, line=n), "missing tag",
                          f"'{line.strip()}' has no tag column (a token, whitespace, then its tag)")
        tokens.append(fields[0])
        tags.append(fields[-1])
        lines.append(n)
    row = sentence()
    if row is not None:
        yield row


@hookimpl
def tunery_register_formatters(registry):
    registry.add(Ner())
