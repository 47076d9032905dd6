"""The third-party example plugin (examples/tunery-bitfit) installs with pip, is discovered
through its entry point, trains from the CLI, and passes the conformance suite."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tunery.testing import MethodConformance

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tunery-bitfit"


@pytest.fixture(scope="session")
def bitfit_site(tmp_path_factory) -> Path:
    """A folder holding the installed example (package + dist-info with its entry point)."""
    root = tmp_path_factory.mktemp("bitfit")
    source = shutil.copytree(EXAMPLE, root / "src", ignore=shutil.ignore_patterns("build", "*.egg-info"))
    site = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(site), str(source)], check=True, capture_output=True)
    assert (site / "tunery_bitfit").is_dir()
    return site


def cli(site: Path, *args, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "tunery.cli", *map(str, args)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_entry_point_is_discovered(bitfit_site):
    out = cli(bitfit_site, "plugins", "--json")
    assert out.returncode == 0, out.stderr
    info = {p["name"]: p for p in json.loads(out.stdout)}["bitfit"]
    assert info["distribution"] == "tunery-bitfit" and info["status"] == "ok"
    assert info["members"]["methods"] == ["bitfit"]


def test_quick_form_train_with_the_plugin(bitfit_site, tiny_lm, alpaca_file, tmp_path):
    out = cli(bitfit_site, "train", "--model", tiny_lm, "--method", "bitfit", "--format", "alpaca",
              "--data", alpaca_file, "--output-dir", tmp_path / "run", "--max-steps", 3,
              "--set", "training.learning_rate=0.05", "--set", "data.max_length=48")
    assert out.returncode == 0, out.stderr
    saved = json.loads((tmp_path / "run" / "adapter" / "bitfit.json").read_text())
    # The tiny Llama has no bias terms: the fallback trains the norm weights only.
    assert saved["parameters"] and all("norm" in name for name in saved["parameters"])
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["plugins"]["method"]["distribution"] == "tunery-bitfit"


class TestBitFitConformance(MethodConformance):
    """The example's own conformance class (examples/tunery-bitfit/tests), run on the installed copy."""

    method = "bitfit"
    learning_rate = 5e-2

    @pytest.fixture(scope="class", autouse=True)
    def installed(self, bitfit_site):
        with pytest.MonkeyPatch.context() as patch:
            patch.syspath_prepend(str(bitfit_site))  # the engine finds the entry point in its dist-info
            yield
            sys.modules.pop("tunery_bitfit", None)
