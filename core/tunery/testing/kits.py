"""Conformance kits for objectives, extensions, evaluators, quantizers and formatters: what
every member of a family must do, shipped so third-party plugins run the same checks.

Subclass a kit in a test module, set the class attributes, and pytest runs its tests on the
tiny offline models of :mod:`tunery.testing.plugin` through the real run flow::

    from tunery.testing import ExtensionConformance

    class TestShrink(ExtensionConformance):
        extension = "shrink"
        options = {"weight": 0.1}
        plugins = (my_plugin_module,)   # only when the plugin is not installed as an entry point

Each kit's docstring lists what it checks.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, ClassVar

import pytest

from ..engine import Engine
from ..errors import IncompatibleError, ModelSourceError

NO_MODEL = "/nonexistent/tunery-conformance-model"  # resolving it fails: a check must refuse first

ALPACA = [{"instruction": f"What is {i} plus {i}?", "input": "", "output": f"It is {2 * i}."} for i in range(16)]
LABELLED = [{"text": ("good great fine lovely" if i % 2 else "bad awful poor sad") + f" {i}",
             "label": "pos" if i % 2 else "neg"} for i in range(16)]
PAIRS = [{"prompt": f"What is {i} plus {i}?", "chosen": f"It is {2 * i}.", "rejected": f"Maybe {i + 7}, or not."}
         for i in range(16)]
#: Rows and formatter of each built-in data task, the kits' defaults.
TASK_DATA = {"causal_lm": ("alpaca", ALPACA), "classification": ("classification", LABELLED),
             "preference": ("preference", PAIRS)}


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


class _Kit:
    """What the kits share: an engine with the plugins under test, and short runs."""

    #: Plugin objects to register in-process (members not installed as entry points).
    plugins: ClassVar[tuple] = ()
    #: Options of the member under test (its config section without ``name``).
    options: ClassVar[dict[str, Any]] = {}
    steps: ClassVar[int] = 6
    learning_rate: ClassVar[float] = 5e-3

    def engine(self, cache_dir: str | None = None) -> Engine:
        return Engine(plugins=list(self.plugins), cache_dir=cache_dir)

    def model_for(self, task: str, lm: str, encoder: str) -> str:
        return encoder if task == "classification" else lm

    def run_config(self, model: str, out: Path, data: str, fmt: str, **parts) -> dict:
        config = {"model": model, "output_dir": str(out), "seed": 0, "format": fmt, "method": "lora",
                  "data": {"train": [data], "eval": [data], "max_length": 48, "packing": False},
                  "evaluators": [],
                  "training": {"max_steps": self.steps, "batch_size": 4, "learning_rate": self.learning_rate,
                               "bf16": False, "lr_scheduler": "constant", "logging_steps": 1}}
        config.update(parts)
        return config

    def refused(self, engine: Engine, config: dict) -> str:
        try:
            engine.train(config)
        except IncompatibleError as exc:
            return str(exc)
        except ModelSourceError:
            pytest.fail("the combination was not refused before loading the model")
        pytest.fail("the combination was not refused")


def _losses(run_dir: Path) -> list[float]:
    records = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if "loss" in r]


class ObjectiveConformance(_Kit):
    """An objective: with each method of :attr:`methods` it trains, its loss is finite and goes
    down, the result is saved and reloads; a data task it does not optimise is refused before
    any model loads. Set :attr:`objective`; :attr:`format` and :attr:`rows` give its training
    data (default: the built-in data of its first task)."""

    objective: ClassVar[str] = ""
    format: ClassVar[str | None] = None
    rows: ClassVar[list[dict] | None] = None
    methods: ClassVar[tuple[str, ...]] = ("lora", "full")

    def member(self):
        return self.engine().objectives.get(self.objective)

    def data(self, folder: Path) -> tuple[str, str, str]:
        """``(formatter, data file, data task)`` of the training data."""
        task = sorted(self.member().tasks)[0]
        fmt, rows = TASK_DATA.get(task, (None, None))
        fmt, rows = self.format or fmt, self.rows or rows
        if fmt is None:
            pytest.fail(f"objective '{self.objective}' optimises {task} data: set `format` and `rows` in the kit")
        return fmt, write_jsonl(folder / "train.jsonl", rows), task

    @pytest.fixture(scope="class", params=["lora", "full"])
    def objective_run(self, request, tunery_tiny_lm, tunery_tiny_encoder, tmp_path_factory):
        if request.param not in self.methods:
            pytest.skip(f"not in {type(self).__name__}.methods")
        tmp = tmp_path_factory.mktemp(f"objective-{self.objective}-{request.param}")
        engine = self.engine(str(tmp / "cache"))
        fmt, data, task = self.data(tmp)
        model_task = self.member().model_task(task)[0]
        config = self.run_config(self.model_for(model_task, tunery_tiny_lm, tunery_tiny_encoder), tmp / "run",
                                 data, fmt, method=request.param,
                                 objective={"name": self.objective, **self.options})
        return engine, engine.train(config)

    def test_loss_is_finite_and_goes_down(self, objective_run):
        losses = _losses(objective_run[1].output_dir)
        assert losses and all(math.isfinite(x) for x in losses), f"non-finite training loss: {losses}"
        half = max(1, len(losses) // 2)
        assert sum(losses[-half:]) / half < sum(losses[:half]) / half, f"the loss did not go down: {losses}"

    def test_result_reloads(self, objective_run):
        engine, result = objective_run
        loaded = engine.load(str(result.output_dir))
        assert loaded.model is not None and not loaded.model.training

    def test_refuses_a_data_task_it_does_not_optimise(self, tmp_path):
        member = self.member()
        others = [t for t in TASK_DATA if t not in member.tasks]
        if not others:
            pytest.skip("it optimises every built-in data task")
        fmt, rows = TASK_DATA[others[0]]
        config = self.run_config(NO_MODEL, tmp_path / "run", write_jsonl(tmp_path / "d.jsonl", rows), fmt,
                                 objective={"name": self.objective, **self.options})
        assert f"'{self.objective}'" in self.refused(self.engine(str(tmp_path / "cache")), config)


class ExtensionConformance(_Kit):
    """An extension: an SFT run with it trains to a finite loss and reloads; evaluation data
    is the same with and without it (unless :attr:`changes_eval`); a data task outside its
    ``tasks`` is refused before any model loads. Set :attr:`extension`."""

    extension: ClassVar[str] = ""
    #: Whether the extension deliberately changes evaluation examples.
    changes_eval: ClassVar[bool] = False
    method: ClassVar[str] = "lora"

    def member(self):
        return self.engine().extensions.get(self.extension)

    @pytest.fixture(scope="class")
    def extension_run(self, tunery_tiny_lm, tmp_path_factory):
        tmp = tmp_path_factory.mktemp(f"extension-{self.extension}")
        engine = self.engine(str(tmp / "cache"))
        config = self.run_config(tunery_tiny_lm, tmp / "run", write_jsonl(tmp / "train.jsonl", ALPACA), "alpaca",
                                 method=self.method, extensions=[{"name": self.extension, **self.options}],
                                 evaluators=["loss"])
        return engine, engine.train(config)

    def test_trains_to_a_finite_loss_and_reloads(self, extension_run):
        engine, result = extension_run
        losses = _losses(result.output_dir)
        assert losses and all(math.isfinite(x) for x in losses), f"non-finite training loss: {losses}"
        assert math.isfinite(result.metrics["after"]["loss/loss"])
        assert engine.load(str(result.output_dir)).model is not None

    def test_leaves_evaluation_data_alone(self, extension_run):
        if self.changes_eval:
            pytest.skip("the extension changes evaluation data by design")
        data = extension_run[1].metrics["data"]
        assert data["eval"]["examples"] == data["eval"]["rows"] == len(ALPACA), data["eval"]

    def test_refuses_a_data_task_it_does_not_apply_to(self, tmp_path):
        others = [t for t in TASK_DATA if t not in self.member().tasks]
        if not others:
            pytest.skip("it applies to every built-in data task")
        fmt, rows = TASK_DATA[others[0]]
        objective = "dpo" if others[0] == "preference" else None
        config = self.run_config(NO_MODEL, tmp_path / "run", write_jsonl(tmp_path / "d.jsonl", rows), fmt,
                                 extensions=[{"name": self.extension, **self.options}],
                                 **({"objective": objective} if objective else {}))
        assert f"'{self.extension}'" in self.refused(self.engine(str(tmp_path / "cache")), config)


class EvaluatorConformance(_Kit):
    """An evaluator: in a run its metrics are plain finite numbers, named ``evaluator/metric``
    in metrics.json before and after training; ``tunery eval`` of the finished run gives the
    same numbers twice, equal to the run's after-metrics. Set :attr:`evaluator`;
    :attr:`format` and :attr:`rows` give the data (default: the built-in data of its first task)."""

    evaluator: ClassVar[str] = ""
    format: ClassVar[str | None] = None
    rows: ClassVar[list[dict] | None] = None

    @pytest.fixture(scope="class")
    def evaluator_run(self, tunery_tiny_lm, tunery_tiny_encoder, tmp_path_factory):
        tmp = tmp_path_factory.mktemp(f"evaluator-{self.evaluator}")
        engine = self.engine(str(tmp / "cache"))
        member = engine.evaluators.get(self.evaluator)
        task = next(t for t in TASK_DATA if t in member.tasks)
        fmt, rows = TASK_DATA[task]
        fmt, rows = self.format or fmt, self.rows or rows
        parts = {"objective": "dpo"} if task == "preference" else {}
        config = self.run_config(self.model_for(task, tunery_tiny_lm, tunery_tiny_encoder), tmp / "run",
                                 write_jsonl(tmp / "data.jsonl", rows), fmt,
                                 evaluators=[{"name": self.evaluator, **self.options}], **parts)
        config["training"]["max_steps"] = 2
        return engine, engine.train(config)

    def test_metrics_are_named_numbers_before_and_after(self, evaluator_run):
        metrics = evaluator_run[1].metrics
        for phase in ("before", "after"):
            mine = {k: v for k, v in metrics[phase].items() if k.startswith(f"{self.evaluator}/")}
            assert mine, f"no {self.evaluator}/... metric {phase} training: {metrics[phase]}"
            for key, value in mine.items():
                assert isinstance(value, (int, float)) and math.isfinite(value), f"{key} = {value!r}"

    def test_eval_of_the_run_reproduces_its_after_metrics(self, evaluator_run):
        engine, result = evaluator_run
        first = engine.evaluate(str(result.output_dir), [self.evaluator])[self.evaluator].metrics
        second = engine.evaluate(str(result.output_dir), [self.evaluator])[self.evaluator].metrics
        assert first == second, "the same model and data gave different numbers"
        after = {k.split("/", 1)[1]: v for k, v in result.metrics["after"].items() if k.startswith(f"{self.evaluator}/")}
        for key, value in after.items():
            assert first[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key


class QuantizerConformance(_Kit):
    """A quantizer: LoRA on a base loaded through it trains (the loss goes down, also when
    evaluating in between), and reloading the run quantizes again to identical logits. Set
    :attr:`quantizer`."""

    quantizer: ClassVar[str] = ""
    learning_rate: ClassVar[float] = 1e-2
    reload_atol: ClassVar[float] = 1e-5

    @pytest.fixture(scope="class")
    def quantized_run(self, tunery_tiny_lm, tmp_path_factory):
        tmp = tmp_path_factory.mktemp(f"quantizer-{self.quantizer}")
        engine = self.engine(str(tmp / "cache"))
        config = self.run_config(tunery_tiny_lm, tmp / "run", write_jsonl(tmp / "train.jsonl", ALPACA), "alpaca",
                                 quantizer={"name": self.quantizer, **self.options}, evaluators=["loss"])
        config["training"]["eval_steps"] = 2
        return engine, engine.train(config)

    def test_lora_on_it_learns_through_evaluations(self, quantized_run):
        metrics = quantized_run[1].metrics
        assert metrics["after"]["loss/loss"] < metrics["before"]["loss/loss"], metrics

    def test_reload_gives_identical_logits(self, quantized_run):
        import torch

        from ..evaluation import logits

        engine, result = quantized_run
        first, second = engine.load(str(result.output_dir)), engine.load(str(result.output_dir))
        batch = first.tokenizer(["What is 2 plus 2?"], return_tensors="pt")
        with torch.no_grad():
            a, b = logits(first.model, dict(batch)).float(), logits(second.model, dict(batch)).float()
        torch.testing.assert_close(a, b, atol=self.reload_atol, rtol=self.reload_atol)


class FormatterConformance:
    """A formatter: :func:`tunery.testing.formatters.check_formatter` in every file layout of
    :attr:`layouts` (good rows format to well-formed examples, bad rows are reported by number
    with their reasons, ``trained`` is exactly the text that carries loss). Set :attr:`format`,
    :attr:`good`, :attr:`bad` (``(row, reason)`` pairs) and optionally :attr:`trained`."""

    format: ClassVar[str] = ""
    options: ClassVar[dict[str, Any]] = {}
    good: ClassVar[list[dict]] = []
    bad: ClassVar[list[tuple[Any, str]]] = []
    trained: ClassVar[list[str] | None] = None
    layouts: ClassVar[tuple[str, ...]] = ("jsonl", "json", "csv")
    plugins: ClassVar[tuple] = ()

    @pytest.mark.parametrize("layout", ["jsonl", "json", "csv", "parquet"])
    def test_formats_good_rows_and_reports_bad_ones(self, layout, tunery_tokenizer, tmp_path):
        from .formatters import check_formatter

        if layout not in self.layouts:
            pytest.skip(f"not in {type(self).__name__}.layouts")
        bad = [(row, reason) for row, reason in self.bad if layout == "jsonl" or not isinstance(row, str)]
        engine = Engine(plugins=list(self.plugins), cache_dir=str(tmp_path / "cache"))
        check_formatter(engine, self.format, tunery_tokenizer, tmp_path, good=self.good, bad=bad,
                        options=self.options, trained=self.trained, layout=layout)
