"""The `tunery ui` plugin without a browser: the New-run form built from plugin options, its
errors, the run states read from run folders, and the cheap `tunery --help`."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time

import pytest

from tunery import Engine, Method, hookimpl
from tunery_ui import runs as runstate
from tunery_ui.form import Form, check, cli_command, config_yaml


@dataclasses.dataclass
class ScaleOptions:
    factor: float = 1.0
    layers: int = 2

    def validate(self, where):
        if self.factor <= 0:
            from tunery import ConfigError

            raise ConfigError(f"config key '{where}.factor' must be positive, got {self.factor}")


class Scale(Method):
    name = "scale"
    Options = ScaleOptions


class ThirdParty:
    @hookimpl
    def tunery_register_methods(self, registry):
        registry.add(Scale())


def values_for(form: Form, **by_key) -> dict:
    """Form values (by field id) with the given config keys set and the method chosen."""
    values = {f.id: (f.default if f.kind == "members" else f.initial()) for f in form.fields}
    for section in ("method", "evaluators"):
        if section in by_key:
            values[form.selector(section).id] = by_key.pop(section)
    chosen = form.chosen(values)
    for key, value in by_key.items():
        key = key.replace("__", ".")
        field = next(f for f in form.fields if f.key == key and form.is_active(f, chosen))
        values[field.id] = value
    return values


def test_a_third_party_method_appears_with_its_options_and_errors(alpaca_file, tiny_lm, tmp_path, run_cli):
    engine = Engine(plugins=[ThirdParty()])
    form = Form.build(engine)
    fields = {f.key: f for f in form.fields if f.member == "scale"}
    assert set(fields) == {"method.factor", "method.layers"}
    assert fields["method.factor"].initial() == "1.0" and "a number" in fields["method.factor"].info()

    base = dict(model=tiny_lm, output_dir=str(tmp_path / "run"), data__train=str(alpaca_file), method="scale")
    values = values_for(form, **base, method__factor="-2")
    overrides = form.overrides(values)
    with pytest.raises(Exception) as caught:
        check(engine, overrides)
    assert str(caught.value) == "config key 'method.factor' must be positive, got -2.0"
    assert form.field_for_error(str(caught.value), values) is fields["method.factor"]

    # a plain type error is the very message the CLI prints for the same --set
    values = values_for(form, **base, method__layers="two")
    with pytest.raises(Exception) as caught:
        check(engine, form.overrides(values))
    assert form.field_for_error(str(caught.value), values) is fields["method.layers"]
    cli = run_cli("train", "--model", tiny_lm, "--method", "lora", "--format", "alpaca", "--data", alpaca_file,
                  "--output-dir", tmp_path / "cli", "--set", "method.r=two")
    assert cli.exit_code == 2 and "error: config key 'method.r' must be an integer, got 'two'" in cli.output
    assert str(caught.value) == "config key 'method.layers' must be an integer, got 'two'"


def test_untouched_fields_give_the_same_config_as_the_quick_cli_form(alpaca_file, tiny_lm, tmp_path):
    engine = Engine()
    form = Form.build(engine)
    values = values_for(form, model=tiny_lm, output_dir=str(tmp_path / "run"), data__train=str(alpaca_file),
                        training__max_steps="7", method__r="4")
    overrides = form.overrides(values)
    assert overrides == ['model="%s"' % tiny_lm, f'output_dir="{tmp_path / "run"}"', 'method="lora"', "method.r=4",
                         'format="alpaca"', f"data.train={alpaca_file}", "training.max_steps=7"]
    config = check(engine, overrides)
    quick = engine.check({"model": tiny_lm, "output_dir": str(tmp_path / "run"), "method": {"name": "lora", "r": 4},
                           "format": "alpaca", "data": {"train": [str(alpaca_file)]}, "training": {"max_steps": 7}})
    assert config.to_dict() == quick.to_dict()
    assert engine.check(json.loads(json.dumps(__import__("yaml").safe_load(config_yaml(overrides))))).to_dict() == \
        quick.to_dict()
    command = cli_command(overrides)
    assert command.startswith(f"tunery train --model {tiny_lm} --output-dir {tmp_path / 'run'} --method lora --set method.r=4")


def test_errors_land_next_to_their_field(alpaca_file, tiny_lm, tmp_path):
    engine = Engine()
    form = Form.build(engine)
    base = dict(model=tiny_lm, output_dir=str(tmp_path / "run"), data__train=str(alpaca_file))

    def error_field(**changes):
        values = values_for(form, **{**base, **changes})
        with pytest.raises(Exception) as caught:
            check(engine, form.overrides(values))
        field = form.field_for_error(str(caught.value), values, getattr(caught.value, "config_key", None))
        return field.key if field else None, str(caught.value)

    assert error_field(training__learning_rate="-1")[0] == "training.learning_rate"
    key, message = error_field(data__train=str(tmp_path / "missing.jsonl"))
    assert key == "data.train" and message.startswith(f"data file '{tmp_path / 'missing.jsonl'}' does not exist")
    key, _ = error_field(evaluators=["loss", "generation"], **{"evaluators[generation].max_new_tokens": "lots"})
    assert key == "evaluators[generation].max_new_tokens"
    key, message = error_field(method="prefix", data__packing="true")
    assert key is None and "packing" in message  # an incompatibility names no key: shown above the form


def test_run_states_are_read_from_the_run_folder(tmp_path):
    finished = tmp_path / "finished"
    finished.mkdir()
    (finished / "config.yaml").write_text("model: m\n")
    (finished / "metrics.json").write_text(json.dumps({"train": {"steps": 12}}))
    assert runstate.state(finished).status == "finished" and runstate.state(finished).step == 12

    failed = tmp_path / "failed"
    failed.mkdir()
    (failed / runstate.PID_FILE).write_text(json.dumps({"pid": 1, "returncode": 5}))
    (failed / runstate.LOG_FILE).write_text("\n$ tunery train x\nerror: data file 'x.jsonl' line 3: missing column 'output'\n")
    st = runstate.state(failed)
    assert (st.status, st.error) == ("failed", "data file 'x.jsonl' line 3: missing column 'output'")

    stopped = tmp_path / "stopped"
    (stopped / "checkpoints" / "checkpoint-5").mkdir(parents=True)
    (stopped / "checkpoints" / "checkpoint-5" / "tunery-complete.json").write_text(json.dumps({"files": {}}))
    (stopped / runstate.PID_FILE).write_text(json.dumps({"pid": 1, "returncode": 130}))
    (stopped / runstate.LOG_FILE).write_text("error: training stopped by SIGTERM at step 6; ...\n")
    st = runstate.state(stopped)
    assert st.status == "stopped" and st.resume_point.endswith("checkpoint-5")
    assert "resume point" in st.summary()

    # a stopped run that was resumed and finished: only its last launch's output counts
    (stopped / "metrics.json").write_text(json.dumps({"train": {"steps": 9}}))
    with open(stopped / runstate.LOG_FILE, "a") as f:
        f.write("\n$ tunery train config.yaml --resume\ntrained 9 steps\n")
    (stopped / runstate.PID_FILE).write_text(json.dumps({"pid": 1, "returncode": 0}))
    assert runstate.state(stopped).status == "finished"

    # a run started with the CLI: tunery's own record of it
    cli_failed = tmp_path / "elsewhere" / "cli-failed"  # not directly in tmp_path: the listing below stays
    cli_failed.mkdir(parents=True)
    (cli_failed / runstate.RECORD).write_text(json.dumps({"status": "failed", "error": "DataError: no usable row"}))
    assert (runstate.state(cli_failed).status, runstate.state(cli_failed).error) == ("failed", "no usable row")

    running = tmp_path / "running"
    running.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "tunery"])
    try:
        (running / runstate.PID_FILE).write_text(json.dumps({"pid": proc.pid, "started": time.time()}))
        assert runstate.state(running).status == "running"
    finally:
        proc.kill()
        proc.wait()
    assert runstate.state(running).status == "failed"  # gone without an exit code nor a result
    assert [p.name for p in runstate.list_runs(tmp_path)] == ["running", "stopped", "failed", "finished"]


def test_help_stays_cheap_and_ui_is_a_listed_plugin(tmp_path):
    code = ("import sys; from tunery.cli import cli\n"
            "try:\n    cli(['--help'])\nexcept SystemExit:\n    pass\n"
            "print([m for m in ('gradio', 'pandas', 'torch', 'transformers') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stderr
    assert "  ui " in out.stdout  # the plugin's command is listed

    listed = subprocess.run([sys.executable, "-m", "tunery.cli", "plugins", "--json"], capture_output=True, text=True)
    ui = next(p for p in json.loads(listed.stdout) if p["name"] == "ui")
    assert ui["status"] == "ok" and ui["distribution"] == "tunery"

    # without Gradio installed: --help is unchanged and `tunery ui` says how to install it
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text("import sys\nclass Block:\n    def find_spec(self, name, path=None, target=None):\n"
                       "        if name.split('.')[0] == 'gradio':\n            raise ModuleNotFoundError(name)\n"
                       "sys.meta_path.insert(0, Block())\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    help_out = subprocess.run([sys.executable, "-m", "tunery.cli", "--help"], capture_output=True, text=True, env=env)
    assert help_out.returncode == 0 and "  ui " in help_out.stdout
    ui_out = subprocess.run([sys.executable, "-m", "tunery.cli", "ui"], capture_output=True, text=True, env=env)
    assert ui_out.returncode == 3
    assert ui_out.stderr.strip() == "error: tunery ui needs Gradio, which is not installed: pip install 'tunery[ui]'"
