"""Guarded training: non-finite losses and gradients, Ctrl-C / SIGTERM, out-of-memory batch sizes.

Imported only when a run trains (it loads torch and transformers).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from pathlib import Path
from typing import Any, Callable

import torch
from transformers import TrainerCallback

from .checkpoints import scan
from .errors import TrainingError
from .stopping import Stopped

log = logging.getLogger("tunery")


def last_checkpoint_note(folder: str) -> str:
    complete, _ = scan(Path(folder))
    return f"the last good checkpoint is {complete[-1]}" if complete else "no checkpoint was saved before it"


class NonFiniteGuard(TrainerCallback):
    """Stops the run (``stop``) or drops the update (``skip``) when the loss or the gradient norm of
    a step is not finite, before the optimizer applies it."""

    def __init__(self, policy: str):
        self.policy = policy
        self.bad_loss: float | None = None
        self.skipped: list[int] = []

    def note_loss(self, loss: Any) -> None:
        """Called with each micro-batch loss (the trainer's ``training_step``)."""
        if self.bad_loss is None and not torch.isfinite(loss.detach()).all():
            self.bad_loss = float(loss.detach().float().mean())

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        # with fp16 loss scaling, inf gradients are expected now and then: the scaler skips those steps
        scaled = getattr(args, "fp16", False)
        norm = float(torch.nn.utils.get_total_norm(grads)) if grads and not scaled else 0.0
        problem = (f"the loss is {self.bad_loss}" if self.bad_loss is not None
                   else f"the gradient norm is {norm}" if not torch.isfinite(torch.tensor(norm)) else None)
        self.bad_loss = None
        if problem is None:
            return
        step = state.global_step + 1
        if self.policy == "skip":
            for p in model.parameters():
                p.grad = None  # the optimizer leaves parameters without gradients untouched
            self.skipped.append(step)
            log.warning("step %d skipped: %s (training.on_nonfinite=skip)", step, problem)
            return
        raise TrainingError(
            f"training stopped at step {step}: {problem}; {last_checkpoint_note(args.output_dir)}. "
            "Lower training.learning_rate, check the data, or set training.on_nonfinite=skip to skip such steps"
        )


class StopOnSignal(TrainerCallback):
    """On Ctrl-C or SIGTERM: finish the current step, save a checkpoint, stop. A second signal stops at
    once (raises :class:`tunery.stopping.Stopped`; the run ends with exit code 130 and names the last
    complete checkpoint)."""

    def __init__(self):
        self.received: str | None = None

    @contextlib.contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

        def handle(signum, frame):
            if self.received:
                signal.signal(signum, previous[signum])
                raise Stopped(f"a second {signal.Signals(signum).name} while stopping")
            self.received = signal.Signals(signum).name
            log.warning("%s received: saving a checkpoint after this step, then stopping "
                        "(send it again to stop at once)", self.received)

        for sig in previous:
            signal.signal(sig, handle)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def on_step_end(self, args, state, control, **kwargs):
        if self.received:
            control.should_save = True
            control.should_training_stop = True


def is_out_of_memory(exc: BaseException) -> bool:
    from accelerate.utils.memory import should_reduce_batch_size

    return isinstance(exc, torch.OutOfMemoryError) or should_reduce_batch_size(exc)


def fit_batch_size(model: Any, examples: list[dict], collate: Callable, loss_of: Callable,
                   batch_size: int, grad_accum: int, device: Any) -> tuple[int, int]:
    """The largest per-device batch size (at most ``batch_size``) whose forward and backward on the
    longest examples fit in memory, and the gradient accumulation that keeps the effective batch
    ``batch_size * grad_accum``. Random states are left as they were; no weight changes."""
    effective = batch_size * grad_accum
    from .datastore import lengths

    sizes = lengths(examples)
    longest = [examples[i] for i in sorted(range(len(sizes)), key=lambda i: -sizes[i])[:batch_size]]
    sizes = [d for d in range(batch_size, 0, -1) if effective % d == 0]
    model.to(device)
    for size in sizes:
        try:
            with torch.random.fork_rng():
                batch = {k: v.to(device) for k, v in collate(longest[:size]).items()}
                loss_of(model, batch).backward()
            return size, effective // size
        except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled
            if not is_out_of_memory(exc):
                raise
            log.info("batch size %d does not fit in memory; trying a smaller one", size)
        finally:
            model.zero_grad(set_to_none=True)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    raise TrainingError(
        "out of memory even with batch size 1: lower data.max_length, set training.gradient_checkpointing=true, "
        "or use a quantizer"
    )
