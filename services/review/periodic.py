"""A task run every so often in a daemon thread: the outbox publisher, retention, audit checkpoints, gauges."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)


class Periodic:
    """Runs ``task`` in a thread of its own: first ``first_delay_s`` after :meth:`start`, then every
    ``interval_s`` (measured from the end of a run), and at once on :meth:`wake`. A run that raises is logged and
    does not stop the schedule. :meth:`stop` ends the thread after the run in hand (``final`` runs once more
    afterwards, in the caller's thread)."""

    def __init__(self, name: str, task: Callable[[], object], interval_s: float, first_delay_s: float = 0.0,
                 final: Callable[[], object] | None = None) -> None:
        self.name = name
        self.task = task
        self.interval_s = interval_s
        self.first_delay_s = first_delay_s
        self.final = final
        self.runs = 0
        self.failures = 0
        self.next_run_monotonic: float | None = None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"review-{name}", daemon=True)

    def start(self) -> Periodic:
        self._thread.start()
        return self

    def wake(self) -> None:
        """Run the task as soon as the run in hand (if any) is over."""
        self._wake.set()

    def seconds_to_next(self) -> float | None:
        """Seconds until the next scheduled run (0 when due), None when stopped or not started."""
        if self.next_run_monotonic is None:
            return None
        return max(0.0, self.next_run_monotonic - time.monotonic())

    def run_once(self) -> bool:
        """One run of the task now, in the caller's thread; False when it raised (logged)."""
        try:
            self.task()
        except Exception:
            self.failures += 1
            logger.exception("%s failed; it runs again in %.0fs", self.name, self.interval_s)
            return False
        self.runs += 1
        return True

    def _loop(self) -> None:
        delay = self.first_delay_s
        while not self._stopping.is_set():
            self.next_run_monotonic = time.monotonic() + delay
            self._wake.wait(delay)
            self._wake.clear()
            if self._stopping.is_set():
                break
            self.run_once()
            delay = self.interval_s
        self.next_run_monotonic = None

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop the schedule, wait for the run in hand, then run ``final`` (if any) once."""
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                logger.warning("%s did not stop within %.0fs", self.name, timeout_s)
                return
        if self.final is not None:
            try:
                self.final()
            except Exception:
                logger.exception("%s: the last run at shutdown failed", self.name)
