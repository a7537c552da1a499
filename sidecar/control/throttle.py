"""The copy throttle: token buckets in bytes per second (issue 17).

A bucket refills at ``rate`` up to ``burst`` tokens. ``reserve(n)`` takes
``n`` tokens at once, going into debt when there are not enough, and returns
how long the caller must wait for the debt to be repaid — so a batch larger
than the burst still passes, and concurrent callers queue fairly: each
waits for the debt ahead of it. Over a long copy the rate is exactly
``rate`` (plus at most one burst at the start).

``rate`` changes take effect at once (the accumulated tokens are kept,
capped at the new burst), which is what lets an operator slow a running copy.
A rate of 0 means unlimited.

``Pacer`` composes a per-job bucket and the fleet-wide bucket: every import
batch of a bulk copy waits on both (``pace``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable

BURST_SECONDS = 0.1   # burst = rate × this: small, so a measured rate sits close to the limit


class TokenBucket:
    def __init__(self, rate: float = 0.0, *, burst: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate < 0:
            raise ValueError(f"rate must be ≥ 0 bytes/s, got {rate!r}")
        self.clock = clock
        self.rate = float(rate)
        self._fixed_burst = burst
        self.tokens = self.burst
        self._t = clock()

    @property
    def burst(self) -> float:
        return self._fixed_burst if self._fixed_burst is not None else self.rate * BURST_SECONDS

    def set_rate(self, rate: float) -> None:
        if rate < 0:
            raise ValueError(f"rate must be ≥ 0 bytes/s, got {rate!r}")
        self._refill()
        self.rate = float(rate)
        self.tokens = min(self.tokens, self.burst)

    def _refill(self) -> None:
        now = self.clock()
        if self.rate > 0:
            self.tokens = min(self.burst, self.tokens + (now - self._t) * self.rate)
        self._t = now

    def reserve(self, n: int) -> float:
        """Take ``n`` tokens; return the seconds to wait before using them (0 = now)."""
        if self.rate <= 0:
            return 0.0
        self._refill()
        self.tokens -= n
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    async def take(self, n: int, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> float:
        delay = self.reserve(n)
        if delay > 0:
            await sleep(delay)
        return delay


class Pacer:
    """Per-job buckets plus one fleet bucket; rates looked up on every call (changeable live)."""

    def __init__(self, fleet_rate: Callable[[], float], job_rate: Callable[[str], float],
                 *, clock: Callable[[], float] = time.monotonic) -> None:
        self._fleet_rate, self._job_rate, self.clock = fleet_rate, job_rate, clock
        self.fleet = TokenBucket(0.0, clock=clock)
        self.jobs: dict[str, TokenBucket] = {}
        self.active: dict[str, str] = {}   # partition → job id of a bulk copy in progress

    def start(self, partition: str, job_id: str) -> None:
        self.active[partition] = job_id

    def stop(self, partition: str) -> None:
        job_id = self.active.pop(partition, None)
        if job_id is not None:
            self.jobs.pop(job_id, None)

    async def pace(self, partition: str, n: int) -> None:
        """Wait until ``n`` bytes of ``partition``'s bulk copy may be imported.
        Not a bulk copy in progress (e.g. the delta replayed during cutover): no wait."""
        job_id = self.active.get(partition)
        if job_id is None:
            return
        bucket = self.jobs.get(job_id)
        if bucket is None:
            bucket = self.jobs[job_id] = TokenBucket(0.0, clock=self.clock)
        for b, rate in ((bucket, self._job_rate(job_id)), (self.fleet, self._fleet_rate())):
            if b.rate != rate:
                b.set_rate(rate)
            await b.take(n)
