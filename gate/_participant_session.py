"""The participant's Consul session (DESIGN §5 rules 1, 4, 5): open it, hold
``sidecars/<id>`` under it, keep it renewed, notice its loss, give it up.

A mixin of ``Participant`` (``gate/_participant.py``, where the rules are laid
out and the attributes set): each rule stays one method that a test can
override in a subclass to break exactly that rule.

The session's behavior is ``delete``: when the session ends (expiry, destroy)
Consul deletes ``sidecars/<id>``, so a dead participant leaves no key behind
and "listed key gone, or held by another session" is exactly "that session is
lost" to the controller. Lock-delay is 0 so a restarted process can re-acquire
its id at once (its reads come after, so that is safe).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from ._blocking import next_blocking_index
from ._exceptions import BackendError
from ._reachability import failure_level
from ._lease import Lease
from ._sessions import SessionLost

log = logging.getLogger("epochgate.participant")


class ParticipantSession:
    """Session, registration, renewals and the key watch of a ``Participant``."""

    id: str
    key: str
    ttl_s: float
    lease_s: float
    wait_s: float
    renew_every_s: float
    watch_key: bool
    clock: Callable[[], float]
    replica: Any
    session: str | None
    _consul: Any
    _lease: Lease
    _joined: bool
    _reason: str
    _rejoin: asyncio.Event | None
    table_stale: Callable[[], bool]
    log_blocked: Callable[[], bool]

    # ---- rule 1: a new session, and the key held under it ---------------------

    async def _open_session(self) -> None:
        sent = self.clock()
        self.session = await self._consul.session_create(f"epochgate-participant-{self.id}", self.ttl_s)
        self._lease.started(sent)

    async def _register(self) -> None:
        assert self.session is not None
        if await self._consul.acquire(self.key, b"0", self.session):
            return
        # Held by another session: this id's previous process (killed, or one that lost
        # its session and is starting over). Ids are unique per process by contract, so
        # that process is dead or must start over anyway (rule 4): end its session —
        # the barrier then stops waiting for it — and take the key.
        entry = await self._consul.get(self.key)
        if entry is not None and entry.session and entry.session != self.session:
            log.warning("participant %s: taking over %s from stale session %s", self.id, self.key, entry.session)
            await self._consul.session_destroy(entry.session)
        if not await self._consul.acquire(self.key, b"0", self.session):
            raise BackendError(f"participant {self.id}: could not acquire {self.key}")

    # ---- serving: renewals (rules 4, 5) and the watchdog (rule 3) -------------

    async def _serve(self, acker: asyncio.Task[None]) -> None:
        renewer = asyncio.create_task(self._renew_loop(), name=f"renew-{self.id}")
        watcher = asyncio.create_task(self._watch_key(), name=f"key-{self.id}")
        tick = min(self.renew_every_s, self.lease_s / 10)
        assert self._rejoin is not None
        try:
            while not self._rejoin.is_set():
                if self.table_stale():
                    self._reason = "stale table"   # rule 3: fail closed (check) and leave
                    return
                if self.log_blocked():
                    self._reason = "log blocked"   # DESIGN §4.3: fail closed (check), drained: leave
                    return
                for t in (acker, renewer, watcher):
                    # cancelled counts too: only this function cancels them, so a cancel that ended
                    # one came from elsewhere (seen: the renewer, after a SIGSTOP past the lease)
                    if t.done() and (t.cancelled() or t.exception() is not None):
                        why = "cancelled" if t.cancelled() else repr(t.exception())
                        raise BackendError(f"participant task {t.get_name()} ended: {why}")
                try:
                    # wait_for, not asyncio.timeout, here: with asyncio.timeout this loop stopped
                    # ticking after a SIGSTOP past the lease (tests/test_hold_fail_closed.py, 3 of 3
                    # runs; cause not found). A cancel wait_for loses here is harmless: the run
                    # loop ends on _stopping, and _rejoin.wait() does no I/O.
                    await asyncio.wait_for(self._rejoin.wait(), tick)
                except asyncio.TimeoutError:
                    pass
        finally:
            renewer.cancel()
            watcher.cancel()
            await asyncio.gather(renewer, watcher, return_exceptions=True)

    async def _watch_key(self) -> None:
        """Rule 4, sooner than the next renewal: a session ended from outside (an
        operator's destroy, the agent's node leaving) deletes ``sidecars/<id>``; a
        blocking query on it sees that within one round trip."""
        if not self.watch_key or not hasattr(self._consul, "list"):
            return
        index = 0
        while True:
            try:
                entries, new = await self._consul.list(self.key, index=index or None, wait_s=self.wait_s)
            except BackendError:
                await asyncio.sleep(self.renew_every_s)   # renewals and the lease cover an outage
                continue
            index = next_blocking_index(index, new)
            mine = [e for e in entries if e.key == self.key]
            if not mine or mine[0].session != self.session:
                self.session_lost(f"{self.key} is gone or held by another session")
                return

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.renew_every_s)
            await self.renew_once()

    async def renew_once(self) -> None:
        try:
            await self._lease.renew(self._consul, self.session)
        except SessionLost:
            self.session_lost("renewal refused")
        except BackendError as exc:
            log.log(failure_level(exc, logging.INFO), "participant %s: renewal failed: %s", self.id, exc)

    def session_lost(self, why: str) -> None:
        """Rule 4: stop writes at once; the run loop rejoins with a new session."""
        self._joined = False
        self._reason = f"session lost: {why}"
        if self._rejoin is not None:
            self._rejoin.set()

    # ---- leaving ----------------------------------------------------------------

    async def _leave(self) -> None:
        """Give the session up (best effort) and stop the replica."""
        self._joined = False
        sid, self.session = self.session, None
        if sid is not None and self._consul is not None:
            try:
                async with asyncio.timeout(self.renew_every_s):
                    await self._consul.session_destroy(sid)
            except (BackendError, asyncio.TimeoutError) as exc:
                log.info("participant %s: could not destroy session: %s", self.id, exc)
        # The replica stops following but stays: reads continue from its last table
        # (DESIGN §5) while writes are refused; the next join replaces it.
        if self.replica is not None:
            await self.replica.stop()
