"""Shared fixtures: tiny offline models, small data files, a CLI runner.

Tests never touch the network (HF_HUB_OFFLINE) and never need ../shared.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


@pytest.fixture(scope="session")
def tiny_lm(tunery_tiny_lm) -> str:
    """Folder of a 2-layer Llama (hidden 64) with a ChatML tokenizer (shared with the conformance kit)."""
    return tunery_tiny_lm


@pytest.fixture(scope="session")
def tiny_encoder(tunery_tiny_encoder) -> str:
    """Folder of a 2-layer BERT encoder with a WordPiece tokenizer (shared with the conformance kit)."""
    return tunery_tiny_encoder


@pytest.fixture(autouse=True)
def _restore_logging():
    """`tunery train` run in-process sets up the "tunery" logger for a terminal; undo it after."""
    import logging

    logger = logging.getLogger("tunery")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets tunery's cache under a temporary folder, never ~/.cache."""
    monkeypatch.setenv("TUNERY_CACHE", str(tmp_path_factory.getbasetemp() / "tunery-cache"))


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture
def alpaca_file(tmp_path) -> Path:
    """40 instruction rows with a learnable pattern."""
    rows = [{"instruction": f"What is {i} plus {i}?", "input": "", "output": f"It is {2 * i}."} for i in range(40)]
    return write_jsonl(tmp_path / "alpaca.jsonl", rows)


@pytest.fixture
def classification_file(tmp_path) -> Path:
    rows = [{"text": ("good great fine lovely" if i % 2 else "bad awful poor sad") + f" {i}",
             "label": "pos" if i % 2 else "neg"} for i in range(40)]
    return write_jsonl(tmp_path / "cls.jsonl", rows)


@pytest.fixture
def run_cli():
    """Invoke the tunery CLI in-process; returns the click Result (exit_code, output)."""
    from click.testing import CliRunner

    from tunery.cli import cli

    def invoke(*args, env=None):
        return CliRunner().invoke(cli, [str(a) for a in args], env=env, catch_exceptions=False)

    return invoke


def preference_rows(n: int, seed: int) -> list[dict]:
    """Pairs with a learnable preference: the chosen reply praises, the rejected one complains."""
    import random

    good = ["good", "great", "fine", "lovely", "kind", "clean", "happy", "nice"]
    bad = ["bad", "awful", "poor", "sad", "cold", "late", "rude", "dirty"]
    r = random.Random(seed)
    return [{"prompt": f"How was the visit {i}?", "chosen": "It was " + " ".join(r.sample(good, 3)) + ".",
             "rejected": "It was " + " ".join(r.sample(bad, 3)) + "."} for i in range(n)]


@pytest.fixture(scope="module")
def preference_files(tmp_path_factory) -> tuple[Path, Path]:
    """(train, held-out) JSONL files of prompt/chosen/rejected pairs; different pairs in each."""
    folder = tmp_path_factory.mktemp("preference")
    return (write_jsonl(folder / "train.jsonl", preference_rows(32, 0)),
            write_jsonl(folder / "heldout.jsonl", preference_rows(12, 1)))
