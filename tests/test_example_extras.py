"""The third-party example with a member of every family (examples/tunery-extras): installed
with pip it is discovered through its entry point, its members combine with the built-ins in
one run from the CLI, and each passes its family's conformance kit."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tunery.testing import (EvaluatorConformance, ExtensionConformance, FormatterConformance, MethodConformance,
                            ObjectiveConformance)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tunery-extras"


def _load_example():
    spec = importlib.util.spec_from_file_location("tunery_extras", EXAMPLE / "tunery_extras" / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["tunery_extras"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


extras = _load_example()


@pytest.fixture(scope="module")
def extras_site(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("extras")
    source = shutil.copytree(EXAMPLE, root / "src", ignore=shutil.ignore_patterns("build", "*.egg-info"))
    site = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(site), str(source)], check=True, capture_output=True)
    return site


def cli(site: Path, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "tunery.cli", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=600)


def test_installed_package_registers_a_member_of_every_family(extras_site):
    out = cli(extras_site, "plugins", "--json")
    assert out.returncode == 0, out.stderr
    info = {p["name"]: p for p in json.loads(out.stdout)}["extras"]
    assert info["status"] == "ok" and info["distribution"] == "tunery-extras"
    assert info["members"] == {"methods": ["lnfit"], "objectives": ["focal"], "extensions": ["shrink"],
                               "formatters": ["qa", "qa_fast"], "quantizers": [], "evaluators": ["token_accuracy"],
                               "rewards": [], "constraints": []}


def test_its_extension_combines_with_builtin_method_and_objective(extras_site, tiny_lm, preference_files, tmp_path):
    train, heldout = preference_files
    out = cli(extras_site, "train", "--model", tiny_lm, "--method", "ia3", "--objective", "dpo", "--extensions", "shrink",
              "--format", "preference", "--data", train, "--eval-data", heldout, "--output-dir", tmp_path / "run",
              "--max-steps", 4, "--set", "training.learning_rate=5e-2", "--set", "training.bf16=false",
              )
    assert out.returncode == 0, out.stderr
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["plugins"]["method"]["name"] == "ia3" and manifest["plugins"]["objective"]["name"] == "dpo"
    assert [e["distribution"] for e in manifest["plugins"]["extensions"]] == ["tunery-extras"]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["after"]["reward_accuracy/margin"] > metrics["before"]["reward_accuracy/margin"]


def test_its_own_members_train_together_from_the_cli(extras_site, tiny_lm, tmp_path):
    rows = [{"question": f"What is {i} plus {i}?", "answer": f"It is {2 * i}."} for i in range(24)]
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = cli(extras_site, "train", "--model", tiny_lm, "--method", "lnfit", "--objective", "focal", "--format", "qa",
              "--data", data, "--eval-data", data, "--evaluators", "token_accuracy,loss", "--output-dir",
              tmp_path / "run", "--max-steps", 8, "--set", "training.learning_rate=5e-2",
              "--set", "training.bf16=false")
    assert out.returncode == 0, out.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["after"]["loss/loss"] < metrics["before"]["loss/loss"]
    assert metrics["after"]["token_accuracy/accuracy"] >= metrics["before"]["token_accuracy/accuracy"]


class TestLnFit(MethodConformance):
    method, plugins, learning_rate = "lnfit", (extras,), 5e-2


class TestFocal(ObjectiveConformance):
    objective, plugins, options, learning_rate = "focal", (extras,), {"gamma": 1.0}, 1e-2


class TestShrink(ExtensionConformance):
    extension, plugins, options = "shrink", (extras,), {"weight": 1e-4}


class TestQA(FormatterConformance):
    format, plugins = "qa", (extras,)
    good = [{"question": "What is 2 plus 2?", "answer": "4"}, {"question": "Capital of France?", "answer": "Paris"}]
    bad = [({"question": "No answer here", "answer": ""}, "empty text")]
    trained = [" 4<|endoftext|>", " Paris<|endoftext|>"]


class TestFastQA(FormatterConformance):
    format, plugins = "qa_fast", (extras,)
    good = [{"question": "What is 2 plus 2?", "answer": "4"}, {"question": "Capital of France?", "answer": "Paris"}]
    bad = [({"question": "No answer here", "answer": ""}, "empty text")]
    trained = [" 4<|endoftext|>", " Paris<|endoftext|>"]


class TestTokenAccuracy(EvaluatorConformance):
    evaluator, plugins = "token_accuracy", (extras,)


def test_every_code_block_of_the_plugin_guide_is_in_the_example():
    """docs/plugins.md shows the example's code: each python block is verbatim in the package
    (which the tests above install, run and put through the kits), so the guide cannot rot."""
    import re

    guide = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text()
    sources = "\n".join(p.read_text() for p in (EXAMPLE / "tunery_extras" / "__init__.py", EXAMPLE / "tests" / "test_extras.py"))
    blocks = re.findall(r"```python\n(.*?)```", guide, flags=re.S)
    assert len(blocks) >= 7
    for block in blocks:
        assert block.strip() in sources, f"docs/plugins.md shows code the example does not hold:\n{block}"
