"""``Backoff``: capped exponential backoff with jitter (the replica's retries, DESIGN §4.3)."""

from __future__ import annotations

import random
from typing import Callable

from ._exceptions import ConfigError


class Backoff:
    """Capped exponential backoff with jitter: the n-th delay is drawn from
    [d/2, d] with d = min(cap, base·2ⁿ), so a fleet that lost Consul together
    does not come back in lockstep."""

    def __init__(self, base_s: float = 0.05, cap_s: float = 5.0, rng: Callable[[], float] = random.random) -> None:
        if not 0 < base_s <= cap_s:
            raise ConfigError("backoff", f"need 0 < base ≤ cap, got base={base_s!r} cap={cap_s!r}")
        self.base_s, self.cap_s, self._rng = base_s, cap_s, rng
        self.failures = 0

    def next(self) -> float:
        d = min(self.cap_s, self.base_s * (2 ** min(self.failures, 30)))
        self.failures += 1
        return float(d / 2 + self._rng() * d / 2)

    def reset(self) -> None:
        self.failures = 0
