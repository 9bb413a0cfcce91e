"""Per-key rate limit: a token bucket per API key, in this worker's memory.

Per worker: with N workers (``txmon api --workers N``) or several hosts, a key may make
up to N times ``rate_per_s`` in total. Enough to stop a runaway client from starving the
others without a shared store on the request path (docs/api.md).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TokenBuckets:
    """``allow(key)``: True if ``key`` may make a request now.

    >>> clock = iter([0.0, 0.0, 0.0, 1.0]).__next__
    >>> buckets = TokenBuckets(rate_per_s=1, burst=2, clock=clock)
    >>> [buckets.allow("k") for _ in range(4)]
    [True, True, False, True]
    """

    def __init__(self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate_per_s
        self.burst = burst
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str, cost: float = 1.0) -> bool:
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens < cost:
                self._buckets[key] = (tokens, now)
                return False
            self._buckets[key] = (tokens - cost, now)
            return True

    def retry_after(self, cost: float = 1.0) -> float:
        """Seconds until a bucket that just refused has ``cost`` tokens again (at most)."""
        return cost / self.rate
