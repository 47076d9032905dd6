"""Saying what a run is doing: a log line when a phase starts and one every 10 s while it lasts
(:func:`phase`), and progress over many items (:func:`track`). Cheap to import: a phase can
start before torch and transformers are imported."""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from typing import Any, Iterable, Iterator

log = logging.getLogger("tunery")
EVERY = 8.0  # seconds of silence before a "still ..." line: a log line at least every 10 s, even on a busy machine


class _LastLine(logging.Filter):
    """Remembers when the tunery logger last wrote a line."""

    at = 0.0

    def filter(self, record):
        _LastLine.at = time.perf_counter()
        return True


@contextlib.contextmanager
def phase(what: str, every: float = EVERY) -> Iterator[None]:
    """Log ``what`` now, then ``still <what> (m:ss)`` whenever the log has been quiet for
    ``every`` seconds until the block ends, so a log never goes silent during a long step that
    reports nothing itself."""
    if not any(isinstance(f, _LastLine) for f in log.filters):
        log.addFilter(_LastLine())
    log.info("%s", what)
    started, stop = time.perf_counter(), threading.Event()

    def beat():
        while not stop.wait(max(0.05, _LastLine.at + every - time.perf_counter())):
            if time.perf_counter() - _LastLine.at >= every:
                log.info("still %s (%s)", what, _duration(time.perf_counter() - started))

    thread = threading.Thread(target=beat, name="tunery-phase", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def track(items: Iterable, total: int | None, what: str, stream: Any = None, every: float = EVERY) -> Iterator:
    """Yield ``items`` while showing progress: a tqdm bar on a terminal, otherwise a log line
    when it starts, then at most one every ``every`` seconds, and one at the end. ``total``
    None: a stream of unknown length (counted, no eta)."""
    stream = stream or sys.stderr
    if stream.isatty():
        from tqdm.std import tqdm

        yield from tqdm(items, total=total, desc=what, file=stream, leave=False, dynamic_ncols=True)
        return
    started = last = time.perf_counter()
    log.info("%s: %s to go", what, "?" if total is None else total)
    done = 0
    for done, item in enumerate(items, 1):
        yield item
        now = time.perf_counter()
        if now - last >= every and total is None:
            last = now
            log.info("%s: %d done", what, done)
        elif now - last >= every and done < total:
            last = now
            log.info("%s: %d/%d, eta %s", what, done, total, _duration((now - started) / done * (total - done)))
    if time.perf_counter() - started >= every:
        log.info("%s: %d done in %s", what, done, _duration(time.perf_counter() - started))


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
