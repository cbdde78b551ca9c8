"""The per-connection rate limit: a token bucket."""

from __future__ import annotations

from typing import Optional


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` at once; ``rate=None`` never limits."""

    __slots__ = ("rate", "burst", "tokens", "at", "refused")

    def __init__(self, rate: Optional[float], burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.at = now
        self.refused = 0  # takes refused so far (for logs and tests)

    def take(self, now: float) -> bool:
        """Spends one token; False when the bucket is empty (the event is over the limit)."""
        rate = self.rate
        if rate is None:
            return True
        self.tokens = min(self.burst, self.tokens + (now - self.at) * rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        self.refused += 1
        return False
