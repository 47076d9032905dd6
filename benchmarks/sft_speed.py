"""LoRA SFT speed and memory: tunery against the plain transformers+peft script and TRL, in one job.

Runs ``benchmarks/reference/hf_peft_sft.py`` (fp32 and ``--bf16``), ``benchmarks/reference/trl_sft.py``
(TRL's SFTTrainer with its padding-free packing, and without packing; ``pip install -e .[bench]``) and
tunery on the same workload -- SmolLM2-135M, the first 32 rows of ``benchmarks/data/alpaca_sample.json``,
max length 256, batch 4, 1 epoch, LoRA r16 alpha 32 dropout 0 on all linear layers, lr 2e-4, seed 0,
the Alpaca prompt template -- each in its own subprocess, one after the other, and prints real
tokens/s, training and process wall time, peak memory (RSS; CUDA max allocated on a GPU) and loss,
with ratios against the fp32 plain script and against TRL with packing; the machine's matmul peak
(2048² products in bf16 and fp32, own process) and the LoRA model FLOPs (4·N per real token) as a
share of it; with ``--lengths`` a length-scaling table (peak RSS against tokens per batch). With
``--write`` the tables go to ``docs/performance.md``.

Precision: TRL and tunery's defaults train in bf16 where the hardware runs it fast (AVX512-BF16/AMX,
a bf16 GPU) and in fp32 elsewhere (``--precision`` overrides); where bf16 is slow the bf16-only rows
are left out (a CPU that emulates bf16 takes hours).

tunery modes:

* ``defaults``     -- what ``tunery train`` does out of the box (packing, bf16 autocast where the
                      hardware runs it fast with the frozen linear weights held in bf16, chunked
                      cross-entropy);
* ``same-as-baseline`` -- the baseline's padded batches, precision, loss and optimiser: engine
                      overhead only (target >= 0.97x the baseline in the same precision);
* ``no-packing``   -- defaults without packing (packing must not change the eval loss);
* ``+grad-ckpt`` (every layer), ``+grad-ckpt-half`` (every other layer), ``+torch-compile``,
  ``adamw_torch`` -- the defaults with one option changed.

Start-up: median wall time of ``tunery --help`` and ``tunery plugins`` over several runs.

GPU: ``--gpu --model <ref> [--attn sdpa|flash_attention_2] [--load-dtype bfloat16]`` runs the same
comparison on CUDA in bf16 (tunery's ``model_loading.attn_implementation`` and ``model_loading.dtype``)
with a bigger model and adds peak CUDA memory; the FLOPs column is then the model FLOPs utilisation
against ``--peak-tflops`` (989 for H100/H200 dense bf16).

Usage:  python benchmarks/sft_speed.py --lengths 256,1024,2048,4096 --write   (everything, one job)
        python benchmarks/sft_speed.py --modes defaults,trl-packing [--repeat 2]
        python benchmarks/sft_speed.py --from-log job.log --write   (tables from an earlier job's output)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "benchmarks" / "reference" / "hf_peft_sft.py"
TRL = ROOT / "benchmarks" / "reference" / "trl_sft.py"
DATA = ROOT / "benchmarks" / "data" / "alpaca_sample.json"
MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
TUNERY_MODES = {
    "defaults": [],
    "same-as-baseline": ["data.packing=false", "training.bf16=false", "training.chunked_loss=false",
                         "training.optim=adamw_torch_fused"],
    "same-as-baseline-bf16": ["data.packing=false", "training.bf16=true", "training.chunked_loss=false",
                              "training.optim=adamw_torch_fused"],
    "no-packing": ["data.packing=false"],
    "+grad-ckpt": ["training.gradient_checkpointing=true"],
    "+grad-ckpt-half": ["training.gradient_checkpointing=0.5"],
    "+torch-compile": ["training.extra.torch_compile=true"],
    "adamw_torch": ["training.optim=adamw_torch"],
}
BASELINE_MODES = {"baseline-fp32": [], "baseline-bf16": ["--bf16"]}
# TRL's peer script trains in bf16 unless --fp32; "auto" runs it in the precision tunery's defaults pick
TRL_MODES = {"trl-packing": [], "trl-no-packing": ["--no-packing"]}
BF16_MODES = {"baseline-bf16", "same-as-baseline-bf16"}  # left out where bf16 is slow (no AVX512-BF16/AMX, no GPU)
DEFAULT_MODES = ["baseline-fp32", "baseline-bf16", "trl-packing", "trl-no-packing", "defaults", "+grad-ckpt",
                 "+grad-ckpt-half", "same-as-baseline", "same-as-baseline-bf16", "no-packing", "+torch-compile"]
LENGTH_OVERRIDES = ["training.batch_size=1", "training.max_steps={steps}", "data.max_length={length}",
                    "evaluators=[]", "generation.from_eval=0"]

# ----------------------------------------------------------------------------- children


def child_tunery(config_path: str, overrides: list[str]) -> dict:
    """Run tunery in this process; the metrics the table needs."""
    from tunery import Engine

    result = Engine().train(config_path, overrides)
    train = result.metrics["train"]
    return {"train_seconds": train["seconds"], "real_tokens": train["tokens"], "padded_tokens": train["padded_tokens"],
            "tokens_per_s": train["tokens_per_s"], "steps": train["steps"], "final_loss": train["loss"],
            "eval_loss": result.metrics["after"].get("loss/loss"), **_cuda_peak()}


def child_baseline(args: list[str]) -> dict:
    """Run the unmodified baseline script in this process; its JSON line plus peak CUDA memory."""
    import contextlib
    import io
    import runpy

    sys.argv = [str(BASELINE), *args]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        runpy.run_path(str(BASELINE), run_name="__main__")
    line = [x for x in out.getvalue().splitlines() if x.startswith("{")][-1]
    return {**json.loads(line), **_cuda_peak()}


def child_trl(args: list[str]) -> dict:
    """Run the unmodified TRL peer script in this process (same JSON line as the baseline)."""
    import contextlib
    import io
    import runpy

    sys.argv = [str(TRL), *args]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        runpy.run_path(str(TRL), run_name="__main__")
    line = [x for x in out.getvalue().splitlines() if x.startswith("{")][-1]
    return {**json.loads(line), **_cuda_peak()}


def child_matmul(size: int = 2048, seconds: float = 3.0) -> dict:
    """The machine's matrix-product peak: GFLOP/s of ``size``-square matmuls in bf16 and fp32
    (on the GPU where there is one), the best of three timings of about ``seconds`` / 3 each.
    A dtype the hardware only emulates (one 512-square product over 0.2 s) is timed at 512."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"

    def rate(n: int, dtype, budget: float) -> float:
        a = torch.randn(n, n, dtype=dtype, device=device)
        b = torch.randn(n, n, dtype=dtype, device=device)
        a @ b  # warm-up
        best = 0.0
        for _ in range(3):
            count, start = 0, time.perf_counter()
            while count == 0 or time.perf_counter() - start < budget:
                a @ b
                count += 1
                if device == "cuda":
                    torch.cuda.synchronize()
            best = max(best, 2 * n**3 * count / (time.perf_counter() - start) / 1e9)
        return best

    out = {}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        probe = rate(512, dtype, 0.0)
        slow = 2 * 512**3 / (probe * 1e9) > 0.2
        out[f"{name}_gflops"] = round(probe if slow else rate(size, dtype, seconds / 3), 2)
    return out


def _cuda_peak() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {}
    return {"cuda_peak_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)}


# ----------------------------------------------------------------------------- parent


def run_child(argv: list[str], env: dict) -> dict:
    """Run one measurement in a fresh process; adds that process's peak RSS and wall time."""
    load = os.getloadavg()[0]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, __file__, *argv], stdout=out, stderr=err, env=env, text=True)
        _, status, usage = os.wait4(proc.pid, 0)  # the rusage of this child alone
        wall = time.perf_counter() - start
        out.seek(0), err.seek(0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"{' '.join(argv)} failed:\n{err.read()[-3000:]}")
        result = json.loads(out.read().strip().splitlines()[-1])
    result["wall_seconds"] = round(wall, 2)
    result["load"] = round(load, 2)
    result["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)
    return result


def startup_times(runs: int) -> dict:
    """Median wall and CPU (user+system) seconds of ``tunery --help`` and ``tunery plugins``;
    CPU time is the figure to trust on a machine shared with other jobs. The warm-up run writes
    the bytecode an installed package has (pip compiles it at install; an editable checkout under
    ``PYTHONDONTWRITEBYTECODE=1`` would otherwise compile every module at every start)."""
    exe = str(Path(sys.executable).with_name("tunery"))
    out = {}
    warm_env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    for args in (["--help"], ["plugins"]):
        subprocess.run([exe, *args], capture_output=True, check=True, env=warm_env)  # bytecode, entry-point cache
        walls, cpus = [], []
        for _ in range(runs):
            start = time.perf_counter()
            proc = subprocess.Popen([exe, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            usage = os.wait4(proc.pid, 0)[2]
            walls.append(time.perf_counter() - start)
            cpus.append(usage.ru_utime + usage.ru_stime)
        name = "tunery " + " ".join(args)
        out[name] = round(statistics.median(walls), 3)
        out[name + " (CPU)"] = round(statistics.median(cpus), 3)
    return out


def prepare(workdir: Path, args) -> tuple[str, str, str | None]:
    """Train/eval files, the tunery config, and the baseline's model folder (and gguf file)."""
    from tunery import Engine

    rows = json.loads(DATA.read_text())
    train, evaluation = rows[: args.samples], rows[args.samples: args.samples + args.eval_samples]
    (workdir / "train.json").write_text(json.dumps(train))
    (workdir / "eval.json").write_text(json.dumps(evaluation))
    resolved = Engine().resolve_model(args.model)
    config = {
        "model": args.model, "output_dir": str(workdir / "run"), "overwrite": True, "seed": 0,
        "method": {"name": "lora", "r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"},
        "format": {"name": "alpaca", "template": "alpaca"},
        "data": {"train": [str(workdir / "train.json")], "eval": [str(workdir / "eval.json")], "max_length": 256},
        "evaluators": ["loss"],
        "training": {"epochs": 1, "batch_size": 4, "learning_rate": 2e-4, "logging_steps": 1},
    }
    if args.gpu:
        config["training"]["bf16"] = True
    path = workdir / "tunery.yaml"
    path.write_text(json.dumps(config))
    return str(path), resolved.path, resolved.gguf_file


def model_params(model_dir: str, gguf_file: str | None) -> int:
    from transformers import AutoConfig, AutoModelForCausalLM

    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    with __import__("torch").device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir, **kwargs))
    return sum(p.numel() for p in model.parameters())


def table(record: dict, args) -> str:
    results, startup = record["results"], record.get("startup", {})
    n_params, matmul = record.get("n_params"), record.get("matmul") or {}

    def median(name, key):
        runs = results.get(name) or []
        values = [r[key] for r in runs if r.get(key) is not None]
        return statistics.median(values) if values else None

    reference = "baseline-fp32" if "baseline-fp32" in results else next(iter(results))
    ref, ref_rss = median(reference, "tokens_per_s"), median(reference, "peak_rss_mb")
    trl, trl_rss = median("trl-packing", "tokens_per_s"), median("trl-packing", "peak_rss_mb")
    peak = max(matmul.get("bf16_gflops", 0), matmul.get("fp32_gflops", 0)) * 1e9 or None
    if args.gpu:
        peak = args.peak_tflops * 1e12
    gpu = any("cuda_peak_mb" in r for rs in results.values() for r in rs)
    head = ["run", "real tok/s", "× fp32 plain", "× TRL", "train s", "process s", "peak RSS MB", "× RSS plain",
            "× RSS TRL", "padding %", "steps", "final train loss", "eval loss", "model FLOPs % of peak"]
    if gpu:
        head += ["CUDA peak MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, runs in results.items():
        med = {k: median(name, k) for k in ("tokens_per_s", "train_seconds", "wall_seconds", "peak_rss_mb", "final_loss",
                                            "eval_loss", "real_tokens", "padded_tokens", "steps", "cuda_peak_mb")}
        spread = "" if len(runs) < 2 else f" ({min(r['tokens_per_s'] for r in runs):.0f}–{max(r['tokens_per_s'] for r in runs):.0f})"
        padding = 100.0 * (1 - med["real_tokens"] / med["padded_tokens"]) if med["padded_tokens"] else 0.0
        # LoRA: forward 2N + backward through the activations 2N per token, no weight gradients of the base
        fraction = 4 * n_params * med["tokens_per_s"] / peak * 100 if n_params and peak else None
        row = [name, f"{med['tokens_per_s']:.1f}{spread}", _ratio(med["tokens_per_s"], ref), _ratio(med["tokens_per_s"], trl),
               f"{med['train_seconds']:.1f}", f"{med['wall_seconds']:.1f}", f"{med['peak_rss_mb']:.0f}",
               _ratio(med["peak_rss_mb"], ref_rss), _ratio(med["peak_rss_mb"], trl_rss), f"{padding:.0f}",
               f"{med['steps']:.0f}", _f(med["final_loss"]), _f(med["eval_loss"]), _f(fraction, 1)]
        if gpu:
            row += [_f(med["cuda_peak_mb"], 0)]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append(f"- precision of TRL and tunery's defaults: {record.get('precision', '?')} (bf16 where the hardware "
                 "runs it fast; `--precision` sets it)")
    if matmul:
        lines.append(f"- matmul peak (2048² products, best of 3, own process): {matmul.get('bf16_gflops', 0):.1f} GFLOP/s "
                     f"bf16, {matmul.get('fp32_gflops', 0):.1f} GFLOP/s fp32; the FLOPs column divides 4·N·tok/s "
                     f"(N = {n_params / 1e6:.1f} M base parameters) by the faster of the two"
                     + (f" (GPU: by --peak-tflops {args.peak_tflops:g})" if args.gpu else ""))
    for k, v in startup.items():
        lines.append(f"- `{k.removesuffix(' (CPU)')}`: median {v:.3f} s {'CPU' if k.endswith(' (CPU)') else 'wall'}")
    loads = [r["load"] for rs in results.values() for r in rs if "load" in r]
    if loads:
        lines.append(f"- 1-minute load average when the runs started: {min(loads):.1f} to {max(loads):.1f} "
                     f"on {os.cpu_count()} CPU(s)")
    return "\n".join(lines)


def _ratio(value, reference) -> str:
    return "-" if value is None or not reference else f"{value / reference:.2f}"


def _f(value, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if digits < 4 else f"{value:.4g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default=",".join(DEFAULT_MODES), help="comma-separated; see the module docstring")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; the modes are interleaved within a round")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--eval-samples", type=int, default=32)
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--gpu", action="store_true", help="CUDA run: bf16 everywhere, CUDA peak memory and MFU")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="the GPU's dense bf16 peak (H100/H200: 989)")
    parser.add_argument("--attn", help="tunery's model_loading.attn_implementation (sdpa, eager, flash_attention_2, ...)")
    parser.add_argument("--load-dtype", help="tunery's model_loading.dtype (float32, bfloat16, auto); --gpu: bfloat16")
    parser.add_argument("--startup-runs", type=int, default=7)
    parser.add_argument("--write", action="store_true", help="write the table to docs/performance.md")
    parser.add_argument("--from-log", help="make the table from the JSON lines of an earlier (or cut-short) job's output")
    parser.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                        help="TRL's and tunery's precision; auto: bf16 where the hardware runs it fast (as tunery's "
                             "defaults), and the bf16-only baseline rows are left out where it does not")
    parser.add_argument("--lengths", default="",
                        help="also a length-scaling table of tunery's defaults, e.g. 256,1024,2048,4096 "
                             "(packing on, batch 1, --length-steps steps each)")
    parser.add_argument("--length-steps", type=int, default=1)
    parser.add_argument("--child", choices=["tunery", "baseline", "trl", "matmul"], help=argparse.SUPPRESS)
    parser.add_argument("child_args", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "tunery":
        print(json.dumps(child_tunery(args.child_args[0], args.child_args[1:])))
        return
    if args.child == "baseline":
        print(json.dumps(child_baseline(args.child_args)))
        return
    if args.child == "trl":
        print(json.dumps(child_trl(args.child_args)))
        return
    if args.child == "matmul":
        print(json.dumps(child_matmul()))
        return

    if args.from_log:
        report(from_log(Path(args.from_log)), args)
        return
    modes = [m.strip() for m in args.modes.split(",") if m.strip() and m.strip() != "none"]
    known = {**BASELINE_MODES, **TRL_MODES, **TUNERY_MODES}
    unknown = [m for m in modes if m not in known]
    if unknown:
        parser.error(f"unknown mode(s) {unknown}; known: {', '.join(known)}")
    bf16 = args.gpu or args.precision == "bf16" or (args.precision == "auto" and fast_bf16())
    if not bf16 and args.modes == parser.get_default("modes"):
        modes = [m for m in modes if m not in BF16_MODES]  # hours on a CPU that emulates bf16
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false"}
    record = {"precision": "bf16" if bf16 else "fp32"}
    record["startup"] = startup_times(args.startup_runs)
    print(json.dumps(record), flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="tunery-bench-"))
    config, model_dir, gguf_file = prepare(workdir, args)
    extras = {"n_params": model_params(model_dir, gguf_file), "matmul": run_child(["--child", "matmul"], env)}
    print(json.dumps(extras), flush=True)
    record.update(extras)
    base_args = ["--model", model_dir, "--data", str(workdir / "train.json"), "--samples", str(args.samples),
                 "--max-len", "256", "--batch-size", "4", "--epochs", "1", "--lr", "2e-4", "--lora-r", "16",
                 "--lora-alpha", "32", "--seed", "0", "--output-dir", str(workdir / "baseline")]
    if gguf_file:
        base_args += ["--gguf-file", gguf_file]
    tunery_precision = ["training.bf16=true"] if bf16 and args.precision != "auto" else (
        ["training.bf16=false"] if args.precision == "fp32" else [])
    load_dtype = args.load_dtype or ("bfloat16" if args.gpu else None)
    tunery_precision += [f"model_loading.{key}={value}" for key, value in
                         (("attn_implementation", args.attn), ("dtype", load_dtype)) if value]
    results: dict[str, list[dict]] = {m: [] for m in modes}
    for round_ in range(args.repeat):
        for mode in modes:
            if mode in BASELINE_MODES:
                extra = BASELINE_MODES[mode] + (["--bf16"] if args.gpu and "--bf16" not in BASELINE_MODES[mode] else [])
                argv = ["--child", "baseline", "--", *base_args, *extra]
            elif mode in TRL_MODES:
                argv = ["--child", "trl", "--", *base_args, *TRL_MODES[mode], *([] if bf16 else ["--fp32"])]
            else:
                argv = ["--child", "tunery", "--", config, *tunery_precision, *TUNERY_MODES[mode]]
            result = run_child(argv, env)
            results[mode].append(result)
            print(json.dumps({"round": round_, "mode": mode, **result}), flush=True)
    record["results"] = results
    record["lengths"] = []
    if args.lengths:
        length_config = prepare_lengths(workdir)
        for length in (int(x) for x in args.lengths.split(",")):
            overrides = [o.format(steps=args.length_steps, length=length) for o in LENGTH_OVERRIDES]
            result = {"length": length, **run_child(["--child", "tunery", "--", length_config, *tunery_precision,
                                                     *overrides], env)}
            record["lengths"].append(result)
            print(json.dumps(result), flush=True)
    report(record, args)


def fast_bf16() -> bool:
    from tunery import bf16_default

    return bf16_default()


def prepare_lengths(workdir: Path) -> str:
    """The length-scaling config: tunery's defaults on every sample row (enough to fill 4096-token rows)."""
    config = json.loads((workdir / "tunery.yaml").read_text())
    (workdir / "all.json").write_text(DATA.read_text())
    config["data"]["train"] = [str(workdir / "all.json")]
    config["output_dir"] = str(workdir / "lengths")
    path = workdir / "lengths.yaml"
    path.write_text(json.dumps(config))
    return str(path)


def from_log(path: Path) -> dict:
    """The record printed (one JSON object a line) by an earlier, possibly cut-short, job; several
    logs may be concatenated (the later lines win for the machine figures)."""
    record: dict = {"results": {}, "lengths": []}
    for line in path.read_text().splitlines():
        if not line.startswith("{"):
            continue
        item = json.loads(line)
        if "mode" in item:
            record["results"].setdefault(item.pop("mode"), []).append(item)
        elif "length" in item:
            record["lengths"].append(item)
        else:
            record.update(item)
    return record


def report(record: dict, args) -> None:
    parts = [table(record, args)] if record["results"] else []
    if record.get("lengths"):
        parts.append(length_table(record["lengths"]))
    text = "\n\n".join(parts)
    print(text)
    if args.write:
        write_doc(text, args)


def length_table(rows: list[dict]) -> str:
    """Peak RSS against tokens per batch; the growth per token must not rise with the length."""
    first = rows[0]
    lines = ["Length scaling (tunery defaults, packing, batch 1, no evaluation):", "",
             "| max length | tokens per batch | peak RSS MB | RSS above the first row MB | MB per 1k extra tokens | tok/s |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        tokens = r["real_tokens"] / max(r["steps"], 1)
        extra = r["peak_rss_mb"] - first["peak_rss_mb"]
        more = tokens - first["real_tokens"] / max(first["steps"], 1)
        lines.append(f"| {r['length']} | {tokens:.0f} | {r['peak_rss_mb']:.0f} | {extra:.0f} | "
                     f"{(1000 * extra / more) if more > 0 else 0:.0f} | {r['tokens_per_s']:.1f} |")
    return "\n".join(lines)


def write_doc(text: str, args) -> None:
    import platform

    doc = ROOT / "docs" / "performance.md"
    marker_start, marker_end = "<!-- sft_speed:start -->", "<!-- sft_speed:end -->"
    how = (f"--from-log {Path(args.from_log).name}" if args.from_log
           else " ".join(a for a in sys.argv[1:] if a != "--write"))
    block = (f"{marker_start}\nMeasured by `python benchmarks/sft_speed.py {how} --write` on "
             f"{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s).\n\n"
             f"{text}\n{marker_end}")
    current = doc.read_text() if doc.exists() else f"# Performance\n\n{marker_start}\n{marker_end}\n"
    before, _, rest = current.partition(marker_start)
    _, _, after = rest.partition(marker_end)
    doc.write_text(before + block + after)


if __name__ == "__main__":
    main()
