"""Login attempts are limited per username and per client address (sliding window).

Kept in memory: a brute-force attempt against one replica is throttled there; the limit is a
speed bump in front of argon2, not a distributed quota.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict, deque

_PRUNE_ABOVE_KEYS = 10_000


class LoginRateLimiter:
    def __init__(self, max_attempts: int = 10, window_seconds: float = 60.0) -> None:
        self.max_attempts = max_attempts
        self.window_seconds = window_seconds
        self._attempts: defaultdict[str, deque[float]] = defaultdict(deque)

    def retry_after(self, *keys: str) -> int:
        """Seconds until another attempt is allowed for all ``keys``; 0 when allowed now."""
        now = time.monotonic()
        wait = 0.0
        for key in keys:
            attempts = self._attempts.get(key)
            if attempts is None:
                continue
            while attempts and attempts[0] <= now - self.window_seconds:
                attempts.popleft()
            if not attempts:
                del self._attempts[key]
            elif len(attempts) >= self.max_attempts:
                wait = max(wait, attempts[0] + self.window_seconds - now)
        return math.ceil(wait)

    def record_failure(self, *keys: str) -> None:
        now = time.monotonic()
        if len(self._attempts) >= _PRUNE_ABOVE_KEYS:
            self._forget_expired(now)
        for key in keys:
            self._attempts[key].append(now)

    def _forget_expired(self, now: float) -> None:
        """Keep memory bounded when many usernames or addresses are tried."""
        horizon = now - self.window_seconds
        for key in [
            key for key, times in self._attempts.items() if not times or times[-1] <= horizon
        ]:
            del self._attempts[key]

    def reset(self, *keys: str) -> None:
        for key in keys:
            self._attempts.pop(key, None)
