"""pytest plugin of tunery (entry point ``tunery`` in group ``pytest11``): fixtures for testing
plugins on tiny offline models. Nothing heavy is imported until a fixture is used.

* ``tunery_tiny_lm`` -- folder of a 2-layer Llama (hidden 64) with a ChatML tokenizer;
* ``tunery_tiny_encoder`` -- folder of a 2-layer BERT encoder with a WordPiece tokenizer;
* ``tunery_data`` -- small training files: ``{"causal_lm": alpaca rows, "classification": text/label rows}``;
* ``tunery_tokenizer`` -- the tiny Llama's tokenizer (for the formatter kit);
* ``tunery_engine`` -- an :class:`~tunery.Engine` with the installed plugins and a fresh cache folder;
* ``tunery_tiny_t5`` -- folder of a 2-layer T5 (encoder-decoder) with a word-level tokenizer
  covering :data:`tunery.testing.tiny.TOY_DICTIONARY`.

The models are built once per session (in well under a second) and shared by every test.
"""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="session")
def tunery_tiny_root(tmp_path_factory):
    return tmp_path_factory.mktemp("tunery-tiny")


@pytest.fixture(scope="session")
def tunery_tiny_lm(tunery_tiny_root) -> str:
    from .tiny import cached_causal_lm

    return cached_causal_lm(tunery_tiny_root)


@pytest.fixture(scope="session")
def tunery_tiny_encoder(tunery_tiny_root) -> str:
    from .tiny import cached_encoder

    return cached_encoder(tunery_tiny_root)


@pytest.fixture(scope="session")
def tunery_tiny_t5(tunery_tiny_root) -> str:
    from .tiny import cached_seq2seq

    return cached_seq2seq(tunery_tiny_root)


@pytest.fixture(scope="session")
def tunery_data(tunery_tiny_root) -> dict[str, str]:
    alpaca = [{"instruction": f"What is {i} plus {i}?", "input": "", "output": f"It is {2 * i}."} for i in range(16)]
    labelled = [{"text": ("good great fine lovely" if i % 2 else "bad awful poor sad") + f" {i}",
                 "label": "pos" if i % 2 else "neg"} for i in range(16)]
    files = {}
    for task, rows in (("causal_lm", alpaca), ("classification", labelled)):
        path = tunery_tiny_root / f"{task}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        files[task] = str(path)
    return files


@pytest.fixture(scope="session")
def tunery_tokenizer(tunery_tiny_lm):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tunery_tiny_lm)


@pytest.fixture
def tunery_engine(tmp_path):
    from ..engine import Engine

    return Engine(cache_dir=str(tmp_path / "tunery-cache"))
