"""Real crashes for the resume tests: a forked child process trains and is killed at a chosen point.

The child is forked from the test process (torch, transformers and peft are already imported, so a
crash costs a second, not a fresh interpreter) and kills itself with a real signal:

* ``step``: SIGKILL right after optimizer step STEP (mid-epoch);
* ``save``: SIGKILL while checkpoint STEP is being written (weights on disk, optimizer state not yet);
* ``term``: SIGTERM after step STEP (tunery saves a checkpoint and stops);
* ``term2``: SIGTERM after step STEP, and a second one while the checkpoint of step STEP+1 is written;
* ``start``: SIGTERM as the run starts, before training;
* ``none``: no crash.
"""

from __future__ import annotations

import os
import signal

from tunery import Engine, TuneryError, hookimpl


class Killer:
    """A plugin that kills its process at ``point``/``step``; registered (as 'Killer') in every run
    of a crash test, so the resumed run sees the same plugin set."""

    def __init__(self, point: str = "none", step: int = 0):
        self.point, self.step = point, step

    @hookimpl
    def tunery_log(self, record):
        if record.get("step") == self.step and "loss" in record and self.point in ("step", "term", "term2"):
            os.kill(os.getpid(), signal.SIGKILL if self.point == "step" else signal.SIGTERM)

    @hookimpl
    def tunery_run_start(self):
        if self.point == "start":
            os.kill(os.getpid(), signal.SIGTERM)


def crash(config: dict, point: str, step: int, stderr_path: str) -> int:
    """Train ``config`` in a forked child that crashes at ``point``; returns its exit code, or minus
    the signal that killed it. The child's stderr goes to ``stderr_path``."""
    pid = os.fork()
    if pid:
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)
    code = 99
    try:
        fd = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fd, 2)
        if point in ("save", "term2"):
            from transformers import Trainer

            original = Trainer._save_optimizer_and_scheduler

            def save(trainer, output_dir):
                if point == "save" and trainer.state.global_step == step:
                    os.kill(os.getpid(), signal.SIGKILL)
                if point == "term2" and trainer.state.global_step == step + 1:
                    os.kill(os.getpid(), signal.SIGTERM)
                original(trainer, output_dir)

            Trainer._save_optimizer_and_scheduler = save
        Engine(plugins=[Killer(point, step)]).train(config)
        code = 0
    except TuneryError as exc:
        os.write(2, f"error: {exc}\n".encode())
        code = exc.exit_code
    except BaseException as exc:  # noqa: BLE001 - a forked child must never return into pytest
        os.write(2, f"unexpected {type(exc).__name__}: {exc}\n".encode())
    finally:
        os._exit(code)
