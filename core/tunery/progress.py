"""Training progress for people and trackers: a progress bar on a terminal, log lines elsewhere,
and the experiment trackers of ``training.report_to`` (transformers' own integrations)."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any, Callable

from transformers import TrainerCallback

from .errors import ConfigError
from .phases import _duration

log = logging.getLogger("tunery")

TRACKER_EXTRAS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


class Progress(TrainerCallback):
    """A tqdm bar with loss, learning rate, tokens/s and ETA when ``stream`` (default stderr) is a
    terminal; otherwise one log line per logging step (CI, files). ``tokens`` returns the number
    of real tokens trained so far."""

    def __init__(self, tokens: Callable[[], int], stream: Any = None):
        self.tokens = tokens
        self.stream = stream
        self.bar = None
        self.redirect = None
        self.start = time.perf_counter()

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()
        stream = self.stream or sys.stderr
        if state.is_world_process_zero and stream.isatty():
            from tqdm.contrib.logging import logging_redirect_tqdm
            from tqdm.std import tqdm

            self.bar = tqdm(total=state.max_steps, file=stream, unit="step", desc="training", dynamic_ncols=True)
            self.redirect = logging_redirect_tqdm([log])  # log lines print above the bar
            self.redirect.__enter__()

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)
        elif state.global_step == 1 and getattr(args, "logging_steps", 1) > 1 and state.is_world_process_zero:
            log.info("step 1/%s done in %s (a line every %s steps from here)", state.max_steps,
                     _duration(time.perf_counter() - self.start), args.logging_steps)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        elapsed = time.perf_counter() - self.start
        speed = self.tokens() / max(elapsed, 1e-9)
        if self.bar is not None:
            if "loss" in logs:
                self.bar.set_postfix(loss=f"{logs['loss']:.4g}", lr=f"{logs.get('learning_rate', 0):.3g}",
                                     tok_s=f"{speed:.0f}")
            else:  # an evaluation: its numbers go above the bar
                log.info("step %s: %s", state.global_step, _fields(logs))
            return
        eta = ""
        if 0 < state.global_step < state.max_steps:
            eta = f", eta {_duration(elapsed / state.global_step * (state.max_steps - state.global_step))}"
        log.info("step %s/%s: %s, tokens/s=%.0f%s", state.global_step, state.max_steps, _fields(logs), speed, eta)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.redirect.__exit__(None, None, None)
            self.bar = self.redirect = None


def _fields(logs: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in logs.items())


def check_trackers(names: list[str]) -> None:
    """Refuse a tracker transformers does not know, or whose library is not installed."""
    from transformers.integrations import get_available_reporting_integrations
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    available = set(get_available_reporting_integrations())
    for i, name in enumerate(names):
        if name not in INTEGRATION_TO_CALLBACK:
            from .options import closest

            raise ConfigError(f"config key 'training.report_to[{i}]': unknown tracker '{name}'"
                              f"{closest(name, INTEGRATION_TO_CALLBACK)}; known: {', '.join(INTEGRATION_TO_CALLBACK)}")
        if name not in available:
            extra = f"pip install 'tunery[{TRACKER_EXTRAS[name]}]'" if name in TRACKER_EXTRAS else f"install {name}"
            raise ConfigError(f"config key 'training.report_to[{i}]': tracker '{name}' is not installed; {extra}")


def place_tracker_logs(trainer: Any, folder: Path) -> None:
    """TensorBoard event files go to the run folder's ``tensorboard/`` (unless
    ``TENSORBOARD_LOGGING_DIR`` says otherwise)."""
    from transformers.integrations import TensorBoardCallback

    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, TensorBoardCallback) and callback.logging_dir is None:
            callback.logging_dir = str(folder)
