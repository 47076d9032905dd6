"""Ctrl-C and SIGTERM outside the training loop: the run stops at once, with a clear message.

During training, :class:`tunery.guard.StopOnSignal` takes over (finish the step, save a
checkpoint, stop); before it starts and after it ends, a signal raises :class:`Stopped` (a
KeyboardInterrupt, so no ``except Exception`` swallows it), which the run turns into
:class:`tunery.errors.Interrupted` (exit code 130).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(KeyboardInterrupt):
    """Raised by the handler of :func:`stop_at_once`; ``signal`` is the signal's name."""

    def __init__(self, name: str):
        super().__init__(name)
        self.signal = name


@contextlib.contextmanager
def stop_at_once() -> Iterator[None]:
    """While active, SIGINT and SIGTERM raise :class:`Stopped` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum, frame):
        raise Stopped(signal.Signals(signum).name)

    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    for sig in SIGNALS:
        signal.signal(sig, handle)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
