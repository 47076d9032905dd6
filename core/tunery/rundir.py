"""The run folder and its record, ``tunery-run.json``: what the run wrote, and how it ended.

The record lists every path a run wrote in its folder (files; ``checkpoints/`` and the method's
output folder ``adapter/`` or ``model/`` as wholes) and the run's status (``running``,
``finished``, ``failed`` with the error, ``interrupted``). From it:

* ``--overwrite`` deletes exactly the recorded paths, never anything else (a user's own file in
  ``evaluations/``, a base model in ``model/``);
* a path this run would write that exists but is not recorded (a user's or an older tool's)
  is refused by name, with or without ``--overwrite``;
* a model or data file inside a path that would be deleted is refused;
* a folder whose run left no result and no complete checkpoint (it failed or was stopped early)
  does not block the next run: its recorded files are replaced.

Cheap to import (no heavy libraries).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path, PurePosixPath

from .checkpoints import scan, write_json_durably
from .errors import ConfigError, Interrupted

log = logging.getLogger("tunery")

RECORD = "tunery-run.json"
#: Files a run writes at fixed places of its folder (besides checkpoints/ and its output folder).
FILES = ("config.yaml", "metrics.json", "train_log.jsonl", "manifest.json", "samples.json", "bad_rows.json",
         "report.md", "loss.png", "evaluations/before.json", "evaluations/after.json")
CHECKPOINTS = "checkpoints"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _files_under(folder: Path) -> set[str]:
    """Every file below ``folder`` as a relative POSIX path (symbolic links are not followed)."""
    found = set()
    for root, _, names in os.walk(folder):
        for name in names:
            found.add((Path(root) / name).relative_to(folder).as_posix())
    return found


def _covered(path: str, recorded: set[str]) -> bool:
    """Whether ``path`` is recorded itself or lies in a recorded folder."""
    parts = PurePosixPath(path).parts
    return any("/".join(parts[:i]) in recorded for i in range(1, len(parts) + 1))


def read_record(folder: Path) -> dict | None:
    """The record of the run in ``folder``; None when there is none or it is unreadable."""
    try:
        record = json.loads((Path(folder) / RECORD).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("files"), list):
        return None
    # only plain paths inside the folder count (an edited record cannot point elsewhere)
    record["files"] = [f for f in record["files"] if isinstance(f, str) and f and not PurePosixPath(f).is_absolute()
                       and ".." not in PurePosixPath(f).parts]
    return record


def _inputs(config) -> list[Path]:
    """The local model folder and data paths a run reads (globs: the folder before the pattern)."""
    paths = []
    for spec in [str(config.model), *config.data.train, *config.data.eval]:
        cut = min((spec.find(ch) for ch in "*?[" if ch in spec), default=-1)
        base = Path(os.path.dirname(spec[:cut]) or ".") if cut >= 0 else Path(spec)
        if base.exists():
            paths += [base.absolute(), base.resolve()]
    return paths


def _alive(record: dict) -> bool:
    """Whether the process that wrote ``record`` still runs (on this machine)."""
    if record.get("host") != socket.gethostname() or not isinstance(record.get("pid"), int):
        return False
    if record["pid"] == os.getpid():
        return False
    try:
        os.kill(record["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunFolder:
    """A prepared run folder; :meth:`finish` records how the run ended."""

    def __init__(self, path: Path, recorded: set[str], foreign: set[str]):
        self.path = path
        self.recorded = recorded  # what runs in this folder wrote (or will write: claimed up front)
        self.foreign = foreign    # files here at the start that no run wrote

    @classmethod
    def prepare(cls, config, output: str) -> RunFolder:
        """Check, clean and claim ``config.output_dir`` for a run whose result goes to ``output/``
        (see the module docstring); raises ConfigError naming what is in the way."""
        out = Path(config.output_dir)
        if out.exists() and not out.is_dir():
            raise ConfigError(f"output_dir '{out}' is a file, not a folder")
        if config.resume and config.overwrite:
            raise ConfigError("--resume and --overwrite contradict each other: resuming continues the run in "
                              f"'{out}', overwriting deletes it; drop one of them")
        record = read_record(out)
        recorded = set(record["files"]) | {RECORD} if record else set()
        places = [*FILES, output, CHECKPOINTS]
        if record and record.get("status") == "running" and _alive(record):
            raise ConfigError(f"output_dir '{out}' is in use by a run in progress (process {record['pid']}); "
                              "wait for it to end, or choose another folder")
        if not config.resume:
            present = [p for p in places if (out / p).exists()]
            foreign = [p for p in present if not _covered(p, recorded)]
            if (out / RECORD).exists() and not record:
                foreign.insert(0, RECORD)
            if foreign:
                raise ConfigError(
                    f"output_dir '{out}' holds {', '.join(foreign)}, which no tunery run recorded writing "
                    f"({RECORD} does not list them), and this run writes there; --overwrite never deletes "
                    "such files: move them away, or choose another output_dir"
                )
            results = [p for p in (output, "adapter", "model", "metrics.json") if p in recorded and (out / p).exists()]
            complete, _ = scan(out / CHECKPOINTS)
            if (results or complete) and not config.overwrite:
                held = sorted(set(results)) + ([CHECKPOINTS] if complete else [])
                ended = f" that {record['status']}" if record.get("status") in ("failed", "interrupted") else ""
                resume = (f", --resume to continue it from {complete[-1].name}"
                          if complete and record.get("status") != "finished" else "")
                raise ConfigError(
                    f"output_dir '{out}' already holds a run{ended} ({', '.join(held)}); "
                    f"pass --overwrite (overwrite: true) to replace it{resume}, or choose another folder"
                )
            if record:
                cls._delete(out, recorded - {RECORD}, _inputs(config), config.overwrite, record)
                recorded = {RECORD}
        foreign_now = {f for f in _files_under(out) if not _covered(f, recorded)} if out.is_dir() else set()
        # a resumed run owns the run files already there; a new one claims the places still free
        claimed = recorded | {p for p in places if config.resume or not (out / p).exists()} | {RECORD}
        folder = cls(out, claimed, foreign_now)
        try:
            out.mkdir(parents=True, exist_ok=True)
            folder._write({**(record or {}), "status": "running", "started": _now(), "ended": None, "error": None,
                           "resumed": bool(config.resume), "pid": os.getpid(), "host": socket.gethostname()})
        except OSError as exc:
            raise ConfigError(f"output_dir '{out}' cannot be written: {exc.strerror or exc}") from None
        return folder

    @staticmethod
    def _delete(out: Path, paths: set[str], inputs: list[Path], overwrite: bool, record: dict) -> None:
        """Delete the recorded ``paths`` of the previous run, unless a model or data path lies in one."""
        root = out.resolve()  # the folder's own path resolved, never a recorded link in it
        targets = [root / p for p in sorted(paths) if (root / p).exists() or (root / p).is_symlink()]
        for target in targets:
            for path in inputs:
                if path == target or target in path.parents:
                    raise ConfigError(
                        f"'{path}' is read by this run but lies in '{target}', which "
                        f"{'--overwrite' if overwrite else 'replacing the earlier run'} would delete: "
                        "move the model or data out of the output folder, or choose another output_dir"
                    )
        if overwrite:
            log.info("overwrite: deleting %d path(s) the earlier run wrote in %s", len(targets), out)
        else:
            why = f" ({record['error']})" if record.get("error") else ""
            log.info("output_dir %s holds a run that %s%s with no result and no complete checkpoint; "
                     "replacing it", out, record.get("status", "stopped"), why)
        for target in targets:
            shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink()
        for parent in sorted({t.parent for t in targets}, key=lambda p: -len(p.parts)):
            while parent != root and root in parent.parents:
                try:
                    parent.rmdir()  # only when empty: a user's file keeps its folder
                except OSError:
                    break
                parent = parent.parent

    def _write(self, fields: dict) -> None:
        new = {f for f in _files_under(self.path) if f not in self.foreign}
        # a file inside a recorded folder (checkpoints/, adapter/) is covered by the folder
        fields["files"] = sorted(self.recorded | {f for f in new if not _covered(str(PurePosixPath(f).parent),
                                                                                 self.recorded)})
        self.fields = fields
        write_json_durably(self.path / RECORD, fields)

    def finish(self, error: BaseException | None = None) -> None:
        """Record that the run ended: finished, or failed / interrupted with ``error``'s message."""
        status = "finished" if error is None else "interrupted" if isinstance(error, Interrupted) else "failed"
        message = None if error is None else f"{type(error).__name__}: {error}"
        self.recorded = {p for p in self.recorded if (self.path / p).exists()}
        try:
            self._write({**self.fields, "status": status, "ended": _now(), "error": message})
        except OSError as exc:  # e.g. the disk is full: the run's own error matters more
            log.warning("could not record the end of the run in %s: %s", self.path / RECORD, exc)


def keep_log_until(log_file: Path, step: int) -> None:
    """Drop the records of ``train_log.jsonl`` after ``step``: a resumed run trains them again."""
    if not log_file.is_file():
        return
    kept = []
    for line in log_file.read_text().splitlines(keepends=True):
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line)
        except (ValueError, AttributeError):
            continue  # a last line cut short by a kill
    tmp = log_file.with_name(f".{log_file.name}.tmp")
    tmp.write_text("".join(kept))
    os.replace(tmp, log_file)
