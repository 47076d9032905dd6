"""Measured examples of the toolbox techniques (issue 14) on the bundled models; prints markdown.

    python benchmarks/toolbox.py distill  [--rows 64] [--steps 20]   # SmolLM2-135M -> half-depth student
    python benchmarks/toolbox.py sst5     [--rows 400] [--epochs 3]  # MiniLM on SST-5: augment, regularisers
    python benchmarks/toolbox.py continual [--steps 30]              # SmolLM2 LoRA, two tasks, replay / ewc

Data from ../shared/data (alpaca_en_demo.json, sst5_train.txt). Everything runs on the CPU in
minutes; the numbers in docs/toolbox.md come from this script.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMOL, MINILM = "HuggingFaceTB/SmolLM2-135M-Instruct", "sentence-transformers/all-MiniLM-L6-v2"


def data_dir() -> Path:
    for candidate in (ROOT.parent / "shared" / "data", ROOT.parent.parent / "shared" / "data", Path("/work/shared/data")):
        if (candidate / "sst5_train.txt").is_file():
            return candidate
    sys.exit("benchmark data not found: it needs shared/data beside the project")


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def eval_kl(engine, student_ref, teacher_model, tokenizer, texts: list[str]) -> float:
    """Mean KL(teacher || student) per token (T = 1) on ``texts``."""
    import torch
    from tunery_distill import divergence

    student = engine.load(student_ref).model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for text in texts:
            enc = tokenizer(text, return_tensors="pt", truncation=True, max_length=128)
            s = student(**enc).logits[0].float()
            t = teacher_model(**enc).logits[0].float()
            total += float(divergence(s, t)) * s.shape[0]
            n += s.shape[0]
    return total / n


def distill(args, engine, tmp: Path) -> None:
    from tunery_distill import student_from_teacher

    rows = json.loads((data_dir() / "alpaca_en_demo.json").read_text())
    train = write_jsonl(tmp / "train.jsonl", rows[: args.rows])
    held = rows[args.rows: args.rows + 8]
    evaluation = write_jsonl(tmp / "eval.jsonl", held)
    texts = [f"{r['instruction']}\n{r.get('input', '')}\n{r['output']}" for r in held]
    student = student_from_teacher(SMOL, str(tmp / "student"), args.every, engine)
    teacher = engine.load(SMOL)
    teacher.model.eval()
    base = {"model": student, "method": "full", "format": "alpaca", "evaluators": ["loss"],
            "data": {"train": [train], "eval": [evaluation], "max_length": 128},
            "training": {"max_steps": args.steps, "batch_size": 4, "learning_rate": 1e-4, "bf16": False}}
    out = [("teacher (30 layers)", None, None, eval_kl(engine, SMOL, teacher.model, teacher.tokenizer, texts)),
           (f"student (every {args.every}nd layer), untrained", None, None,
            eval_kl(engine, student, teacher.model, teacher.tokenizer, texts))]
    variants = [("sft", "sft"), ("distill a=0.5 T=2", {"name": "distill", "teacher": SMOL})]
    if args.lora:
        variants.append(("distill a=0.5 T=2 + lora", {"name": "distill", "teacher": SMOL}))
    for name, objective in variants:
        config = {**base, "output_dir": str(tmp / name.replace(" ", "_")), "objective": objective}
        if "lora" in name:
            config = {**config, "method": {"name": "lora", "r": 16},
                      "training": {**base["training"], "learning_rate": 1e-3}}
        started = time.perf_counter()
        result = engine.train(config)
        seconds = time.perf_counter() - started
        out.append((name, result.metrics["after"]["loss/loss"], round(seconds),  # noqa: E501
                    eval_kl(engine, str(result.output_dir), teacher.model, teacher.tokenizer, texts)))
    print(f"\nSmolLM2-135M-Instruct -> student with every {args.every}nd layer; {args.rows} Alpaca rows, "
          f"{args.steps} steps, batch 4; KL(teacher||student) per token on 8 held-out rows\n")
    print("| student | eval loss | seconds | KL to teacher |\n|---|---|---|---|")
    for name, loss, seconds, kl in out:
        print(f"| {name} | {'' if loss is None else f'{loss:.3f}'} | {'' if seconds is None else seconds} | {kl:.3f} |")


def sst5_rows(limit: int, offset: int = 0) -> list[dict]:
    lines = (data_dir() / "sst5_train.txt").read_text().splitlines()[offset: offset + limit]
    return [{"text": text, "label": label.replace("__label__", "")}
            for label, _, text in (line.partition("\t") for line in lines)]


def sst5(args, engine, tmp: Path) -> None:
    import torch

    train = write_jsonl(tmp / "train.jsonl", sst5_rows(args.rows))
    evaluation = write_jsonl(tmp / "eval.jsonl", sst5_rows(args.eval_rows, offset=4000))
    variants = {
        "baseline": [],
        "augment (copies 1: swap/delete/insert/mask)": [{"name": "augment", "copies": 1}],
        "l2sp alpha=0.1": [{"name": "l2sp", "alpha": 0.1}],
        "label_smoothing 0.1": [{"name": "label_smoothing", "epsilon": 0.1}],
        "neftune alpha=5": [{"name": "neftune", "alpha": 5.0}],
        "rdrop alpha=1": [{"name": "rdrop", "alpha": 1.0}],
        "dropout hidden=0.3 attention=0.3": [{"name": "dropout", "hidden": 0.3, "attention": 0.3}],
        "adversarial eps=0.01": [{"name": "adversarial", "eps": 0.01}],
        "penalty l1=1e-6": [{"name": "penalty", "l1": 1e-6}],
        "curriculum by length": ["curriculum"],
    }
    if args.only:
        variants = {k: v for k, v in variants.items() if any(o in k for o in args.only.split(","))}
    base_model = engine.load(MINILM, task="classification").model
    base_state = {k: v.clone() for k, v in base_model.state_dict().items() if "classifier" not in k}
    print(f"\nall-MiniLM-L6-v2, full fine-tuning on {args.rows} SST-5 sentences (5 classes), {args.epochs} epochs, "
          f"batch 16, lr {args.lr}; evaluated on {args.eval_rows} other sentences\n")
    print("| extensions | train examples | accuracy | macro-F1 | ||w - w0||^2 of the encoder | seconds |")
    print("|---|---|---|---|---|---|")
    for name, extensions in variants.items():
        started = time.perf_counter()
        result = engine.train({
            "model": MINILM, "output_dir": str(tmp / f"sst5-{len(os.listdir(tmp))}"), "method": "full",
            "format": "classification", "evaluators": ["classification"], "extensions": extensions,
            "data": {"train": [train], "eval": [evaluation], "max_length": 48},
            "training": {"epochs": args.epochs, "batch_size": 16, "learning_rate": args.lr, "bf16": False}})
        state = result.model.state_dict()
        distance = sum(float((state[k].float() - v.float()).pow(2).sum()) for k, v in base_state.items() if k in state)
        after = result.metrics["after"]
        print(f"| {name} | {result.metrics['data']['train']['examples']} | {after['classification/accuracy']:.3f} | "
              f"{after['classification/macro_f1']:.3f} | {distance:.3f} | "
              f"{round(time.perf_counter() - started)} |", flush=True)
        del result
        torch.cuda.empty_cache() if torch.cuda.is_available() else None


def continual(args, engine, tmp: Path) -> None:
    rows = json.loads((data_dir() / "alpaca_en_demo.json").read_text())
    tasks = {"alpaca": rows[:48],  # task 1: general instructions; task 2: answering in French-like form
             "shout": [{**r, "output": r["output"].upper()} for r in rows[100:148]]}
    files = {}
    for name, task in tasks.items():
        files[name] = (write_jsonl(tmp / f"{name}.jsonl", task[:40]), write_jsonl(tmp / f"{name}_eval.jsonl", task[40:]))
    print(f"\nSmolLM2-135M-Instruct, LoRA r=16, {args.steps} steps per stage: stage 1 Alpaca answers, stage 2 the "
          "same kind of questions answered in capitals; eval loss on 8 held-out rows of each task\n")
    print("| extensions | task 1 after stage 1 | task 1 after stage 2 | forgetting (task 1) | task 2 after stage 2 |")
    print("|---|---|---|---|---|")
    for label, extensions in (("none", []), ("replay 0.25", [{"name": "replay", "fraction": 0.25}]),
                              ("ewc weight 1e4", [{"name": "ewc", "weight": 1e4}])):
        result = engine.train({
            "model": SMOL, "output_dir": str(tmp / f"cl-{label.split()[0]}"), "method": {"name": "lora", "r": 16},
            "format": "alpaca", "evaluators": ["loss"], "extensions": extensions,
            "training": {"max_steps": args.steps, "batch_size": 4, "learning_rate": 1e-3, "bf16": False},
            "data": {"max_length": 128},
            "stages": [{"name": n, "data": {"train": [t], "eval": [e]}} for n, (t, e) in files.items()]})
        f = result.metrics["forgetting"]
        m = f["matrix"]
        print(f"| {label} | {m[0][0]:.3f} | {m[0][1]:.3f} | {f['forgetting']['alpaca']:+.3f} | {m[1][1]:.3f} |",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["distill", "sst5", "continual"])
    parser.add_argument("--rows", type=int)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--every", type=int, default=2)
    parser.add_argument("--only", default="")
    parser.add_argument("--lora", action="store_true", help="distill: also a LoRA student")
    parser.add_argument("--eval-rows", type=int, default=200)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import logging

    import torch
    from tunery import Engine

    torch.set_num_threads(args.threads)
    logging.getLogger("tunery").setLevel(logging.WARNING)
    args.rows = args.rows or {"distill": 32, "sst5": 200, "continual": 0}[args.what]
    with tempfile.TemporaryDirectory() as tmp:
        {"distill": distill, "sst5": sst5, "continual": continual}[args.what](args, Engine(), Path(tmp))


if __name__ == "__main__":
    main()
