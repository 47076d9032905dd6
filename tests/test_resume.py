"""Crash and resume: a run killed with SIGKILL (mid-epoch, or while a checkpoint is being written)
or stopped by SIGTERM, then resumed, ends with bitwise the same weights as an uninterrupted run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.crash_worker import Killer, crash
from tunery import Engine
from tunery.checkpoints import COMPLETE, MANIFEST, scan
from tunery.errors import ResumeError, TrainingError

RECORD = "tunery-run.json"
WEIGHTS = {"lora": "adapter/adapter_model.safetensors", "full": "model/model.safetensors"}


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    rows = [{"instruction": f"What is {i} plus {i}?", "input": "", "output": f"It is {2 * i}."} for i in range(24)]
    path = tmp_path_factory.mktemp("resume-data") / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make_config(lm: str, data: Path, out: Path, method: str, **extra) -> dict:
    """24 rows, batch 4: 6 steps per epoch, 2 epochs; a checkpoint every 2 steps, at most 2 kept."""
    training = {"epochs": 2, "batch_size": 4, "save_steps": 2, "save_total_limit": 2, "learning_rate": 1e-3,
                "bf16": False, **extra.pop("training", {})}
    return {"model": lm, "method": method, "format": "alpaca", "output_dir": str(out), "seed": 3,
            "evaluators": [], "data": {"train": [str(data)], "packing": False}, "training": training, **extra}


def weights(run_dir: Path, method: str) -> dict:
    from safetensors.torch import load_file

    return load_file(run_dir / WEIGHTS[method])


def assert_bitwise_equal(a: dict, b: dict) -> None:
    import torch

    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


@pytest.fixture(scope="module")
def reference(tiny_lm, data_file, tmp_path_factory):
    """Uninterrupted runs, one per method (made on first use)."""
    done: dict[str, Path] = {}

    def get(method: str) -> Path:
        if method not in done:
            out = tmp_path_factory.mktemp(f"ref-{method}")
            Engine(plugins=[Killer()]).train(make_config(tiny_lm, data_file, out, method, overwrite=True))
            done[method] = out
        return done[method]

    return get


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Every run of this module (crashed child, reference, resumed) computes with one thread."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("method,point,step,complete_after", [
    ("lora", "step", 9, [6, 8]),     # SIGKILL right after step 9: epoch 2, mid-epoch
    ("full", "save", 10, [6, 8]),    # SIGKILL while checkpoint-10 is written (weights on disk, optimizer not)
    ("full", "step", 5, [2, 4]),     # SIGKILL mid-epoch 1
    ("lora", "save", 4, [2]),        # SIGKILL during the second save: only checkpoint-2 is usable
])
def test_sigkill_then_resume_is_bitwise_exact(tiny_lm, data_file, tmp_path, reference, method, point, step,
                                              complete_after):
    config = make_config(tiny_lm, data_file, tmp_path / "run", method)
    code = crash(config, point, step, str(tmp_path / "stderr"))
    assert code == -9, (tmp_path / "stderr").read_text()[-2000:]
    complete, broken = scan(tmp_path / "run" / "checkpoints")
    assert [int(p.name.split("-")[1]) for p in complete] == complete_after
    if point == "save":  # the half-written checkpoint is left under its temporary name, never as checkpoint-N
        assert broken and not (tmp_path / "run" / "checkpoints" / f"checkpoint-{step}").exists()
    result = Engine(plugins=[Killer()]).train({**config, "resume": "auto"})
    assert result.metrics["train"]["steps"] == 12
    assert_bitwise_equal(weights(reference(method), method), weights(tmp_path / "run", method))
    complete, broken = scan(tmp_path / "run" / "checkpoints")
    assert [p.name for p in complete] == ["checkpoint-10", "checkpoint-12"] and not broken
    assert_counts_the_whole_run(reference(method), tmp_path / "run")


def assert_counts_the_whole_run(reference_dir: Path, resumed_dir: Path) -> None:
    """metrics.json and train_log.jsonl of a resumed run equal those of the uninterrupted one."""
    ref = json.loads((reference_dir / "metrics.json").read_text())["train"]
    got = json.loads((resumed_dir / "metrics.json").read_text())["train"]
    assert (got["tokens"], got["padded_tokens"], got["steps"]) == (ref["tokens"], ref["padded_tokens"], ref["steps"])
    assert got["mean_loss"] == pytest.approx(ref["mean_loss"], rel=1e-6)

    def records(folder):
        lines = [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]
        return [(r["step"], r["loss"], r["tokens"]) for r in lines if "loss" in r]

    assert records(resumed_dir) == records(reference_dir)  # each step once, tokens counted over both parts


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tiny_lm, data_file, tmp_path, reference):
    config = make_config(tiny_lm, data_file, tmp_path / "run", "lora")
    code = crash(config, "term", 4, str(tmp_path / "stderr"))  # signal after step 4: step 5 ends the run
    stderr = (tmp_path / "stderr").read_text()
    assert code == 130, stderr[-2000:]
    assert "stopped by SIGTERM at step 5" in stderr and "--resume" in stderr and "Traceback" not in stderr
    complete, _ = scan(tmp_path / "run" / "checkpoints")
    assert complete[-1].name == "checkpoint-5"  # off the save_steps grid: saved because of the signal
    Engine(plugins=[Killer()]).train({**config, "resume": "auto"})
    assert_bitwise_equal(weights(reference("lora"), "lora"), weights(tmp_path / "run", "lora"))
    assert_counts_the_whole_run(reference("lora"), tmp_path / "run")


@pytest.fixture(scope="module")
def short_run(tiny_lm, data_file, tmp_path_factory):
    """A finished 4-step lora run with checkpoints 2 and 4, its config and its data."""
    root = tmp_path_factory.mktemp("short")
    data = root / "train.jsonl"
    data.write_bytes(data_file.read_bytes())
    config = make_config(tiny_lm, data, root / "run", "lora", training={"max_steps": 4})
    Engine(plugins=[Killer()]).train(config)
    return config


def test_checkpoint_records_manifest(short_run):
    ckpt = Path(short_run["output_dir"]) / "checkpoints" / "checkpoint-4"
    manifest = json.loads((ckpt / MANIFEST).read_text())
    assert manifest["step"] == 4 and len(manifest["config_sha256"]) == 64
    assert manifest["plugins_used"]["lora"] and "Killer" in manifest["plugins_used"]
    assert manifest["data"]["train"][0]["sha256"]
    marker = json.loads((ckpt / COMPLETE).read_text())
    assert marker["files"]["adapter_model.safetensors"] > 0
    assert not list(ckpt.glob("*.bin")) or [p.name for p in ckpt.glob("*.bin")] == ["training_args.bin"]


@pytest.mark.parametrize("change,named", [
    ({"training": {"learning_rate": 0.5, "max_steps": 4}}, "config key 'training.learning_rate' was 0.001, now 0.5"),
    ({"seed": 4}, "config key 'seed' was 3, now 4"),
])
def test_resume_refuses_a_changed_config(short_run, change, named):
    config = {**short_run, **change, "resume": "auto"}
    config["training"] = {**short_run["training"], **change.get("training", {})}
    with pytest.raises(ResumeError) as info:
        Engine(plugins=[Killer()]).train(config)
    assert named in str(info.value) and "--force-resume" in str(info.value)


def test_cli_resume_flag_refuses_a_changed_setup_in_one_line(short_run, run_cli):
    result = run_cli("train", "--model", short_run["model"], "--method", "lora", "--format", "alpaca",
                     "--data", short_run["data"]["train"][0], "--output-dir", short_run["output_dir"],
                     "--seed", "3", "--resume", "--set", "training.learning_rate=0.5")
    assert result.exit_code == 7 and "Traceback" not in result.output
    assert "cannot resume from" in result.output and "'training.learning_rate' was 0.001, now 0.5" in result.output


def test_resume_refuses_changed_data_and_plugins(short_run, tmp_path):
    data = Path(short_run["data"]["train"][0])
    original = data.read_bytes()
    try:
        data.write_bytes(original + b'{"instruction": "x", "input": "", "output": "y"}\n')
        with pytest.raises(ResumeError, match=r"train data file '.*train.jsonl' changed"):
            Engine(plugins=[Killer()]).train({**short_run, "resume": "auto"})
    finally:
        data.write_bytes(original)
    with pytest.raises(ResumeError, match="plugin 'Killer' is no longer loaded"):
        Engine().train({**short_run, "resume": "auto"})


def test_resume_force_overrides_a_change(short_run, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(short_run["output_dir"], run)
    config = {**short_run, "output_dir": str(run), "seed": 4, "resume": "auto", "resume_force": True,
              "training": {**short_run["training"], "max_steps": 6}}
    result = Engine(plugins=[Killer()]).train(config)
    assert result.metrics["train"]["steps"] == 6


def test_incomplete_or_missing_checkpoint_is_never_resumed(short_run, tmp_path, run_cli, caplog):
    import logging
    import shutil


    run = tmp_path / "copy"
    shutil.copytree(short_run["output_dir"], run)
    (run / "checkpoints" / "checkpoint-4" / COMPLETE).unlink()  # as if killed before the marker
    with pytest.raises(ResumeError, match="not a complete tunery checkpoint.*newest complete one is .*checkpoint-2"), \
            caplog.at_level(logging.WARNING, logger="tunery"):
        Engine(plugins=[Killer()]).train({**short_run, "output_dir": str(run),
                                          "resume": str(run / "checkpoints" / "checkpoint-4")})
    assert "ignoring incomplete checkpoint" in caplog.text and "checkpoint-4" in caplog.text
    truncated = run / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors"
    truncated.write_bytes(truncated.read_bytes()[:100])  # marker present, file cut short
    assert scan(run / "checkpoints") == ([], [run / "checkpoints" / "checkpoint-2", run / "checkpoints" / "checkpoint-4"])
    result = run_cli("train", "--model", short_run["model"], "--method", "lora", "--format", "alpaca",
                     "--data", short_run["data"]["train"][0], "--output-dir", run, "--resume", run / "nowhere")
    assert result.exit_code == 7 and "does not exist" in result.output and "Traceback" not in result.output


def test_no_pickle_is_executed_from_a_checkpoint(short_run, tmp_path):
    import hashlib
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(short_run["output_dir"], run)
    ckpt = run / "checkpoints" / "checkpoint-2"
    witness = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {witness}",))

    import torch

    torch.save({"python": Payload()}, ckpt / "rng_state.pth")  # even a re-marked checkpoint is not trusted
    marker = json.loads((ckpt / COMPLETE).read_text())
    marker["files"]["rng_state.pth"] = (ckpt / "rng_state.pth").stat().st_size
    marker["sha256"]["rng_state.pth"] = hashlib.sha256((ckpt / "rng_state.pth").read_bytes()).hexdigest()
    (ckpt / COMPLETE).write_text(json.dumps(marker))
    (run / "checkpoints" / "checkpoint-4" / COMPLETE).unlink()
    with pytest.raises(TrainingError, match="refused to load it"):
        Engine(plugins=[Killer()]).train({**short_run, "output_dir": str(run), "resume": "auto"})
    assert not witness.exists()


def copy_run(short_run, tmp_path) -> tuple[dict, Path]:
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(short_run["output_dir"], run)
    return {**short_run, "output_dir": str(run), "resume": "auto"}, run


def test_a_tampered_checkpoint_is_refused_naming_the_file(short_run, tmp_path):
    config, run = copy_run(short_run, tmp_path)
    weights_file = run / "checkpoints" / "checkpoint-4" / "adapter_model.safetensors"
    data = bytearray(weights_file.read_bytes())
    data[-1500:-500] = bytes(b ^ 0xFF for b in data[-1500:-500])  # 1000 bytes flipped, same size
    weights_file.write_bytes(bytes(data))
    with pytest.raises(ResumeError) as info:
        Engine(plugins=[Killer()]).train(config)
    message = str(info.value)
    assert f"cannot resume from {run / 'checkpoints' / 'checkpoint-4'}: adapter_model.safetensors is not the file " \
           "saved there" in message
    assert f"the previous good checkpoint is {run / 'checkpoints' / 'checkpoint-2'}" in message and "--resume" in message


def test_a_garbled_trainer_state_names_the_file_and_the_previous_checkpoint(short_run, tmp_path):
    import hashlib

    config, run = copy_run(short_run, tmp_path)
    ckpt = run / "checkpoints" / "checkpoint-4"
    state = ckpt / "trainer_state.json"
    state.write_bytes(b"#" * state.stat().st_size)
    marker = json.loads((ckpt / COMPLETE).read_text())
    marker["sha256"]["trainer_state.json"] = hashlib.sha256(state.read_bytes()).hexdigest()  # re-marked: only JSON fails
    (ckpt / COMPLETE).write_text(json.dumps(marker))
    with pytest.raises(ResumeError) as info:
        Engine(plugins=[Killer()]).train(config)
    assert "trainer_state.json is not valid JSON" in str(info.value)
    assert f"the previous good checkpoint is {run / 'checkpoints' / 'checkpoint-2'}" in str(info.value)


@pytest.fixture(scope="module")
def own_model_run(tiny_lm, data_file, tmp_path_factory):
    """A finished 4-step lora run (checkpoints 2 and 4) on a copy of the tiny model."""
    import shutil

    root = tmp_path_factory.mktemp("own-model")
    shutil.copytree(tiny_lm, root / "model")
    config = make_config(str(root / "model"), data_file, root / "run", "lora", training={"max_steps": 4})
    Engine(plugins=[Killer()]).train(config)
    return config


@pytest.mark.parametrize("name", ["chat_template.jinja", "model.safetensors"])
def test_resume_refuses_a_changed_base_model(own_model_run, tmp_path, name):
    config, run = copy_run(own_model_run, tmp_path)
    changed = Path(own_model_run["model"]) / name
    original = changed.read_bytes()
    try:
        if name.endswith(".jinja"):
            changed.write_bytes(original + b"{# edited #}")
        else:  # weights: 100 bytes changed, same size
            data = bytearray(original)
            data[-200:-100] = bytes(b ^ 0x01 for b in data[-200:-100])
            changed.write_bytes(bytes(data))
        with pytest.raises(ResumeError, match=f"base model file '{name}' changed .*--force-resume"):
            Engine(plugins=[Killer()]).train(config)
        if name == "chat_template.jinja":
            forced = Engine(plugins=[Killer()]).train({**config, "resume_force": True,
                                                       "training": {**config["training"], "max_steps": 6}})
            assert forced.metrics["train"]["steps"] == 6
    finally:
        changed.write_bytes(original)


def test_resume_ignores_a_plugin_the_run_does_not_use(short_run, tmp_path):
    from tunery import Quantizer, hookimpl

    class Unrelated:
        @hookimpl
        def tunery_register_quantizers(self, registry):
            class Other(Quantizer):
                name = "other-4bit"

            registry.add(Other())

    config, run = copy_run(short_run, tmp_path)
    (run / "checkpoints" / "checkpoint-4" / COMPLETE).unlink()  # resume from checkpoint-2
    result = Engine(plugins=[Killer(), Unrelated()]).train(config)
    assert result.metrics["train"]["steps"] == 4 and result.metrics["train"]["resumed_at_step"] == 2


def test_a_second_sigterm_while_stopping_ends_with_130_and_the_run_resumes(tiny_lm, data_file, tmp_path, reference):
    config = make_config(tiny_lm, data_file, tmp_path / "run", "lora")
    code = crash(config, "term2", 4, str(tmp_path / "stderr"))  # the second signal lands inside the save of step 5
    stderr = (tmp_path / "stderr").read_text()
    assert code == 130, stderr[-2000:]
    checkpoint = tmp_path / "run" / "checkpoints" / "checkpoint-4"
    assert f"error: stopped at once by a second SIGTERM while stopping; the last good checkpoint is {checkpoint}" \
           in stderr and "--resume" in stderr and "Aborted" not in stderr
    assert json.loads((tmp_path / "run" / RECORD).read_text())["status"] == "interrupted"
    assert scan(tmp_path / "run" / "checkpoints") == ([checkpoint.parent / "checkpoint-2", checkpoint], [])
    Engine(plugins=[Killer()]).train({**config, "resume": "auto"})
    assert_bitwise_equal(weights(reference("lora"), "lora"), weights(tmp_path / "run", "lora"))


def test_sigterm_before_training_ends_with_130_and_does_not_block_the_rerun(tiny_lm, data_file, tmp_path):
    config = make_config(tiny_lm, data_file, tmp_path / "run", "lora", training={"max_steps": 2})
    code = crash(config, "start", 0, str(tmp_path / "stderr"))
    stderr = (tmp_path / "stderr").read_text()
    assert code == 130, stderr[-2000:]
    assert "error: stopped at once by SIGTERM; nothing was saved to resume from; run the same command again" in stderr
    assert json.loads((tmp_path / "run" / RECORD).read_text())["status"] == "interrupted"
    assert Engine(plugins=[Killer()]).train(config).metrics["train"]["steps"] == 2
