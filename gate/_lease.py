"""The lease of a Consul session: how long its holder may act after the last
renewal Consul acknowledged (DESIGN §5 rule 5).

Consul restarts a session's TTL when a renewal *arrives*, which is after it
was sent; measuring the lease from the moment the renewal was sent, with a
lease shorter than the TTL, makes the holder stop acting before Consul can
end the session and hand what it holds (``sidecars/<id>``,
``controller/leader``) to anyone else. One copy, used by the barrier
participant and the controller's leadership.
"""

from __future__ import annotations

from typing import Any, Callable


class Lease:
    __slots__ = ("lease_s", "clock", "renewed_at")

    def __init__(self, lease_s: float, clock: Callable[[], float]) -> None:
        self.lease_s = lease_s
        self.clock = clock
        self.renewed_at = float("-inf")   # clock() when the last acknowledged renewal was sent

    def held(self, now: float | None = None) -> bool:
        """True while the last acknowledged renewal is younger than the lease."""
        return (self.clock() if now is None else now) - self.renewed_at < self.lease_s

    def started(self, sent: float) -> None:
        """A new session was created by a request sent at ``sent``."""
        self.renewed_at = sent

    def expire(self) -> None:
        self.renewed_at = float("-inf")

    async def renew(self, consul: Any, session: str | None) -> None:
        """Renew ``session`` (``consul.session_renew``); on success the lease runs from
        when the renewal was sent. ``SessionLost``/``BackendError`` propagate."""
        sent = self.clock()
        await consul.session_renew(session)
        if sent > self.renewed_at:   # an older renewal answered late never shortens the lease
            self.renewed_at = sent
