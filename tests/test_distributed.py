"""`tunery train` under torchrun: two CPU processes (gloo) train what one process trains with the
same global batch, and the run folder is written once."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import yaml


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(tmp_path, tiny_lm, data, name, batch_size):
    config = {"model": tiny_lm, "output_dir": str(tmp_path / name), "method": {"name": "full"},
              "format": {"name": "alpaca", "template": "alpaca"},
              "data": {"train": [str(data)], "max_length": 64, "packing": False},
              "evaluators": [], "training": {"max_steps": 3, "batch_size": batch_size, "learning_rate": 1e-3,
                                             "bf16": False, "lr_scheduler": "constant"}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _run(args, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TUNERY_CACHE": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path, tiny_lm, alpaca_file):
    import torch
    from safetensors.torch import load_file

    single = _config(tmp_path, tiny_lm, alpaca_file, "single", batch_size=4)
    double = _config(tmp_path, tiny_lm, alpaca_file, "double", batch_size=2)
    from tunery import Engine

    Engine().train(str(single))
    _run(["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
          "-m", "tunery.cli", "train", str(double)], tmp_path)

    one, two = (json.loads((tmp_path / n / "metrics.json").read_text())["train"] for n in ("single", "double"))
    assert two["processes"] == 2 and one["processes"] == 1
    assert two["tokens"] == one["tokens"]  # counted on both processes, summed
    assert abs(two["loss"] - one["loss"]) < 1e-3
    logs = (tmp_path / "double" / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in logs if "loss" in json.loads(line)] == [1, 2, 3]  # written once
    a = load_file(str(tmp_path / "single" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "double" / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-4
    base = load_file(str(Path(tiny_lm) / "model.safetensors"))
    assert any(not torch.equal(a[k], base[k]) for k in a if k in base)  # it did train
