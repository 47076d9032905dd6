"""Safe checkpoints and exact resume.

A checkpoint is ``checkpoints/checkpoint-<step>/``: what ``transformers.Trainer`` writes
(weights as safetensors, optimizer, scheduler, RNG and trainer state) plus
``tunery-manifest.json`` (config, data hashes, base-model fingerprint, plugins used, progress
counters). It is written under a temporary name inside ``checkpoints/``, flushed to disk, renamed,
and only then marked complete with ``tunery-complete.json`` (size and sha256 of every file). A
folder without the marker is never resumed from; one whose files no longer match their hashes is
refused by name; old checkpoints are deleted (``training.save_total_limit``) only once the new one
is complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

from .errors import ResumeError, TrainingError

log = logging.getLogger("tunery")

COMPLETE = "tunery-complete.json"
MANIFEST = "tunery-manifest.json"
PATTERN = re.compile(r"^checkpoint-(\d+)$")
STAGING = ".writing-"
#: Config keys that steer the run but do not change what is trained; resuming ignores them.
CONTROL_KEYS = ("output_dir", "overwrite", "resume", "resume_force", "training.save_steps",
                "training.save_total_limit")


# ----------------------------------------------------------------------------- on disk


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """Flush every file under ``folder`` and the folders themselves to disk."""
    for root, _, files in os.walk(folder):
        for name in files:
            _fsync(Path(root) / name)
        _fsync(Path(root))


def write_json_durably(path: Path, value: Any) -> None:
    """Write ``value`` as JSON to ``path`` via a temporary file, fsync and rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(value, f, indent=2, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync(path.parent)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def step_of(path: Path) -> int | None:
    match = PATTERN.match(path.name)
    return int(match.group(1)) if match else None


def is_complete(path: Path) -> bool:
    """Whether ``path`` is a checkpoint whose marker was written and whose files all have their sizes."""
    marker = path / COMPLETE
    try:
        files = json.loads(marker.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return all((path / name).is_file() and (path / name).stat().st_size == size for name, size in files.items())


def scan(folder: Path) -> tuple[list[Path], list[Path]]:
    """Complete checkpoints (oldest first) and incomplete ones (half-written, unmarked) in ``folder``."""
    if not folder.is_dir():
        return [], []
    complete, broken = [], []
    for path in sorted(folder.iterdir(), key=lambda p: (step_of(p) or -1, p.name)):
        if not path.is_dir():
            continue
        if step_of(path) is not None and is_complete(path):
            complete.append(path)
        elif step_of(path) is not None or path.name.startswith(STAGING):
            broken.append(path)
    return complete, broken


scan_checkpoints = scan  # the public name (``tunery.scan_checkpoints``): complete and broken checkpoints of a folder


def commit(staged: Path, final: Path, manifest: dict, limit: int | None, keep: str | None = None) -> None:
    """Make the checkpoint written in ``staged`` the complete checkpoint ``final``.

    Order: manifest, fsync of every file, rename, marker (fsync'd), then rotation (which never
    deletes ``keep``, the best checkpoint so far)."""
    write_json_durably(staged / MANIFEST, manifest)
    fsync_tree(staged)
    if final.exists():  # a stale or incomplete folder of the same step (e.g. after a crash)
        shutil.rmtree(final)
    os.replace(staged, final)
    _fsync(final.parent)
    files = [p for p in sorted(final.rglob("*")) if p.is_file()]
    write_json_durably(final / COMPLETE, {
        "step": step_of(final),
        "files": {str(p.relative_to(final)): p.stat().st_size for p in files},
        "sha256": {str(p.relative_to(final)): sha256_of(p) for p in files},
    })
    if limit:
        complete, _ = scan(final.parent)
        for old in complete[:-limit]:
            if keep and old == Path(keep):
                continue
            log.info("deleting old checkpoint %s (training.save_total_limit=%d)", old, limit)
            shutil.rmtree(old, ignore_errors=True)


class SafeCheckpoints:
    """Trainer mixin: checkpoints are staged, flushed, renamed and marked (see the module docstring).

    The trainer needs ``tunery_manifest`` (a dict) set before training."""

    tunery_manifest: dict = {}
    _staging: str | None = None

    def tunery_progress(self) -> dict:
        """The run's counters, saved with the manifest (the trainer of a run fills them in)."""
        return {}

    def _get_output_dir(self, trial):
        return self._staging or super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial):
        run_dir = Path(super()._get_output_dir(trial))
        step = self.state.global_step
        final = run_dir / f"checkpoint-{step}"
        staging = run_dir / f"{STAGING}{step}"
        try:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            self._staging = str(staging)
            try:
                super()._save_checkpoint(model, trial)  # writes staging/checkpoint-<step>
            finally:
                self._staging = None
            staged = staging / final.name
            if self.state.best_model_checkpoint and Path(self.state.best_model_checkpoint) == staged:
                self.state.best_model_checkpoint = str(final)  # this step is the best: point at its final name
                self.state.save_to_json(str(staged / "trainer_state.json"))
            commit(staged, final, {**self.tunery_manifest, "step": step, "progress": self.tunery_progress()},
                   self.args.save_total_limit,
                   keep=self.state.best_model_checkpoint)
            shutil.rmtree(staging, ignore_errors=True)
        except KeyboardInterrupt:  # stopped at once (a second signal): leave no half-written checkpoint
            shutil.rmtree(staging, ignore_errors=True)
            raise
        except Exception as exc:  # noqa: BLE001 - disk full, permissions...: torch, safetensors and os differ
            complete, _ = scan(run_dir)
            shutil.rmtree(staging, ignore_errors=True)
            last = f"the last complete checkpoint is {complete[-1]}" if complete else "no earlier checkpoint exists"
            raise TrainingError(
                f"could not save the checkpoint of step {step} in {run_dir}: {getattr(exc, 'strerror', None) or exc}; {last} "
                "(free disk space or fix the folder's permissions, then resume with --resume)"
            ) from exc


def damage(path: Path) -> str | None:
    """What is wrong with the complete checkpoint ``path`` (a file whose sha256 differs from the
    one recorded at save time, an unreadable trainer_state.json), or None when it is intact."""
    try:
        hashes = json.loads((path / COMPLETE).read_text()).get("sha256") or {}
    except (OSError, ValueError, AttributeError):
        return f"its {COMPLETE} is unreadable"
    for name, digest in sorted(hashes.items()):
        if not (path / name).is_file():
            return f"{name} is missing"
        if sha256_of(path / name) != digest:
            return f"{name} is not the file saved there (its sha256 differs from the one in {COMPLETE})"
    if not hashes:
        log.warning("checkpoint %s records no content hashes (saved by an older tunery): only sizes are checked", path)
    try:
        json.loads((path / "trainer_state.json").read_text())
    except (OSError, ValueError) as exc:
        return f"trainer_state.json is not valid JSON ({exc})"
    return None


def _refuse_damaged(path: Path, problem: str, complete: list[Path]) -> ResumeError:
    earlier = [p for p in complete if (step_of(p) or 0) < (step_of(path) or 0)]
    good = next((p for p in reversed(earlier) if damage(p) is None), None)
    hint = (f"the previous good checkpoint is {good}: resume from it with --resume {good}" if good
            else "no earlier checkpoint is intact: start again with --overwrite")
    return ResumeError(f"cannot resume from {path}: {problem}; {hint}")


# ----------------------------------------------------------------------------- base model

#: Files of a model folder that loading reads (weights, config, tokenizer, chat template, code).
MODEL_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".json", ".txt", ".jinja", ".model",
                  ".tiktoken", ".py", ".msgpack", ".h5")
#: A run's own JSON files, for a run folder that is also the model folder.
NOT_MODEL_FILES = ("metrics.json", "manifest.json", "samples.json", "bad_rows.json", "tunery-run.json")
SAMPLED_ABOVE = 64 << 20  # bytes
SAMPLES = 16  # blocks of 1 MiB


def _file_fingerprint(path: Path) -> str:
    """sha256 of the file; above 64 MiB, of its size and 16 blocks of 1 MiB spread over it (first
    and last included): a replaced or re-trained weight file differs in all of them."""
    size = path.stat().st_size
    if size <= SAMPLED_ABOVE:
        return sha256_of(path)
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        for i in range(SAMPLES):
            f.seek((size - (1 << 20)) * i // (SAMPLES - 1))
            h.update(f.read(1 << 20))
    return "sampled:" + h.hexdigest()


def model_fingerprint(folder: str | os.PathLike) -> dict[str, str]:
    """Fingerprint of each file of a model folder that loading reads (see ``MODEL_SUFFIXES``)."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    return {p.name: _file_fingerprint(p) for p in sorted(folder.iterdir())
            if p.is_file() and p.suffix in MODEL_SUFFIXES and p.name not in NOT_MODEL_FILES}


# ----------------------------------------------------------------------------- resume


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def differences(saved: dict, current: dict) -> list[str]:
    """What differs between a checkpoint's manifest and this run's, one phrase per change."""
    changes = []
    old_cfg, new_cfg = _flatten(saved.get("config", {})), _flatten(current.get("config", {}))
    for key in sorted(set(old_cfg) | set(new_cfg)):
        if key in CONTROL_KEYS or old_cfg.get(key) == new_cfg.get(key):
            continue
        changes.append(f"config key '{key}' was {old_cfg.get(key)!r}, now {new_cfg.get(key)!r}")
    old_data, new_data = saved.get("data", {}), current.get("data", {})
    for split in sorted(set(old_data) | set(new_data)):
        before = {d["file"]: d["sha256"] for d in old_data.get(split, [])}
        after = {d["file"]: d["sha256"] for d in new_data.get(split, [])}
        for name in sorted(set(before) | set(after)):
            if name not in after:
                changes.append(f"{split} data file '{name}' is gone")
            elif name not in before:
                changes.append(f"{split} data file '{name}' is new")
            elif before[name] != after[name]:
                changes.append(f"{split} data file '{name}' changed (sha256 differs)")
    old_model, new_model = saved.get("model_files") or {}, current.get("model_files") or {}
    for name in sorted(set(old_model) | set(new_model)):
        if name not in new_model:
            changes.append(f"base model file '{name}' is gone")
        elif name not in old_model:
            changes.append(f"base model file '{name}' is new")
        elif old_model[name] != new_model[name]:
            changes.append(f"base model file '{name}' changed (its fingerprint differs)")
    old_plugins, new_plugins = saved.get("plugins_used", {}), current.get("plugins_used", {})
    for name in sorted(set(old_plugins) | set(new_plugins)):
        if name not in new_plugins:
            changes.append(f"plugin '{name}' is no longer loaded")
        elif name not in old_plugins:
            changes.append(f"plugin '{name}' is newly loaded")
        elif old_plugins[name] != new_plugins[name]:
            changes.append(f"plugin '{name}' changed version {old_plugins[name]} -> {new_plugins[name]}")
    return changes


def saved_progress(checkpoint: Path) -> dict:
    """The run's counters (tokens, seconds, loss sum, skipped steps, evaluations) saved in ``checkpoint``."""
    return json.loads((Path(checkpoint) / MANIFEST).read_text()).get("progress") or {}


def resume_point(spec: str | None, folder: Path, current: dict, force: bool) -> Path | None:
    """The checkpoint to resume from: ``auto`` = newest complete one in ``folder`` (None when there
    is none yet), else the folder ``spec``. Refuses incomplete or damaged checkpoints (naming the
    previous good one), and a changed config, data, base model or plugin unless ``force``."""
    if not spec:
        return None
    complete, broken = scan(folder)
    for path in broken:
        log.warning("ignoring incomplete checkpoint %s (no %s: the save was interrupted)", path, COMPLETE)
    if spec == "auto":
        if not complete:
            log.info("resume: no complete checkpoint in %s yet; starting from the beginning", folder)
            return None
        path = complete[-1]
    else:
        path = Path(spec)
        if not path.is_dir():
            raise ResumeError(f"config key 'resume': checkpoint folder '{path}' does not exist")
        if not is_complete(path):
            hint = f"; the newest complete one is {complete[-1]}" if complete else ""
            raise ResumeError(
                f"config key 'resume': '{path}' is not a complete tunery checkpoint (no valid {COMPLETE}: "
                f"its save was interrupted or it was not written by tunery){hint}"
            )
    problem = damage(path)
    if problem:
        raise _refuse_damaged(path, problem, complete)
    try:
        saved = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise _refuse_damaged(path, f"its {MANIFEST} is unreadable ({exc})", complete) from None
    changes = differences(saved, current)
    if changes and not force:
        raise ResumeError(
            f"cannot resume from {path}: " + "; ".join(changes)
            + ". Restore the original setup, or pass --force-resume (resume_force: true) to resume anyway"
        )
    for change in changes:
        log.warning("resuming from %s although %s", path, change)
    log.info("resuming from %s (step %s)", path, step_of(path))
    return path
