"""Reward model benchmark: held-out pairwise accuracy before and after training, and time.

Trains ``--objective reward`` with ``--method lora`` on benchmarks/data/dpo_en_demo.json (ShareGPT
preference pairs): a seeded 80% of the pairs to train, 20% held out, on SmolLM2-135M and on
MiniLM, with sequences truncated from the left (the reward head reads the last token) to a
length that fits a CPU budget of about 15 minutes for both models.

    python benchmarks/reward.py [--data PATH] [--models smollm2,minilm] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "dpo_en_demo.json"

MODELS = {  # reference, max_length, learning rate, batch size
    "smollm2": ("HuggingFaceTB/SmolLM2-135M-Instruct", 64, 3e-4, 4),
    "minilm": ("sentence-transformers/all-MiniLM-L6-v2", 128, 5e-4, 8),
}


def run(name: str, data: Path, out: Path, epochs: float, max_length: int | None = None) -> dict:
    from tunery import Engine

    reference, default_length, lr, batch = MODELS[name]
    max_length = max_length or default_length
    started = time.perf_counter()
    result = Engine().train({
        "model": reference, "output_dir": str(out / name), "overwrite": True, "seed": 0,
        "method": {"name": "lora", "r": 8, "alpha": 16, "dropout": 0.0}, "objective": "reward",
        "format": "preference",
        "data": {"train": [str(data)], "val_split": 0.2, "max_length": max_length, "truncation": "left"},
        "training": {"epochs": epochs, "learning_rate": lr, "batch_size": batch, "warmup_ratio": 0.1,
                     "logging_steps": 10},
    })
    m = result.metrics
    return {"model": reference, "max_length": max_length, "train_pairs": m["data"]["train"]["examples"],
            "heldout_pairs": m["after"]["reward_accuracy/pairs"], "truncated": m["data"]["train"]["truncated"],
            "accuracy_before": round(m["before"]["reward_accuracy/accuracy"], 4),
            "accuracy_after": round(m["after"]["reward_accuracy/accuracy"], 4),
            "margin_before": round(m["before"]["reward_accuracy/margin"], 4),
            "margin_after": round(m["after"]["reward_accuracy/margin"], 4),
            "train_seconds": m["train"]["seconds"], "wall_seconds": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--models", default="smollm2,minilm")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-length", type=int, help="Override every model's max length (tokens).")
    parser.add_argument("--out", type=Path, default=Path("/tmp/tunery-bench-reward"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if not args.data.is_file():
        raise SystemExit(f"no data at {args.data}; pass --data")
    rows = []
    for name in args.models.split(","):
        rows.append(run(name, args.data, args.out, args.epochs, args.max_length))
        print(json.dumps(rows[-1]), flush=True)
    print("\n| model | max length | train / held-out pairs | accuracy before | accuracy after | margin after | train s | wall s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['model']} | {r['max_length']} | {r['train_pairs']} / {r['heldout_pairs']} | {r['accuracy_before']:.3f} "
              f"| {r['accuracy_after']:.3f} | {r['margin_after']:.3f} | {r['train_seconds']:.0f} | {r['wall_seconds']:.0f} |")


if __name__ == "__main__":
    main()
