"""Trains from a JSON config and kills its own process with SIGKILL at a chosen point.

Used by test_resume.py as a real crash:  python crash_worker.py CONFIG_JSON POINT STEP
POINT is ``step`` (right after optimizer step STEP, mid-epoch), ``save`` (while checkpoint STEP is
being written: weights on disk, optimizer state not yet) or ``none``.
"""

from __future__ import annotations

import json
import os
import signal
import sys

from tunery import Engine, hookimpl


class Killer:
    """A plugin that SIGKILLs the process at ``point``/``step``; registered (as 'Killer') in
    every run of a crash test, so the resumed run sees the same plugin set."""

    def __init__(self, point: str = "none", step: int = 0):
        self.point, self.step = point, step
        if point == "save":
            from transformers import Trainer

            original = Trainer._save_optimizer_and_scheduler

            def save(trainer, output_dir):
                if trainer.state.global_step == step:
                    os.kill(os.getpid(), signal.SIGKILL)
                original(trainer, output_dir)

            Trainer._save_optimizer_and_scheduler = save

    @hookimpl
    def tunery_log(self, record):
        if self.point == "step" and record.get("step") == self.step and "loss" in record:
            os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)
    config, point, step = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    Engine(plugins=[Killer(point, step)]).train(config)
