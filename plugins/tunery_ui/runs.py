"""Runs as the UI sees them: read from the run folders, plus a small pid file per launch.

A run the UI starts is ``python -m tunery.cli train CONFIG`` in its own process (its own session,
so stopping the UI does not stop it); its output goes to ``tunery-ui.log`` and its pid, command
and, once it ends, exit code to ``tunery-ui.json`` in the run folder. Everything the pages show
is read back from those files, so reloading the page or restarting the UI loses nothing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

PID_FILE = "tunery-ui.json"
LOG_FILE = "tunery-ui.log"
CONFIG_FILE = "tunery-ui.yaml"
STOPPED_EXIT = 130  # tunery's exit code after Ctrl-C / SIGTERM (a checkpoint is saved first)


@dataclasses.dataclass
class RunState:
    """What a run folder says about its run."""

    path: Path
    status: str  # running, finished, failed, stopped, incomplete
    error: str | None = None  # the one-line error of a failed or stopped run
    resume_point: str | None = None  # the newest complete checkpoint of a stopped run
    step: int | None = None
    total_steps: int | None = None
    started: float | None = None

    @property
    def name(self) -> str:
        return self.path.name

    def summary(self) -> str:
        """One line: status, progress, error or resume point."""
        text = self.status
        if self.step is not None:
            text += f" · step {self.step}" + (f" of {self.total_steps}" if self.total_steps else "")
        if self.error:
            text += f" · {self.error}"
        if self.status in ("stopped", "incomplete") and not (self.resume_point and self.resume_point in text):
            text += f" · resume point: {self.resume_point}" if self.resume_point else " · no checkpoint to resume from"
        return text


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


RECORD = "tunery-run.json"  # what tunery itself records of a run: status, error, pid


def is_run(path: Path) -> bool:
    return path.is_dir() and any((path / name).is_file() for name in ("config.yaml", PID_FILE, RECORD))


def list_runs(folder: str | Path) -> list[Path]:
    """Run folders directly under ``folder``, newest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    runs = [p for p in folder.iterdir() if is_run(p)]
    return sorted(runs, key=lambda p: _mtime(p), reverse=True)


def _mtime(path: Path) -> float:
    stamps = [(path / n).stat().st_mtime for n in (PID_FILE, "config.yaml") if (path / n).exists()]
    return max(stamps, default=path.stat().st_mtime)


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) tunery process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z" and b"tunery" in cmdline


LAUNCH_MARK = "\n$ "  # launch() writes the command line before each start


def log_of_last_launch(path: Path, size: int = 65536) -> str:
    """The end of the run's output since it was last started (or resumed) from the UI."""
    try:
        with open(path / LOG_FILE, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - size))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return text.rsplit(LAUNCH_MARK, 1)[-1]


def last_error(log_text: str) -> str | None:
    """The CLI's one-line ``error: ...`` message in a run's output, if any."""
    errors = [line[len("error: "):] for line in log_text.splitlines() if line.startswith("error: ")]
    return errors[-1] if errors else None


def progress(log_text: str) -> tuple[int | None, int | None]:
    """The last ``step N/M`` of the training log lines."""
    found = re.findall(r"step (\d+)/(\d+)", log_text)
    return (int(found[-1][0]), int(found[-1][1])) if found else (None, None)


def resume_point(path: Path) -> str | None:
    from tunery import scan_checkpoints

    complete, _ = scan_checkpoints(path / "checkpoints")
    return str(complete[-1]) if complete else None


def state(path: str | Path) -> RunState:
    """The status of the run in ``path``."""
    path = Path(path)
    meta = read_json(path / PID_FILE) or {}
    log_text = log_of_last_launch(path)
    step, total = progress(log_text)
    started = meta.get("started")
    pid, code = meta.get("pid"), meta.get("returncode")
    if pid and code is None and _alive(pid):
        records = train_log(path)
        return RunState(path, "running", step=step if step is not None else (records[-1]["step"] if records else None),
                        total_steps=total, started=started)
    finished = (path / "metrics.json").is_file()
    error = last_error(log_text)
    if finished and (code in (0, None)) and not (meta and error):
        metrics = read_json(path / "metrics.json") or {}
        return RunState(path, "finished", step=(metrics.get("train") or {}).get("steps"), started=started)
    if code == STOPPED_EXIT or (error and "training stopped by" in error):
        return RunState(path, "stopped", error, resume_point(path), step, total, started)
    if isinstance(code, int) and code < 0:
        why = f"killed by {signal.Signals(-code).name}" if -code in signal.Signals._value2member_map_ else f"killed ({code})"
        return RunState(path, "stopped", why, resume_point(path), step, total, started)
    if error or code:
        return RunState(path, "failed", error or f"exit code {code}; see {path / LOG_FILE}", None, step, total, started)
    if meta:
        return RunState(path, "failed", f"the training process ended without a result; see {path / LOG_FILE}",
                        None, step, total, started)
    record = read_json(path / RECORD) or {}  # a run started elsewhere (the CLI): tunery's own record
    error = (record.get("error") or "").split(": ", 1)[-1] or None
    if record.get("status") == "running" and record.get("pid") and _alive(record["pid"]):
        records = train_log(path)
        return RunState(path, "running", step=records[-1]["step"] if records else None)
    if record.get("status") == "interrupted":
        return RunState(path, "stopped", error, resume_point(path))
    if record.get("status") == "failed":
        return RunState(path, "failed", error)
    return RunState(path, "incomplete", "no metrics.json (started outside the UI, or still running there)",
                    resume_point(path), step, total, started)


# ---------------------------------------------------------------------- what a run wrote


def train_log(path: Path) -> list[dict]:
    """The records of ``train_log.jsonl`` (a line being written is skipped)."""
    records = []
    try:
        lines = (path / "train_log.jsonl").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def curves(records: list[dict]) -> dict[str, list[tuple[int, float, str]]]:
    """(step, value, series) points of the loss, learning-rate and tokens/s curves."""
    out: dict[str, list] = {"loss": [], "learning_rate": [], "tokens_per_s": []}
    for r in records:
        step = r.get("step")
        if "loss" in r:
            out["loss"].append((step, r["loss"], "train"))
        if "eval_loss/loss" in r:
            out["loss"].append((step, r["eval_loss/loss"], "eval"))
        for key in ("learning_rate", "tokens_per_s"):
            if key in r and "loss" in r:
                out[key].append((step, r[key], key))
    return out


def numbers(mapping: dict | None) -> dict[str, float]:
    return {k: v for k, v in (mapping or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as ``{"a.b": value}``; lists stay whole."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def config_of(path: Path) -> dict:
    import yaml

    for name in ("config.yaml", CONFIG_FILE):
        if (path / name).is_file():
            return yaml.safe_load((path / name).read_text()) or {}
    return {}


def is_reward_run(path: Path) -> bool:
    task = (read_json(path / "manifest.json") or {}).get("task") or {}
    return task.get("model") == "classification" and task.get("num_labels") == 1


# ---------------------------------------------------------------------- processes


def launch(run_dir: Path, args: list[str]) -> int:
    """Start ``python -m tunery.cli train ARGS`` for ``run_dir``; returns its pid.

    The process gets its own session; a thread records its exit code in the pid file."""
    run_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "tunery.cli", "train", *args]
    log = open(run_dir / LOG_FILE, "ab")
    log.write(f"{LAUNCH_MARK}{' '.join(command)}\n".encode())
    log.flush()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            env=env, start_new_session=True)
    log.close()
    meta = {"pid": proc.pid, "command": command, "started": time.time()}
    _write_meta(run_dir, meta)

    def reap():
        code = proc.wait()
        _write_meta(run_dir, {**meta, "returncode": code, "ended": time.time()})

    threading.Thread(target=reap, name=f"tunery-ui-reap-{proc.pid}", daemon=True).start()
    return proc.pid


def _write_meta(run_dir: Path, meta: dict) -> None:
    tmp = run_dir / f".{PID_FILE}.tmp"
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, run_dir / PID_FILE)


def start(run_dir: Path, config_yaml: str) -> int:
    """Write the form's config into the run folder and train it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / LOG_FILE).unlink(missing_ok=True)
    (run_dir / CONFIG_FILE).write_text(config_yaml)
    return launch(run_dir, [str(run_dir / CONFIG_FILE)])


def resume(run_dir: Path) -> int:
    """``tunery train RUN/config.yaml --resume`` (overwrite off: resuming continues the run)."""
    return launch(run_dir, [str(run_dir / "config.yaml"), "--resume", "--set", "overwrite=false"])


def stop(run_dir: Path) -> bool:
    """Send SIGTERM to the run's training process: tunery saves a checkpoint and exits 130."""
    meta = read_json(run_dir / PID_FILE) or {}
    pid = meta.get("pid")
    if not pid or meta.get("returncode") is not None or not _alive(pid):
        return False
    os.kill(pid, signal.SIGTERM)
    return True
