"""The sign-in throttle: repeated failed sign-ins of one user name, or from one address, are slowed down.

One object per app (:attr:`services.review.context.ApiContext.login_throttle`), shared by the sign-in page
(``POST /login``) and the API (``POST /v1/login``): :func:`attempt_login` is the one way both sign in.

In memory, per process. Two keys per try, each with its own limit: the user name (``name:<user>``, after
``max_failures`` failures) and the client address (``addr:<client>``, after :data:`ADDRESS_FACTOR` times as many,
so that junk names sprayed from one address slow that address down long before, but never count against, another
user's name). Past its limit, each further try of a key is refused until ``min(2 ** (failures - limit),
max_delay_s)`` seconds after the key's last failure (429 with ``Retry-After``); a successful sign-in resets the
user name's and the address's count. The address is the TCP peer, or the forwarded address only when the review
API is told to trust its proxy (``review.trusted_proxies``).

Refused tries are not checked against a password. They are audited at most once per key and throttle window (a
``login_failed`` entry, why ``throttled``); the others are counted and the count goes into the next entry about
that name or address (``suppressed``), so that a flood of tries cannot flood the audit log.

At most :data:`MAX_KEYS` keys are kept (the oldest are dropped), so a flood of names cannot exhaust memory.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from rfr.review.users import Principal

MAX_KEYS = 10_000
ADDRESS_FACTOR = 10
"""The per-address limit is this many times the per-name one (``review.login_max_failures``)."""


@dataclass
class _Failures:
    count: int
    last_at: float
    audited_window: float | None = None
    """``last_at`` of the throttle window whose first refusal was audited (one entry per window)."""
    suppressed: int = 0
    """Refused tries not audited one by one, not yet counted in an audit entry."""


@dataclass(frozen=True)
class Refusal:
    """A try refused by the throttle: ``wait_s`` whole seconds to wait; ``audit``: record this one (the first of
    its window), with ``suppressed`` earlier refusals not recorded one by one."""

    wait_s: int
    audit: bool
    suppressed: int = 0


class LoginThrottle:
    """Failed sign-ins per key; ``clock`` is monotonic seconds (injectable for tests)."""

    def __init__(self, max_failures: int, max_delay_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures = max(1, max_failures)
        self.max_delay_s = max_delay_s
        self.clock = clock
        self._failures: OrderedDict[str, _Failures] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def max_address_failures(self) -> int:
        return self.max_failures * ADDRESS_FACTOR

    @staticmethod
    def keys(name: str, address: str) -> tuple[str, str]:
        return f"name:{name.strip().lower()[:256]}", f"addr:{address}"

    def _limit(self, key: str) -> int:
        return self.max_address_failures if key.startswith("addr:") else self.max_failures

    def _delay(self, key: str, failures: _Failures | None) -> float:
        limit = self._limit(key)
        if failures is None or failures.count < limit:
            return 0.0
        delay = min(2.0 ** (failures.count - limit), self.max_delay_s)
        return max(0.0, failures.last_at + delay - self.clock())

    def wait_s(self, name: str, address: str) -> int:
        """Whole seconds to wait before ``name`` may try again from ``address`` (0: go ahead)."""
        with self._lock:
            wait = max(self._delay(k, self._failures.get(k)) for k in self.keys(name, address))
        return math.ceil(wait)

    def refuse(self, name: str, address: str) -> Refusal | None:
        """None when ``name`` may try from ``address`` now; else the :class:`Refusal`, counted: the first refusal
        of a throttle window of the name (or address) is to be audited, the rest are counted as suppressed."""
        with self._lock:
            throttled = []
            for key in self.keys(name, address):
                entry = self._failures.get(key)
                delay = self._delay(key, entry)
                if entry is not None and delay > 0:
                    throttled.append((delay, entry))
            if not throttled:
                return None
            wait = math.ceil(max(delay for delay, _ in throttled))
            if any(entry.audited_window != entry.last_at for _, entry in throttled):
                for _, entry in throttled:
                    entry.audited_window = entry.last_at
                return Refusal(wait, True, self._take(name, address))
            throttled[0][1].suppressed += 1  # the name's when it is throttled, else the address's
            return Refusal(wait, False)

    def _take(self, name: str, address: str) -> int:
        total = 0
        for key in self.keys(name, address):
            entry = self._failures.get(key)
            if entry is not None:
                total += entry.suppressed
                entry.suppressed = 0
        return total

    def take_suppressed(self, name: str, address: str) -> int:
        """Refused tries of ``name`` or from ``address`` not audited yet (now counted by the caller's entry)."""
        with self._lock:
            return self._take(name, address)

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


class LoginUsers(Protocol):
    """What signing in needs of :class:`rfr.review.users.UserStore`."""

    def authenticate(self, name: str, password: str, *, suppressed: int = 0) -> Principal | None: ...

    def login_throttled(self, name: str, retry_after_s: int, suppressed: int = 0) -> None: ...


@dataclass(frozen=True)
class LoginOutcome:
    """The principal signed in, or None: refused by the throttle (``wait_s`` > 0) or a failed try."""

    principal: Principal | None
    wait_s: int = 0


def attempt_login(throttle: LoginThrottle, users: LoginUsers, name: str, password: str,
                  address: str) -> LoginOutcome:
    """One sign-in try of ``name`` from ``address``, through the throttle: refused (no password check) while the
    name or the address is throttled; else checked (audited by ``users``) and counted."""
    refusal = throttle.refuse(name, address)
    if refusal is not None:
        if refusal.audit:
            users.login_throttled(name, refusal.wait_s, refusal.suppressed)
        return LoginOutcome(None, refusal.wait_s)
    if not name or not password:
        throttle.failed(name, address)
        return LoginOutcome(None)
    principal = users.authenticate(name, password, suppressed=throttle.take_suppressed(name, address))
    if principal is None:
        throttle.failed(name, address)
        return LoginOutcome(None)
    throttle.succeeded(name, address)
    return LoginOutcome(principal)
