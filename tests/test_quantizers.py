"""The bitsandbytes quantizers (plugins/tunery_bnb_4bit, plugins/tunery_bnb_8bit) with LoRA.

A run trains through the real CLI with evaluation before and during training (the Trainer
evaluates every 2 steps), then the run folder is reloaded onto a freshly quantized base. The
``logits`` evaluator below records what the trained model computed, so the reload is compared
with the model that was trained, not with another reload.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import sys

import pytest
from click.testing import CliRunner
from tests.conftest import write_jsonl

from tunery import Engine, Evaluator, hookimpl
from tunery.cli import cli

needs_bnb = pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes not installed")
QUANTIZED_LAYERS = {"bnb-4bit": "Linear4bit", "bnb-8bit": "Linear8bitLt"}


class Logits(Evaluator):
    """Records the logits of the first evaluation batch, keyed by run folder (last phase wins)."""

    name = "logits"
    tasks = frozenset({"causal_lm", "classification"})

    def __init__(self):
        self.seen = {}

    def evaluate(self, model, dataset, options, run):
        batch = next(run.batches(dataset[:4]))
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        self.seen[str(run.output_dir)] = (inputs, model(**inputs).logits.detach().clone())
        return {}


class LogitsPlugin:
    def __init__(self):
        self.evaluator = Logits()

    @hookimpl
    def tunery_register_evaluators(self, registry):
        registry.add(self.evaluator)


def invoke(engine, *args):
    """The CLI in-process with ``engine``. It sets up the "tunery" logger for a terminal: restore it
    here, as module-scoped fixtures run outside conftest's per-test restore."""
    logger = logging.getLogger("tunery")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    try:
        return CliRunner().invoke(cli, [str(a) for a in args], obj=engine, catch_exceptions=False)
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("quant-data")
    lm = [{"instruction": f"What is {i} plus {i}?", "input": "", "output": f"It is {2 * i}."} for i in range(24)]
    cls = [{"text": ("good great fine lovely" if i % 2 else "bad awful poor sad") + f" {i}",
            "label": "pos" if i % 2 else "neg"} for i in range(24)]
    return {
        "causal": (write_jsonl(root / "lm.jsonl", lm[8:]), write_jsonl(root / "lm-eval.jsonl", lm[:8]), "alpaca"),
        "classification": (write_jsonl(root / "cls.jsonl", cls[8:]), write_jsonl(root / "cls-eval.jsonl", cls[:8]),
                           "classification"),
    }


CASES = [
    pytest.param(("bnb-4bit", "causal"), id="bnb-4bit-causal"),
    pytest.param(("bnb-8bit", "classification"), id="bnb-8bit-classification"),
    pytest.param(("bnb-8bit", "causal"), id="bnb-8bit-causal", marks=pytest.mark.slow),
    pytest.param(("bnb-4bit", "classification"), id="bnb-4bit-classification", marks=pytest.mark.slow),
    pytest.param(("bnb-4bit", "minilm"), id="bnb-4bit-minilm", marks=pytest.mark.slow),  # the bundled real encoder
]
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="module", params=CASES)
def trained(request, data, tiny_lm, tiny_encoder, tmp_path_factory):
    """One quantized LoRA run through the CLI, evaluating before and every 2 steps of training."""
    quantizer, task = request.param
    train, evaluation, formatter = data["causal" if task == "causal" else "classification"]
    model = {"causal": tiny_lm, "classification": tiny_encoder, "minilm": MINILM}[task]
    plugin = LogitsPlugin()
    engine = Engine(plugins=[plugin])
    out = tmp_path_factory.mktemp(f"run-{quantizer}-{task}")
    # LoRA on q/v only: after the 4-bit CPU kernel switch these got no gradient at all.
    targets = "q_proj,v_proj" if task == "causal" else "query,value"
    lr = {"causal": 0.01, "classification": 0.05, "minilm": 0.01}[task]
    checkpointing = (quantizer, task) != ("bnb-4bit", "causal")  # the k-bit default; off in one case for speed
    result = invoke(engine, "train", "--model", model, "--method", "lora", "--quantizer", quantizer,
                    "--format", formatter, "--data", train, "--eval-data", evaluation, "--output-dir", out,
                    "--evaluators", "loss,logits", "--max-steps", 6, "--overwrite",
                    "--set", f"method.target_modules={targets}", "--set", "method.r=8",
                    "--set", f"training.learning_rate={lr}", "--set", "training.batch_size=8",
                    "--set", f"quantizer.gradient_checkpointing={str(checkpointing).lower()}",
                    "--set", "training.eval_steps=2")
    assert result.exit_code == 0, result.output
    return {"quantizer": quantizer, "task": task, "out": out, "engine": engine,
            "logits": plugin.evaluator.seen[str(out)]}


@needs_bnb
def test_quantized_lora_learns_through_evaluations(trained):
    metrics = json.loads((trained["out"] / "metrics.json").read_text())
    assert metrics["after"]["loss/loss"] < metrics["before"]["loss/loss"] - 0.01
    evals = [r["eval_loss/loss"] for r in map(json.loads, (trained["out"] / "train_log.jsonl").read_text().splitlines())
             if "eval_loss/loss" in r]
    assert len(evals) == 3 and evals[-1] < evals[0]  # each evaluation was followed by more learning
    from safetensors.torch import load_file

    adapter = load_file(str(trained["out"] / "adapter" / "adapter_model.safetensors"))
    lora_b = [t for k, t in adapter.items() if "lora_B" in k]
    assert lora_b and all(t.abs().sum() > 0 for t in lora_b)  # every adapter left its zero init
    manifest = json.loads((trained["out"] / "manifest.json").read_text())
    assert manifest["plugins"]["quantizer"]["name"] == trained["quantizer"]


@needs_bnb
def test_reload_onto_fresh_quantized_base_is_identical(trained):
    import torch

    loaded = trained["engine"].load(str(trained["out"]))
    layers = {type(m).__name__ for m in loaded.model.modules()}
    assert QUANTIZED_LAYERS[trained["quantizer"]] in layers
    if trained["task"] != "causal":  # the fresh head stays unquantized (it crashes on CPU otherwise)
        head = loaded.model.base_model.model.classifier.modules_to_save["default"]
        assert type(head) is torch.nn.Linear
    inputs, expected = trained["logits"]
    with torch.no_grad():
        assert torch.equal(loaded.model(**inputs).logits, expected)


# ----------------------------------------------------------------------------- refusals


@pytest.fixture
def refused(alpaca_file, tmp_path):
    """Run `tunery train` expecting a refusal before the model is even looked up (it does not
    exist) and before the run folder is made."""

    def train(quantizer, method="lora"):
        out = tmp_path / "run"
        model = tmp_path / "no-such-model"
        result = CliRunner().invoke(cli, ["train", "--model", str(model), "--method", method, "--quantizer", quantizer,
                                          "--format", "alpaca", "--data", str(alpaca_file), "--output-dir", str(out)])
        assert result.exit_code != 0 and not out.exists(), result.output
        return result.output

    return train


def test_missing_bitsandbytes_is_one_clear_error_before_loading(monkeypatch, refused):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # find_spec and import both see it absent
    output = refused("bnb-4bit")
    assert "bitsandbytes" in output and "pip install 'tunery[bnb]'" in output


def test_broken_bitsandbytes_is_one_clear_error(monkeypatch, tmp_path, refused):
    fake = tmp_path / "site" / "bitsandbytes"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise OSError('libbitsandbytes_cpu.so: cannot open shared object file')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "bitsandbytes", raising=False)
    output = refused("bnb-8bit")
    assert "bitsandbytes is installed but cannot be loaded" in output and "cannot open shared object" in output
    assert "pip install 'tunery[bnb]'" in output


@needs_bnb
@pytest.mark.parametrize("quantizer", ["bnb-4bit", "bnb-8bit"])
def test_old_bitsandbytes_on_cpu_is_refused(monkeypatch, quantizer, refused):
    import bitsandbytes
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(bitsandbytes, "__version__", "0.44.1")
    assert f"quantizer '{quantizer}' needs bitsandbytes >= 0.48.0 on cpu, found 0.44.1" in refused(quantizer)


@needs_bnb
def test_unusable_kernels_are_refused(monkeypatch, refused):
    import bitsandbytes.functional

    def broken(*args, **kwargs):
        raise RuntimeError("no kernel for this platform")

    monkeypatch.setattr(bitsandbytes.functional, "quantize_4bit", broken)
    output = refused("bnb-4bit")
    assert "cannot quantize" in output and "no kernel for this platform" in output


@needs_bnb
def test_method_that_cannot_train_quantized_is_refused(refused):
    output = refused("bnb-8bit", method="full")
    assert "method 'full' cannot train a quantized base" in output and "lora" in output


@needs_bnb
@pytest.mark.parametrize("quantizer", ["bnb-4bit", "bnb-8bit"])
def test_fresh_heads_and_fully_trained_modules_stay_unquantized(quantizer):
    engine = Engine()
    config = engine.config({"model": "m", "output_dir": "o", "method": {"name": "lora", "modules_to_save": ["pooler"]},
                            "format": "classification", "quantizer": quantizer, "data": {"train": ["x.jsonl"]}})
    from tunery import RunContext
    from tunery.loading import HEAD_MODULES

    run = RunContext(config=config, output_dir=config.output_dir, engine=engine, data_task="classification")
    keep = list(HEAD_MODULES) + run.method.fully_trained_modules(config.method.options, run)
    kwargs = run.quantizer.load_kwargs(config.quantizer.options, keep, run)
    assert {"classifier", "score", "pooler"} <= set(kwargs["quantization_config"].llm_int8_skip_modules)
