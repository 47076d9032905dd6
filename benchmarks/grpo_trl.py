"""GRPO side by side: tunery's `grpo` objective and TRL's GRPOTrainer on the same tiny causal LM.

Each trainer runs in its own subprocess (so peak RSS is its own) on the tiny 2-layer Llama of
tunery.testing.tiny (one folder for both), with the same prompts ("Tell me about item i.",
rendered by the model's chat template with the generation prompt in both), the same reward
function (the share of spaces in the completion, as tests/test_grpo.py), G, max new tokens,
temperature 1, beta, epsilon 0.2, one update per generation batch, loss type `grpo`
(per-sequence mean), group-std scaled advantages, learning rate, constant schedule without
warmup, AdamW (`adamw_torch`, set in TRL, whose default under transformers 5 is the fused one;
weight decay 0, grad-norm clip 1.0), fp32 on CPU, seed, steps and prompts per step.

Differences the two APIs leave:
- TRL counts its batch in completions: per_device_train_batch_size = batch * G (one optimizer
  step = `batch` prompts x G completions in both); tunery counts prompts (training.batch_size).
- TRL takes conversational prompts (a `prompt` column of messages) and hands the reward function
  completions as message lists; tunery takes the plain prompt text and applies the chat template
  itself (format.template auto). Both render the same chat-template text (TRL's logged num_tokens
  gives 21.5 prompt tokens per completion, what the template gives for these prompts).
- Sampling draws differ (each seeds and orders its own generator), so the runs do not see the
  same completions; rewards are comparable in trend, not draw by draw.
- tunery's timed call (Engine().train) also loads the model, writes the run folder, saves the
  final weights and the report; TRL's timed part is GRPOTrainer(...) + train(), no save.
  "s/step" uses each trainer's own `train_runtime` (the training loop only); "total s" is that
  timed call (imports excluded).
- method lora: the same r 8, alpha 16, dropout 0 on q/k/v/o in both (tunery's lora options,
  TRL's peft_config=LoraConfig).

    OMP_NUM_THREADS=1 python benchmarks/grpo_trl.py [--steps 24] [--prompts 16] [--g 4]
        [--new-tokens 8] [--batch 2] [--lr 3e-2] [--beta 0.04] [--method full|lora] [--seed 1] [--out DIR]

Needs the `bench` extra (trl).
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

LORA = {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}


def spaces(prompts, completions, **columns):
    """The share of the completion's characters that are spaces (completion: text or messages)."""
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [t.count(" ") / max(len(t), 1) for t in texts]


def prompts(n):
    return [f"Tell me about item {i}." for i in range(n)]


def peak_rss_mb():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_tunery(a, model, out):
    from tunery import Engine

    path = out / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts(a.prompts)))
    method = {"name": "lora", **LORA} if a.method == "lora" else "full"
    started = time.perf_counter()
    Engine().train({
        "model": model, "output_dir": str(out / "run"), "overwrite": True, "format": "prompts", "method": method,
        "seed": a.seed, "evaluators": [],
        "objective": {"name": "grpo", "rewards": [{"function": "benchmarks.grpo_trl:spaces"}],
                      "num_generations": a.g, "max_new_tokens": a.new_tokens, "temperature": 1.0,
                      "beta": a.beta, "epsilon": 0.2, "num_iterations": 1, "loss_type": "grpo"},
        "data": {"train": [str(path)], "max_length": 64},
        "training": {"max_steps": a.steps, "batch_size": a.batch, "learning_rate": a.lr, "bf16": False,
                     "logging_steps": a.log_every, "lr_scheduler": "constant", "warmup_ratio": 0.0,
                     "weight_decay": 0.0, "max_grad_norm": 1.0},
    })
    total = time.perf_counter() - started
    records = [json.loads(line) for line in (out / "run" / "train_log.jsonl").read_text().splitlines()]
    logs = [r for r in records if "reward" in r]
    runtime = next((r["train_runtime"] for r in records if "train_runtime" in r), None)
    return {"total_s": total, "train_runtime": runtime, "rewards": [r["reward"] for r in logs], "last_log": logs[-1]}


def run_trl(a, model, out):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    dataset = Dataset.from_dict({"prompt": [[{"role": "user", "content": p}] for p in prompts(a.prompts)]})
    peft_config = None
    if a.method == "lora":
        from peft import LoraConfig

        peft_config = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                                 target_modules=LORA["target_modules"], task_type="CAUSAL_LM")
    args = GRPOConfig(
        output_dir=str(out / "trl"), use_cpu=True, bf16=False, seed=a.seed, max_steps=a.steps,
        per_device_train_batch_size=a.batch * a.g, num_generations=a.g, max_completion_length=a.new_tokens,
        temperature=1.0, beta=a.beta, epsilon=0.2, num_iterations=1, loss_type="grpo", scale_rewards="group",
        learning_rate=a.lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
        logging_steps=a.log_every, save_strategy="no", report_to=[], use_vllm=False, optim="adamw_torch", dataloader_num_workers=0,
    )
    started = time.perf_counter()
    trainer = GRPOTrainer(model=model, reward_funcs=[spaces], args=args, train_dataset=dataset, peft_config=peft_config)
    trainer.train()
    total = time.perf_counter() - started
    history = trainer.state.log_history
    logs = [r for r in history if "reward" in r]
    runtime = next((r["train_runtime"] for r in history if "train_runtime" in r), None)
    return {"total_s": total, "train_runtime": runtime, "rewards": [r["reward"] for r in logs], "last_log": logs[-1]}


def child(a):
    import transformers

    transformers.logging.set_verbosity_error()
    out = Path(a.out) / a.child
    out.mkdir(parents=True, exist_ok=True)
    from tunery.testing.tiny import cached_causal_lm

    model = cached_causal_lm(a.out)
    result = (run_tunery if a.child == "tunery" else run_trl)(a, model, out)
    result["peak_rss_mb"] = peak_rss_mb()
    print("RESULT " + json.dumps(result), flush=True)


def table(a, results):
    def row(r):
        per_step = (r["train_runtime"] or r["total_s"]) / a.steps
        return {"s/step": per_step, "completions/s": a.batch * a.g / per_step, "total s": r["total_s"],
                "peak RSS MB": r["peak_rss_mb"], "reward start": r["rewards"][0], "reward end": r["rewards"][-1]}

    rows = {name: row(r) for name, r in results.items()}
    keys = list(rows["tunery"])
    lines = ["| | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, values in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}" for v in values.values()) + " |")
    lines.append("| tunery/TRL | " + " | ".join(f"{rows['tunery'][k] / rows['trl'][k]:.2f}" if rows["trl"][k] else "-"
                                              for k in keys) + " |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=24)
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--g", type=int, default=4)
    p.add_argument("--new-tokens", type=int, default=8)
    p.add_argument("--batch", type=int, default=2, help="prompts per optimizer step")
    p.add_argument("--lr", type=float, default=3e-2)
    p.add_argument("--beta", type=float, default=0.04)
    p.add_argument("--method", choices=["full", "lora"], default="full")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--log-every", type=int, default=4)
    p.add_argument("--out", default=None)
    p.add_argument("--child", choices=["tunery", "trl"], help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        return child(a)
    a.out = a.out or tempfile.mkdtemp(prefix="grpo_trl_")
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    results = {}
    for name in ("tunery", "trl"):
        argv = [sys.executable, __file__, "--child", name, "--out", a.out] + [
            f"--{k.replace('_', '-')}={getattr(a, k)}" for k in ("steps", "prompts", "g", "new_tokens", "batch", "lr",
                                                                 "beta", "method", "seed", "log_every")]
        done = subprocess.run(argv, env=env, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode or not lines:
            sys.exit(f"{name} child failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        results[name] = json.loads(lines[-1][len("RESULT "):])
        print(f"{name}: rewards per log {[round(r, 3) for r in results[name]['rewards']]}; last log {results[name]['last_log']}", file=sys.stderr)
    print(f"GRPO, tiny Llama (tunery.testing.tiny), method {a.method}, {a.prompts} prompts, G {a.g}, "
          f"{a.new_tokens} new tokens, {a.batch} prompts/step, lr {a.lr}, beta {a.beta}, {a.steps} steps, seed {a.seed}\n")
    print(table(a, results))


if __name__ == "__main__":
    main()
