"""Stops runs on the event loop's thread that go on far longer than runs of that model do."""

from __future__ import annotations

import threading
import time
from typing import Protocol

__all__ = ["RunWatchdog", "Stoppable"]


class Stoppable(Protocol):
    """What the watchdog stops: onnxruntime's ``RunOptions`` of one run."""

    terminate: bool


class RunWatchdog:
    """A thread that ends the watched run (``terminate``) once it has gone on for ``limit``
    seconds; whoever ran it then runs it again where it may take its time.

    A run on the event loop's thread holds up every connection, health checks included, so it
    must stay short; one that does not (an outsized input) is stopped and moved rather than
    left blocking. Watching costs the event loop no system call per run: the thread sleeps on
    an event only while nothing is watched, and is woken by the first run after that.
    """

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.current: tuple[float, Stoppable] | None = None
        """The watched run's deadline and options; written by the event loop only."""
        self.awake = threading.Event()
        self.closed = False
        self.thread: threading.Thread | None = None

    def watch(self, run: Stoppable) -> None:
        """Watch ``run`` from now until :meth:`done`."""
        self.current = (time.monotonic() + self.limit, run)
        if not self.awake.is_set():
            if self.thread is None:
                self.thread = threading.Thread(target=self._watch, name="run-watchdog", daemon=True)
                self.thread.start()
            self.awake.set()

    def done(self) -> None:
        self.current = None

    def close(self) -> None:
        self.closed = True
        self.awake.set()

    def _watch(self) -> None:
        while not self.closed:
            current = self.current
            if current is None:
                self.awake.clear()
                if self.current is None:  # checked again: a run may have begun meanwhile
                    self.awake.wait()
                continue
            deadline, run = current
            remaining = deadline - time.monotonic()
            if remaining <= 0 and self.current is current:
                run.terminate = True
            time.sleep(max(remaining, self.limit / 4))
