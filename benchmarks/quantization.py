"""Quantized LoRA: peak memory, step time and eval loss for each quantizer, in one job.

Every mode trains the same workload in its own subprocess, one after the other -- LoRA r16
alpha 32 dropout 0 on all linear layers, the first 32 rows of ``benchmarks/data/alpaca_sample.json`` (the next
8 for evaluation; rows whose prompt fills the max length are skipped), max length
``--max-length``, batch 4, lr 1e-3, seed 0, ``--steps`` optimizer steps, gradient
checkpointing off everywhere -- and reports peak RSS (peak CUDA memory with
``--cuda``), the base weights' size in memory, seconds per step and the eval loss before and
after, with ratios against ``none``:

* ``none``            -- full-precision base (fp32 weights; bf16 autocast where fast);
* ``bnb-8bit``        -- LLM.int8() base;
* ``bnb-4bit``        -- NF4 base with double quantisation (QLoRA);
* ``torchao-int8wo``  -- torchao int8 weight-only base (only when torchao is installed): a
                         measurement to decide whether a torchao plugin is worth having; the
                         quantizer is registered in-process here, it is not a tunery plugin.

Then the ``.gguf`` model source: the bundled SmolLM2-135M-Instruct gguf is resolved and loaded
in a fresh process twice with an empty tunery cache -- the first converts it, the second must
come from the cache.

CPU (default): SmolLM2-135M-Instruct. ``--cuda --model REF`` runs the quantizer modes on the
GPU with a bigger model (any reference tunery resolves offline there, e.g. a 1-3B causal LM in
the Hugging Face cache) and reports peak CUDA memory instead of RSS.

Usage:  python benchmarks/quantization.py [--steps 3] [--max-length 64] [--modes none,bnb-8bit,bnb-4bit] [--cuda --model REF]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "data" / "alpaca_sample.json"
MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
QUANTIZERS = {
    "none": "none",
    "bnb-8bit": {"name": "bnb-8bit", "gradient_checkpointing": False},
    "bnb-4bit": {"name": "bnb-4bit", "quant_type": "nf4", "double_quant": True, "gradient_checkpointing": False},
    "torchao-int8wo": "torchao-int8wo",
}


# ----------------------------------------------------------------------------- in-process plugins


def bench_plugin():
    """An evaluator that reports the base weights' memory, and the torchao measurement quantizer."""
    from tunery import Evaluator, Quantizer, hookimpl

    class Footprint(Evaluator):
        name = "footprint"

        def evaluate(self, model, dataset, options, run):
            return {"weights_mb": model.get_memory_footprint() / 2**20}

    class TorchaoInt8(Quantizer):
        name = "torchao-int8wo"

        def prepare(self, model, options, run):
            from torchao.quantization import Int8WeightOnlyConfig, quantize_

            heads = ("lm_head", "score", "classifier")
            quantize_(model, Int8WeightOnlyConfig(),
                      filter_fn=lambda m, fqn: type(m).__name__ == "Linear" and not fqn.endswith(heads))
            return model

    class Plugin:
        @hookimpl
        def tunery_register_evaluators(self, registry):
            registry.add(Footprint())

        @hookimpl
        def tunery_register_quantizers(self, registry):
            registry.add(TorchaoInt8())

    return Plugin()


def peak_memory_mb(cuda: bool) -> float:
    if cuda:
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child_train(mode: str, args, out: Path) -> dict:
    from tunery import Engine

    rows = json.loads(DATA.read_text())
    tmp = Path(tempfile.mkdtemp(prefix="tunery-quant-bench-"))
    for name, part in (("train", rows[:32]), ("eval", rows[32:40])):
        (tmp / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    config = {
        "model": args.model, "output_dir": str(tmp / "run"), "seed": 0,
        "method": {"name": "lora", "r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"},
        "format": "alpaca", "quantizer": QUANTIZERS[mode], "evaluators": ["loss", "footprint"],
        "data": {"train": [str(tmp / "train.jsonl")], "eval": [str(tmp / "eval.jsonl")], "max_length": args.max_length,
                 "on_bad_row": "skip"},  # rows whose prompt fills max_length have nothing to learn
        "training": {"max_steps": args.steps, "batch_size": 4, "learning_rate": 1e-3, "logging_steps": 1},
    }
    result = Engine(plugins=[bench_plugin()]).train(config)
    m = result.metrics
    return {"mode": mode, "peak_mb": peak_memory_mb(args.cuda), "weights_mb": m["before"]["footprint/weights_mb"],
            "s_per_step": m["train"]["seconds"] / m["train"]["steps"], "steps": m["train"]["steps"],
            "eval_before": m["before"]["loss/loss"], "eval_after": m["after"]["loss/loss"]}


def child_gguf(args) -> dict:
    from tunery import Engine
    from tunery.loading import load_model

    engine = Engine()
    start = time.perf_counter()
    resolved = engine.resolve_model(MODEL)
    resolve_s = time.perf_counter() - start
    load_model(resolved, "causal_lm")
    return {"resolve_s": resolve_s, "total_s": time.perf_counter() - start, "origin": resolved.origin}


# ----------------------------------------------------------------------------- parent


def spawn(args_list: list[str], env: dict | None = None) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = Path(f.name)
    cmd = [sys.executable, __file__, *args_list, "--result", str(out)]
    proc = subprocess.run(cmd, env={**os.environ, **(env or {})}, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-4000:]}")
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--modes", default="none,bnb-8bit,bnb-4bit,torchao-int8wo")
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--cuda", action="store_true", help="train on the GPU, report peak CUDA memory")
    parser.add_argument("--no-gguf", action="store_true", help="skip the .gguf first/second load measurement")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

    if args.child:
        out = Path(args.result)
        record = child_gguf(args) if args.child == "gguf" else child_train(args.child, args, out)
        out.write_text(json.dumps(record))
        return

    import importlib.util

    modes = [m for m in args.modes.split(",") if m != "torchao-int8wo" or importlib.util.find_spec("torchao")]
    passthrough = ["--steps", str(args.steps), "--max-length", str(args.max_length), "--model", args.model] + (["--cuda"] if args.cuda else [])
    records = []
    for mode in modes:
        print(f"running {mode} ...", file=sys.stderr, flush=True)
        records.append(spawn(["--child", mode, *passthrough]))
    ref = next((r for r in records if r["mode"] == "none"), records[0])
    memory = "peak CUDA MB" if args.cuda else "peak RSS MB"
    print(f"\nmodel {args.model}, {ref['steps']} steps, batch 4, max length {args.max_length}, LoRA r16 all-linear, "
          f"{'CUDA' if args.cuda else 'CPU'}\n")
    print(f"| quantizer | {memory} | x none | base weights MB | s/step | x none | eval loss before | eval loss after |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in records:
        print(f"| {r['mode']} | {r['peak_mb']:.0f} | {r['peak_mb'] / ref['peak_mb']:.2f} | {r['weights_mb']:.0f} | "
              f"{r['s_per_step']:.2f} | {r['s_per_step'] / ref['s_per_step']:.2f} | {r['eval_before']:.4f} | "
              f"{r['eval_after']:.4f} |")

    if not args.no_gguf and not args.cuda:
        cache = tempfile.mkdtemp(prefix="tunery-gguf-bench-")
        first = spawn(["--child", "gguf"], {"TUNERY_CACHE": cache})
        second = spawn(["--child", "gguf"], {"TUNERY_CACHE": cache})
        print("\n| .gguf load (fresh process) | resolve s | resolve + load s |")
        print("| --- | ---: | ---: |")
        for name, r in (("first (converts)", first), ("second (cache)", second)):
            print(f"| {name} | {r['resolve_s']:.2f} | {r['total_s']:.2f} |")
        print(f"\nsecond/first resolve: {second['resolve_s'] / first['resolve_s']:.3f}  ({second['origin']})")


if __name__ == "__main__":
    main()
