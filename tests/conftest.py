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
def tiny_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="session")
def tiny_lm(tiny_root) -> str:
    """Folder of a 2-layer Llama (hidden 64) with a ChatML tokenizer."""
    from tunery.testing.tiny import cached_causal_lm

    return cached_causal_lm(tiny_root)


@pytest.fixture(scope="session")
def tiny_encoder(tiny_root) -> str:
    """Folder of a 2-layer BERT encoder with a WordPiece tokenizer."""
    from tunery.testing.tiny import cached_encoder

    return cached_encoder(tiny_root)


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
