"""A per-user request rate limit: a token bucket per user in this controller's memory.

``NAS_RATE_LIMIT_PER_S`` tokens flow into each user's bucket every second, up to ``NAS_RATE_LIMIT_BURST``; every
authenticated request takes one. An empty bucket answers 429 problem+json with ``Retry-After`` (the seconds until
the next token). 0 turns the limit off (the default: quotas and stream limits already bound what one user can hold;
an operator who exposes the API widely sets a rate). Several controllers each keep their own buckets.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable


class RateLimiter:
    """Token buckets keyed by user id. ``take(key)`` is 0.0 when the request may go on, else the seconds to wait."""

    def __init__(self, rate_per_s: float, burst: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")
        self.rate = rate_per_s
        self.burst = float(burst)
        self.clock = clock
        self._buckets: dict[int, tuple[float, float]] = {}  # key -> (tokens, time of that count)
        self._lock = threading.Lock()

    def take(self, key: int) -> float:
        with self._lock:
            now = self.clock()
            tokens, then = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - then) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate


def retry_after_header(wait_s: float) -> str:
    """Whole seconds, at least 1 (Retry-After takes an integer)."""
    return str(max(1, math.ceil(wait_s)))
