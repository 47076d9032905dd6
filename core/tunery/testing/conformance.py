"""The conformance suite every tuning method passes, built-in or third-party.

Subclass :class:`MethodConformance` in a test module, name the method and its options::

    from tunery.testing import MethodConformance

    class TestBitFit(MethodConformance):
        method = "bitfit"
        options = {}

pytest then runs, for causal LM and classification (where the method's ``tasks`` allow), a
few training steps on a tiny model through the real run flow and checks what users rely on:
the loss goes down; trainable and total parameters are reported; the result is saved; a fresh
base plus the saved result gives identical logits and identical greedy generations; merged
weights give the same outputs (when ``can_merge``) or merging is refused with the method's
message; and every combination the method's capabilities exclude is refused before any
model loads. The fixtures come from :mod:`tunery.testing.plugin` (loaded through ``pytest11``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

import pytest

from ..engine import Engine
from ..errors import IncompatibleError, ModelSourceError
from ..hookspecs import hookimpl
from ..members import Evaluator, Method, Quantizer

PROMPT = "What is 3 plus 3?"
NO_MODEL = "/nonexistent/tunery-conformance-model"  # resolving it fails: a check must refuse first


class Probe(Evaluator):
    """Records, each time it evaluates, the logits on two fixed examples and a greedy generation."""

    name = "conformance-probe"

    def __init__(self):
        self.records: list[dict] = []

    def evaluate(self, model, dataset, options, run):
        from ..generation import generate
        from ..evaluation import logits

        batch = next(run.batches(dataset[:2]))
        record = {"batch": {k: v.cpu() for k, v in batch.items()}, "logits": logits(model, batch).float().cpu()}
        if run.model_task == "causal_lm" and run.method.can_generate:
            record["generated"] = generate(model, run.tokenizer, [PROMPT], max_new_tokens=8, chat=False)
        self.records.append(record)
        return {}


class QuantizedLoad(Quantizer):
    """A quantizer that claims to quantize; it must never be reached by a method that refuses it."""

    name = "conformance-quantized"

    def load_kwargs(self, options, keep_modules, run):
        raise AssertionError("the run loaded a model although the method does not accept a quantized base")


class ConformancePlugin:
    """The kit's in-process plugin: the probe and the quantizer stand-in above."""

    def __init__(self):
        self.probe = Probe()

    @hookimpl
    def tunery_register_evaluators(self, registry):
        registry.add(self.probe)

    @hookimpl
    def tunery_register_quantizers(self, registry):
        registry.add(QuantizedLoad())



@dataclasses.dataclass
class ConformanceRun:
    """One short training run of the method under test, and what the probe saw at its end."""

    engine: Engine
    task: str
    member: Method
    run_dir: Path
    metrics: dict
    probe: dict


def close(actual, expected, atol: float) -> None:
    import torch

    torch.testing.assert_close(actual, expected, atol=atol, rtol=atol)


class MethodConformance:
    """Base class of a method's conformance tests; set ``method`` (and ``options``) in a subclass."""

    #: The method's registered name.
    method: ClassVar[str] = ""
    #: Its config section (without ``name``).
    options: ClassVar[dict[str, Any]] = {}
    #: Plugin objects to register in-process (a method not installed as an entry point).
    plugins: ClassVar[tuple] = ()
    learning_rate: ClassVar[float] = 5e-3
    steps: ClassVar[int] = 4
    #: Tolerance of "identical" logits after reload and of merged against adapter outputs.
    reload_atol: ClassVar[float] = 1e-5
    merge_atol: ClassVar[float] = 1e-4

    # ------------------------------------------------------------------ helpers

    def engine(self, plugin: ConformancePlugin | None = None, cache_dir: str | None = None) -> Engine:
        return Engine(plugins=[*self.plugins, plugin or ConformancePlugin()], cache_dir=cache_dir)

    def member(self) -> Method:
        return self.engine().methods.get(self.method)

    def config(self, model: str, output_dir: str, data: str, task: str, **extra) -> dict:
        config = {
            "model": model, "output_dir": output_dir, "seed": 0,
            "method": {"name": self.method, **self.options},
            "format": "alpaca" if task == "causal_lm" else "classification",
            "data": {"train": [data], "eval": [data], "max_length": 48},
            "evaluators": ["loss", "conformance-probe"],
            "training": {"max_steps": self.steps, "batch_size": 4, "learning_rate": self.learning_rate,
                         "bf16": False, "warmup_ratio": 0.0, "lr_scheduler": "constant"},
        }
        for key, value in extra.items():
            config[key] = {**config[key], **value} if isinstance(value, dict) and key in config else value
        return config

    def refused(self, engine: Engine, config: dict) -> str:
        """The message of the IncompatibleError ``config`` raises before any model loads."""
        try:
            engine.train(config)
        except IncompatibleError as exc:
            return str(exc)
        except ModelSourceError:
            pytest.fail(f"method '{self.method}': the combination was not refused before loading the model")
        pytest.fail(f"method '{self.method}': the combination was not refused")

    # ------------------------------------------------------------------ fixtures

    @pytest.fixture(scope="class", params=["causal_lm", "classification"])
    def conformance_run(self, request, tunery_tiny_lm, tunery_data, tmp_path_factory) -> ConformanceRun:
        task = request.param
        if task not in self.member().tasks:
            pytest.skip(f"method '{self.method}' does not train {task}")
        plugin = ConformancePlugin()
        tmp = tmp_path_factory.mktemp(f"conformance-{self.method}-{task}")
        engine = self.engine(plugin, str(tmp / "cache"))
        config = self.config(tunery_tiny_lm, str(tmp / "run"), tunery_data[task], task)
        try:
            engine.check(config)
        except IncompatibleError as refusal:  # the method refuses this task here, before loading: that is allowed
            pytest.skip(f"method '{self.method}' refuses {task} in this environment: {refusal}")
        result = engine.train(config)
        return ConformanceRun(engine, task, engine.methods.get(self.method), result.output_dir, result.metrics,
                              plugin.probe.records[-1])

    # ------------------------------------------------------------------ training

    def test_loss_goes_down(self, conformance_run):
        before, after = conformance_run.metrics["before"]["loss/loss"], conformance_run.metrics["after"]["loss/loss"]
        assert after < before, f"eval loss did not go down in {self.steps} steps: {before} -> {after}"

    def test_reports_trainable_parameters(self, conformance_run):
        counts = conformance_run.metrics["parameters"]
        assert 0 < counts["trainable"] <= counts["total"]
        if conformance_run.member.output_kind == "adapter":
            assert counts["trainable"] < counts["total"], "an adapter method trains every weight"

    def test_saves_its_output_kind(self, conformance_run):
        folder = conformance_run.run_dir / conformance_run.member.output_kind
        assert folder.is_dir() and any(folder.iterdir()), f"nothing saved in {folder}"

    # ------------------------------------------------------------------ reload

    def test_reload_gives_identical_logits(self, conformance_run):
        from ..evaluation import logits

        loaded = conformance_run.engine.load(str(conformance_run.run_dir))
        import torch

        with torch.no_grad():
            got = logits(loaded.model, conformance_run.probe["batch"]).float()
        close(got, conformance_run.probe["logits"], self.reload_atol)

    def test_greedy_generation_identical_after_reload(self, conformance_run):
        if "generated" not in conformance_run.probe:
            pytest.skip("generation applies to causal LMs of methods that can generate")
        from ..generation import generate

        loaded = conformance_run.engine.load(str(conformance_run.run_dir))
        assert generate(loaded.model, loaded.tokenizer, [PROMPT], max_new_tokens=8, chat=False) == \
            conformance_run.probe["generated"]

    # ------------------------------------------------------------------ merge

    def test_merge_matches_adapter_or_is_refused(self, conformance_run, tmp_path):
        engine, member = conformance_run.engine, conformance_run.member
        out = tmp_path / "merged"
        if not member.can_merge:
            with pytest.raises(IncompatibleError) as refusal:
                engine.merge(str(conformance_run.run_dir), str(out))
            assert member.merge_refusal() == str(refusal.value)
            assert not out.exists(), "a refused merge wrote files"
            return
        import torch

        from ..evaluation import logits

        engine.merge(str(conformance_run.run_dir), str(out))
        merged = engine.load(str(out), task=conformance_run.task)  # AutoModel*.from_pretrained
        assert "peft" not in type(merged.model).__module__, "the merged model is still an adapter model"
        with torch.no_grad():
            got = logits(merged.model, conformance_run.probe["batch"]).float()
        close(got, conformance_run.probe["logits"], self.merge_atol)

    # ------------------------------------------------------------------ capabilities

    def test_refuses_what_its_capabilities_exclude(self, tmp_path, tunery_data):
        engine, member = self.engine(cache_dir=str(tmp_path / "cache")), self.member()
        task = "causal_lm" if "causal_lm" in member.tasks else "classification"
        base = self.config(NO_MODEL, str(tmp_path / "run"), tunery_data[task], task)
        cases = {}
        for other in {"causal_lm", "classification"} - set(member.tasks):
            cases[f"task {other}"] = self.config(NO_MODEL, str(tmp_path / "run"), tunery_data[other], other)
        if not member.accepts_quantized:
            cases["quantizer"] = {**base, "quantizer": "conformance-quantized"}
        if not member.supports_packing:
            cases["packing"] = {**base, "data": {**base["data"], "packing": True}}
        if not member.can_generate and task == "causal_lm":
            cases["generation"] = {**base, "generation": {"prompts": [PROMPT]}}
        for part, config in cases.items():
            message = self.refused(engine, config)
            assert f"'{self.method}'" in message, f"the refusal ({part}) does not name the method: {message}"
