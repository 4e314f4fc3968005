"""Failed logins are limited per (username, client address) and per client address, over a
sliding window.

Keying the account's limit on the address too means an attacker who fails on Alice's name
throttles only themselves: Alice, from her own address, logs in as usual. The per-address limit
stops one address from trying many names. Attempts count when they start (before the password
is checked), so concurrent guesses cannot slip past the limit; a successful login takes its own
attempt back.

Kept in memory: a brute-force attempt against one replica is throttled there; the limit is a
speed bump in front of argon2, not a distributed quota.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict, deque

_PRUNE_ABOVE_KEYS = 10_000

Key = tuple[str, ...]


class LoginRateLimiter:
    def __init__(
        self,
        max_per_account: int = 10,
        max_per_address: int = 50,
        window_seconds: float = 60.0,
    ) -> None:
        self.max_per_account = max_per_account
        self.max_per_address = max_per_address
        self.window_seconds = window_seconds
        self._attempts: defaultdict[Key, deque[float]] = defaultdict(deque)

    def _limits(self, username: str, address: str) -> list[tuple[Key, int]]:
        return [
            (("account", username, address), self.max_per_account),
            (("address", address), self.max_per_address),
        ]

    def retry_after(self, username: str, address: str) -> int:
        """Seconds until ``address`` may try ``username`` again; 0 when it may now."""
        now = time.monotonic()
        wait = 0.0
        for key, limit in self._limits(username, address):
            attempts = self._attempts.get(key)
            if attempts is None:
                continue
            while attempts and attempts[0] <= now - self.window_seconds:
                attempts.popleft()
            if not attempts:
                del self._attempts[key]
            elif len(attempts) >= limit:
                wait = max(wait, attempts[len(attempts) - limit] + self.window_seconds - now)
        return math.ceil(wait)

    def record_attempt(self, username: str, address: str) -> None:
        """Count an attempt that is about to be checked (it stays counted if it fails)."""
        now = time.monotonic()
        if len(self._attempts) >= _PRUNE_ABOVE_KEYS:
            self._forget_expired(now)
        for key, _ in self._limits(username, address):
            self._attempts[key].append(now)

    def take_back(self, username: str, address: str) -> None:
        """The attempt does not count (the check could not run, e.g. the database was down)."""
        for key, _ in self._limits(username, address):
            attempts = self._attempts.get(key)
            if attempts:
                attempts.pop()

    def succeeded(self, username: str, address: str) -> None:
        """The attempt was right: the account's failures from this address are forgotten, and
        the address gets its attempt back."""
        self.take_back(username, address)
        self._attempts.pop(("account", username, address), None)

    def _forget_expired(self, now: float) -> None:
        """Keep memory bounded when many usernames or addresses are tried."""
        horizon = now - self.window_seconds
        for key in [
            key for key, times in self._attempts.items() if not times or times[-1] <= horizon
        ]:
            del self._attempts[key]
