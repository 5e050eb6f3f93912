"""Reconnect delays: capped exponential backoff with full jitter.

Full jitter (a delay drawn uniformly from [0, min(cap, base * 2**n)]) spreads
a fleet that lost the service at the same moment over the whole window, so a
restarted service is not met by every host in the same second.
"""

from __future__ import annotations

import random


class Backoff:
    """Delays for consecutive failed attempts; :meth:`reset` after a connection held."""

    def __init__(
        self, base: float = 1.0, cap: float = 60.0, rng: random.Random | None = None
    ) -> None:
        if not 0 < base <= cap:
            raise ValueError("expected 0 < base <= cap")
        self.base = base
        self.cap = cap
        self.failures = 0
        self._rng = rng or random.SystemRandom()

    def ceiling(self) -> float:
        """The largest delay the next attempt may get."""
        return min(self.cap, self.base * 2 ** min(self.failures, 32))

    def next_delay(self) -> float:
        delay = self._rng.uniform(0, self.ceiling())
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0
