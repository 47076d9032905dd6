"""Time per prompt of `tunery generate` on a LoRA run folder: before (the adapter unmerged, one
prompt at a time) and now (merged in memory, prompts batched), with each change alone, on the
tiny test model and on SmolLM2-135M. Greedy outputs of every variant are compared with the old ones.

    python benchmarks/generation_speed.py [--prompts 16] [--new-tokens 32] [--models tiny,smollm2]

Trains a short LoRA run per model first (a few steps: the adapter only has to be non-zero)."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

QUESTIONS = ["What is the capital of France?", "Name three colours.", "How many days are in a week?",
             "Give me a synonym of happy.", "What is 12 plus 30?", "Translate good morning into Spanish.",
             "Write a haiku about rain.", "What does a fisherman do?", "Why is the sky blue?",
             "List two fruits.", "What is Python?", "Describe a cat in one sentence.",
             "Who landed on the Moon in 1969?", "What is fine-tuning?", "Suggest a name for a dog.",
             "How do you bake bread?"]


def lora_run(engine, model: str, folder: Path) -> Path:
    rows = [{"instruction": q, "output": "A short answer."} for q in QUESTIONS]
    data = folder / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = folder / "run"
    engine.train({"model": model, "output_dir": str(out), "method": {"name": "lora", "r": 8}, "format": "alpaca",
                  "data": {"train": [str(data)], "max_length": 64}, "evaluators": [],
                  "training": {"max_steps": 3, "learning_rate": 1e-2, "batch_size": 4}})
    return out


def timed(function):
    started = time.perf_counter()
    value = function()
    return value, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--models", default="tiny,smollm2", help="comma-separated: tiny, smollm2")
    args = parser.parse_args()
    import torch

    from tunery import Engine
    from tunery.generation import generate
    from tunery.testing.tiny import cached_causal_lm

    engine = Engine()
    chosen = args.models.split(",")
    models = {}
    if "tiny" in chosen:
        models["tiny (2 layers, 64 wide)"] = cached_causal_lm(tempfile.gettempdir() + "/tunery-bench-tiny")
    if "smollm2" in chosen:
        models["SmolLM2-135M-Instruct"] = "HuggingFaceTB/SmolLM2-135M-Instruct"
    prompts = (QUESTIONS * (args.prompts // len(QUESTIONS) + 1))[:args.prompts]
    print(f"torch threads: {torch.get_num_threads()}; {args.prompts} prompts, {args.new_tokens} new tokens, greedy\n")
    print("| model | variant | load (s) | s per prompt | speed-up | outputs equal to before |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for label, model in models.items():
        with tempfile.TemporaryDirectory() as tmp:
            run = lora_run(engine, model, Path(tmp))
            results = {}
            for variant, merged, batch in (("before: adapter, one at a time", False, 1), ("merged, one at a time", True, 1),
                                           ("adapter, batched", False, 16), ("now: merged, batched", True, 16)):
                loaded, load_s = timed(lambda: engine.load(run, generation=merged))
                outputs, gen_s = timed(lambda: generate(loaded.model, loaded.tokenizer, prompts,
                                                        max_new_tokens=args.new_tokens, batch_size=batch))
                results[variant] = (load_s, gen_s / len(prompts), outputs)
            base = results["before: adapter, one at a time"]
            for variant, (load_s, per_prompt, outputs) in results.items():
                same = sum(a == b for a, b in zip(outputs, base[2]))
                print(f"| {label} | {variant} | {load_s:.2f} | {per_prompt:.3f} | {base[1] / per_prompt:.1f}x "
                      f"| {same}/{len(outputs)} |", flush=True)


if __name__ == "__main__":
    main()
