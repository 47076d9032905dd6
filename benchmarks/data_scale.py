"""Preparing a large data set: tunery's data pipeline against `datasets.map` tokenisation, at
100,000 and 1,000,000 Alpaca rows, each measurement in its own process.

Rows (instruction / input / output, seeded) are written as JSONL and as one JSON list. The
reference is what a TRL / Hugging Face user writes: ``datasets.load_dataset("json", ...)`` then
``.map(tokenize, batched=True, num_proc=<cores>)`` with the same Alpaca prompt template, the same
tokenizer and the same output (input_ids, labels with the prompt masked, eos, 512 tokens at most).
tunery runs ``Engine.prepare_data`` (what ``tunery train`` and ``tunery data check CONFIG`` do
first): a first run that reads, tokenises and caches, then a second run that finds the cache.

    HF_HUB_OFFLINE=1 python benchmarks/data_scale.py [--rows 100000 1000000] [--workers N] [--write]

``--write`` puts the table into docs/performance.md (between the data_scale markers)."""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
PROMPT = "### Instruction:\n{instruction}\n\n### Response:\n"
PROMPT_WITH_INPUT = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
MAX_LENGTH = 512
WORDS = ("the a of to and in is it you that he was for on are with as his they be at one have this from or had "
         "by word but what some we can out other were all there when up use your how said an each she which do "
         "their time if will way about many then them write would like so these her long make thing see him two "
         "has look more day could go come did number sound no most people my over know water than call first who "
         "may down side been now find river mountain garden recipe explain summarise translate list reasons").split()
DOC = Path(__file__).resolve().parents[1] / "docs" / "performance.md"
START, END = "<!-- data_scale:start -->", "<!-- data_scale:end -->"


def rows(n: int, seed: int = 0):
    rng = random.Random(seed)
    for i in range(n):
        words = lambda k: " ".join(rng.choice(WORDS) for _ in range(k))  # noqa: E731
        yield {"instruction": f"{words(rng.randint(6, 24))}?", "input": words(rng.randint(4, 30)) if i % 2 else "",
               "output": words(rng.randint(20, 90)) + "."}


def write_files(folder: Path, n: int) -> tuple[Path, Path]:
    jsonl, array = folder / f"alpaca-{n}.jsonl", folder / f"alpaca-{n}.json"
    with open(jsonl, "w") as a, open(array, "w") as b:
        b.write("[\n")
        for i, row in enumerate(rows(n)):
            line = json.dumps(row)
            a.write(line + "\n")
            b.write(("" if i == 0 else ",\n") + line)
        b.write("\n]\n")
    return jsonl, array


# ----------------------------------------------------------------------------- children


def child_reference(path: str, workers: int, cache: str, models: str) -> dict:
    import datasets
    from transformers import AutoTokenizer

    from tunery import Engine

    folder = str(Engine(cache_dir=models).resolve_model(MODEL).path)
    started = time.perf_counter()  # imports done, as for tunery; loading the tokenizer is counted for both
    tokenizer = AutoTokenizer.from_pretrained(folder)
    eos = tokenizer.eos_token_id

    def tokenize(batch):
        prompts = [PROMPT_WITH_INPUT.format(instruction=i, input=x) if x else PROMPT.format(instruction=i)
                   for i, x in zip(batch["instruction"], batch["input"])]
        prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
        output_ids = tokenizer(batch["output"], add_special_tokens=False)["input_ids"]
        ids = [(p + o + [eos])[:MAX_LENGTH] for p, o in zip(prompt_ids, output_ids)]
        labels = [([-100] * len(p) + o + [eos])[:MAX_LENGTH] for p, o in zip(prompt_ids, output_ids)]
        return {"input_ids": ids, "labels": labels}

    data = datasets.load_dataset("json", data_files=path, split="train", cache_dir=cache)
    data = data.map(tokenize, batched=True, num_proc=workers, remove_columns=data.column_names)
    return {"seconds": time.perf_counter() - started, "examples": len(data)}


def child_tunery(path: str, workers: int, cache: str, models: str) -> dict:
    from transformers import AutoTokenizer  # noqa: F401 - imported before the clock starts, as in the reference

    from tunery import Engine

    engine = Engine(cache_dir=cache)
    if not path:  # the warm-up: the bundled GGUF model converted once, outside the measurements
        engine.resolve_model(MODEL)
        return {"seconds": 0.0}
    config = engine.config({"model": MODEL, "output_dir": os.path.join(cache, "run"), "method": "lora",
                            "format": {"name": "alpaca", "template": "alpaca"},
                            "data": {"train": [path], "max_length": MAX_LENGTH, "workers": workers}})
    started = time.perf_counter()
    prepared = engine.prepare_data(config)
    seconds = time.perf_counter() - started
    assert not prepared.train.problems, prepared.train.problems[:3]
    return {"seconds": seconds, "examples": len(prepared.train.examples), "cached": prepared.cached}


def child(kind: str, path: str, workers: int, cache: str, models: str) -> None:
    result = (child_reference if kind == "reference" else child_tunery)(path, workers, cache, models)
    mib = lambda who: resource.getrusage(who).ru_maxrss / 1024  # noqa: E731 - kB on Linux
    result.update(rss_mb=round(mib(resource.RUSAGE_SELF)), workers_rss_mb=round(mib(resource.RUSAGE_CHILDREN)))
    print("RESULT " + json.dumps(result))


def measure(kind: str, path: Path | str, workers: int, cache: Path, models: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    out = subprocess.run([sys.executable, __file__, "--child", kind, str(path), str(workers), str(cache), str(models)],
                         env=env, capture_output=True, text=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode or not lines:
        raise SystemExit(f"{kind} on {path} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


# ----------------------------------------------------------------------------- table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--array-rows", type=int, nargs="*", help="sizes also read from a JSON list (default: all)")
    parser.add_argument("--write", action="store_true", help="put the table into docs/performance.md")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, path, workers, cache, models = args.child
        return child(kind, path, int(workers), cache, models)
    load_before = os.getloadavg()
    lines = [f"| rows | run | seconds | rows/s | × datasets.map | peak RSS MB (main) | peak RSS MB (a worker) |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    with tempfile.TemporaryDirectory() as tmp:
        shared = Path(tmp) / "tunery"  # tunery's cache: the converted model, then each file's prepared data
        measure("tunery", "", args.workers, shared, shared)
        for n in args.rows:
            folder = Path(tmp) / str(n)
            folder.mkdir()
            jsonl, array = write_files(folder, n)
            runs = [("datasets.map (reference), JSONL", "reference", jsonl, folder / "hf"),
                    ("tunery, first run, JSONL", "tunery", jsonl, shared),
                    ("tunery, cached second run, JSONL", "tunery", jsonl, shared)]
            if args.array_rows is None or n in args.array_rows:
                runs.append(("tunery, first run, JSON list", "tunery", array, shared))
            reference = None
            for title, kind, path, cache in runs:
                result = measure(kind, path, args.workers, cache, shared)
                reference = reference or result["seconds"]
                rate = n / result["seconds"]
                lines.append(f"| {n:,} | {title} | {result['seconds']:.1f} | {rate:,.0f} | "
                             f"{reference / result['seconds']:.2f} | {result['rss_mb']} | {result['workers_rss_mb']} |")
                print(lines[-1], flush=True)
            for path in (jsonl, array):
                path.unlink()
            for old in (shared / "data").iterdir():  # this size's prepared data: disk for the next
                shutil.rmtree(old)
    load_after = os.getloadavg()
    note = (f"{args.workers} worker process(es) for both (`num_proc`, `data.workers`), SmolLM2-135M's tokenizer, "
            f"format alpaca with its text template, max length {MAX_LENGTH}; load average "
            f"{load_before[0]:.1f} before, {load_after[0]:.1f} after ({os.cpu_count()} cores). "
            "`python benchmarks/data_scale.py --write`")
    table = "\n".join(lines) + "\n\n" + note
    print("\n" + table)
    if args.write:
        text = DOC.read_text()
        head, _, rest = text.partition(START)
        _, _, tail = rest.partition(END)
        DOC.write_text(f"{head}{START}\n{table}\n{END}{tail}")


if __name__ == "__main__":
    main()
