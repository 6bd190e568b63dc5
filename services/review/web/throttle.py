"""The sign-in throttle: repeated failed sign-ins of one user name, or from one address, are slowed down.

In memory, per process. After ``max_failures`` failures of a key (``name:<user>`` or ``addr:<client>``), each
further try is refused until ``min(2 ** (failures - max_failures), max_delay_s)`` seconds after the last failure
(the page answers 429 with ``Retry-After``); a successful sign-in resets the user name's and the address's count.
At most :data:`MAX_KEYS` keys are kept (the oldest are dropped), so a flood of names cannot exhaust memory.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

MAX_KEYS = 10_000


@dataclass
class _Failures:
    count: int
    last_at: float


class LoginThrottle:
    """Failed sign-ins per key; ``clock`` is monotonic seconds (injectable for tests)."""

    def __init__(self, max_failures: int, max_delay_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures = max(1, max_failures)
        self.max_delay_s = max_delay_s
        self.clock = clock
        self._failures: OrderedDict[str, _Failures] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def keys(name: str, address: str) -> tuple[str, str]:
        return f"name:{name.strip().lower()[:256]}", f"addr:{address}"

    def _delay(self, failures: _Failures | None) -> float:
        if failures is None or failures.count < self.max_failures:
            return 0.0
        delay = min(2.0 ** (failures.count - self.max_failures), self.max_delay_s)
        return max(0.0, failures.last_at + delay - self.clock())

    def wait_s(self, name: str, address: str) -> int:
        """Whole seconds to wait before ``name`` may try again from ``address`` (0: go ahead)."""
        with self._lock:
            wait = max(self._delay(self._failures.get(k)) for k in self.keys(name, address))
        return math.ceil(wait)

    def failed(self, name: str, address: str) -> None:
        now = self.clock()
        with self._lock:
            for key in self.keys(name, address):
                entry = self._failures.pop(key, None) or _Failures(0, now)
                entry.count += 1
                entry.last_at = now
                self._failures[key] = entry
            while len(self._failures) > MAX_KEYS:
                self._failures.popitem(last=False)

    def succeeded(self, name: str, address: str) -> None:
        with self._lock:
            for key in self.keys(name, address):
                self._failures.pop(key, None)
