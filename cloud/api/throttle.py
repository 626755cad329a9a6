"""Login defences: a throttle per client address and per account, and a bound on argon2.

Each wrong password counts against the client's address and against the account name. Past
``max_failures`` within ``window_s`` the next attempts are refused with 429 and Retry-After
*before* any password is hashed; the wait doubles with every further failure (capped), and a
quiet window forgets the count. A success clears the account's count (not the address's: an
attacker logging into their own account between guesses must not reset their address).

The state is in memory, per API process: behind a load balancer with N processes an attacker
gets at most N times the budget, still bounded; a restart forgets it. The first refusal of a
burst logs ``login_throttled`` (WARNING) and counts ``rig_login_throttled_total{scope}``, which
deploy/cloud/prometheus/alerts.yml can alert on; every failure counts
``rig_login_failures_total``.

argon2 verification (64 MiB, ~50 ms of CPU) runs in a worker thread under an asyncio
semaphore and outside any database connection (cloud/api/routers/auth.py), so a flood of
guesses neither exhausts memory nor holds the pool that every other endpoint needs.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from prometheus_client import Counter

from cloud.api.errors import ApiError
from shared.logs import log_event

log = logging.getLogger("rig-cloud.auth")

LOGIN_FAILURES = Counter("rig_login_failures", "Wrong user name or password at login")
LOGIN_THROTTLED = Counter(
    "rig_login_throttled",
    "Bursts of failed logins that started refusing with 429 (scope: ip or account)",
    ["scope"],
)
LOGIN_REFUSED = Counter(
    "rig_login_refused", "Login attempts answered 429 without checking the password", ["scope"]
)

# Entries kept per scope before expired ones are pruned (and, if still full, the oldest).
_MAX_ENTRIES = 100_000


@dataclass(slots=True)
class _Entry:
    failures: int = 0
    last_failure: float = 0.0
    blocked_until: float = 0.0


@dataclass
class _Scope:
    name: str
    max_failures: int
    entries: dict[str, _Entry] = field(default_factory=dict)


class LoginThrottle:
    """Failure counts per client address and per account; ``retry_after`` says how long a new
    attempt must wait (0: go ahead)."""

    def __init__(
        self,
        max_failures_ip: int,
        max_failures_account: int,
        *,
        window_s: float = 900.0,
        base_delay_s: float = 1.0,
        max_delay_s: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ip = _Scope("ip", max_failures_ip)
        self.account = _Scope("account", max_failures_account)
        self.window_s = window_s
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.clock = clock
        # Called from the event loop only, but cheap to make safe for threads too.
        self._lock = threading.Lock()

    def _scopes(self, ip: str, account: str) -> list[tuple[_Scope, str]]:
        # Account names are case-folded: "Admin" and "admin" share one budget.
        return [(self.ip, ip), (self.account, account.lower())]

    def retry_after(self, ip: str, account: str) -> tuple[float, str | None]:
        """(seconds to wait, the scope that refuses) — (0, None) when an attempt may go on."""
        now = self.clock()
        worst: tuple[float, str | None] = (0.0, None)
        with self._lock:
            for scope, key in self._scopes(ip, account):
                entry = scope.entries.get(key)
                if entry is not None and entry.blocked_until > now:
                    wait = entry.blocked_until - now
                    if wait > worst[0]:
                        worst = (wait, scope.name)
        if worst[1] is not None:
            LOGIN_REFUSED.labels(worst[1]).inc()
        return worst

    def failed(self, ip: str, account: str) -> None:
        now = self.clock()
        LOGIN_FAILURES.inc()
        with self._lock:
            for scope, key in self._scopes(ip, account):
                entry = scope.entries.get(key)
                if entry is None or now - entry.last_failure > self.window_s:
                    entry = _Entry()
                    self._prune(scope, now)
                    scope.entries[key] = entry
                entry.failures += 1
                entry.last_failure = now
                over = entry.failures - scope.max_failures
                if over >= 0:
                    delay = min(self.max_delay_s, self.base_delay_s * 2.0**over)
                    entry.blocked_until = now + delay
                    if over == 0:
                        # The start of a burst: one event for the alerting, not one per guess.
                        LOGIN_THROTTLED.labels(scope.name).inc()
                        log_event(
                            log,
                            logging.WARNING,
                            "login_throttled",
                            scope=scope.name,
                            key=key,
                            failures=entry.failures,
                            retry_after_s=round(delay, 1),
                        )

    def succeeded(self, account: str) -> None:
        with self._lock:
            self.account.entries.pop(account.lower(), None)

    def _prune(self, scope: _Scope, now: float) -> None:
        if len(scope.entries) < _MAX_ENTRIES:
            return
        for key in [
            k
            for k, e in scope.entries.items()
            if now - e.last_failure > self.window_s and e.blocked_until <= now
        ]:
            del scope.entries[key]
        while len(scope.entries) >= _MAX_ENTRIES:
            # Dicts keep insertion order: drop the oldest counts first.
            del scope.entries[next(iter(scope.entries))]


class HashGate:
    """At most ``limit`` argon2 computations at once in this process; up to ``max_waiting``
    more wait here (in the event loop, holding nothing) instead of in the database pool, and
    beyond that a login is answered 503 with Retry-After at once: a flood from many addresses
    costs neither memory nor the pool."""

    def __init__(self, limit: int, max_waiting: int = 100) -> None:
        self.limit = limit
        self.max_waiting = max_waiting
        self.waiting = 0
        self._semaphore: asyncio.Semaphore | None = None

    @property
    def semaphore(self) -> asyncio.Semaphore:
        # Created lazily, inside the running loop (an app may be built outside one).
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.limit)
        return self._semaphore

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        semaphore = self.semaphore
        if semaphore.locked() and self.waiting >= self.max_waiting:
            LOGIN_REFUSED.labels("busy").inc()
            raise ApiError(503, "$", "too many logins at once; retry in a moment", retry_after=1)
        self.waiting += 1
        try:
            await semaphore.acquire()
        finally:
            self.waiting -= 1
        try:
            yield
        finally:
            semaphore.release()
