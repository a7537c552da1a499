"""The barrier participant: what makes "writes are rejected fleet-wide" true (DESIGN §5).

Every process that admits writes runs one. It holds a Consul session with TTL
``T``, publishes ``sidecars/<id>`` = its applied table epoch under that
session, and answers ``writable()`` — registered as a ``WriteGate`` guard — so
that the controller's barrier can trust an ack or a vanished key.

The order of the steps is the protocol; each rule of DESIGN §5 is one method
so a test can break exactly one rule in a subclass:

1. ``_join``: new session → publish ``sidecars/<id>`` under it → only then a
   fresh replica read; writes are admitted only after all three.
3. ``check``: a table read older than the lease ``L`` fails closed at once
   (``writable``) and the run loop gives the session up (destroy: the key is
   deleted, so the barrier stops waiting) and rejoins through rule 1.
4. a lost session (renewal or publish refused) stops writes at once and the
   run loop starts over at rule 1 with a new session and a fresh replica.
5. ``writable`` is false once the last successful renewal (timed from when
   it was *sent*) is older than ``L``; Consul cannot expire the session before
   ``T`` > ``L`` after that renewal reached it.

The ack (``_ack_loop``): on applying a transition into CUTOVER at epoch E the
participant waits until no write of that partition admitted at an epoch < E
is in flight (``tracker.wait_drained``), then publishes an epoch ≥ E.

The session's behavior is ``delete``: when the session ends (expiry, destroy)
Consul deletes ``sidecars/<id>``, so a dead participant leaves no key behind
and "listed key gone, or held by another session" is exactly "that session is
lost" to the controller. Lock-delay is 0 so a restarted process can re-acquire
its id at once (its reads come after, so that is safe).

The participant is also a ``PlacementSource``: it delegates reads to the
replica of the current generation, so a ``WriteGate`` built on it follows the
fresh replica after a rejoin.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any, Callable, Protocol

from ._blocking import next_blocking_index
from ._current_replica import CurrentReplica, read_at as _read_at
from ._exceptions import BackendError, ConfigError
from ._lease import Lease
from ._sessions import ConsulHTTP, SessionLost
from ._types import Epoch, PartitionState, Phase

log = logging.getLogger("epochgate.participant")

MIN_TTL_S = 10.0


class Tracker(Protocol):
    async def wait_drained(self, partition: str, below_epoch: int, timeout: float | None = None) -> bool: ...


class ReplicaLike(Protocol):
    last_read: float

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def default_lease(ttl_s: float) -> float:
    """``L`` = T/2: the margin T − L is also how long an admitted write may take
    to commit in an application without a commit-point admit (DESIGN §5 rule 6)."""
    return ttl_s / 2


class Participant(CurrentReplica):
    """One barrier participant (DESIGN §5 rules 1–5). See the module docstring.

    ``replica_factory()`` returns an unstarted replica (``start``/``stop``,
    ``last_read`` on the same ``clock``, a ``PlacementTable``-like read API,
    ``subscribe``); it is called for every (re)join, and its blocking queries
    must wait at most ``lease_s / 3`` (``self.wait_s``).
    """

    def __init__(self, consul_url: str, prefix: str = "epochgate/", *, participant_id: str,
                 replica_factory: Callable[[], Any], tracker: Tracker | None = None, ttl_s: float = 10.0,
                 lease_s: float | None = None, token: str | None = None,
                 clock: Callable[[], float] = time.monotonic, consul: Any = None, watch_key: bool = True) -> None:
        if not participant_id or "/" in participant_id or not participant_id.isprintable():
            raise ConfigError("participant_id", f"must be a non-empty printable string without '/', got {participant_id!r}")
        if ttl_s < MIN_TTL_S:
            raise ConfigError("ttl_s", f"Consul session TTL must be ≥ {MIN_TTL_S:g} s, got {ttl_s!r}")
        lease = default_lease(ttl_s) if lease_s is None else float(lease_s)
        if not 0 < lease <= ttl_s * 0.8:
            raise ConfigError("lease_s", f"lease must be > 0 and ≤ 0.8 × ttl_s ({ttl_s * 0.8:g}), got {lease_s!r}")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        self.id = participant_id
        self.prefix = prefix
        self.key = f"{prefix}sidecars/{participant_id}"
        self.ttl_s = float(ttl_s)
        self.lease_s = lease
        self.wait_s = lease / 3          # rule 3: a quiet table still counts as fresh
        self.renew_every_s = lease / 4   # several renewals fit inside the lease
        self._consul_url, self._token, self._consul = consul_url, token, consul
        self._factory = replica_factory
        # One more long-poll connection per participant (Consul limits connections per
        # client IP: limits.http_max_conns_per_client, default 200); without it an
        # outside session end is noticed at the next renewal (≤ lease/4).
        self.watch_key = watch_key
        self.ack_every_s = 0.5           # acks no barrier waits for coalesce (see _coalesce)
        self._draining_seen = Epoch(0)   # newest draining epoch seen (the pre-barrier's)
        self._pending_since: float | None = None
        self.tracker = tracker
        self.clock = clock
        self.replica: Any = None
        self.session: str | None = None
        self.generation = 0
        self.joins = 0
        self._joined = False
        self._stopping = False
        self._lease = Lease(lease, clock)   # rule 5: from the last acknowledged renewal
        self._published = Epoch.ZERO
        self._seen = Epoch.ZERO
        self._cutovers: dict[str, Epoch] = {}
        self._subs: list[Callable[..., None]] = []
        self._unsub: Callable[[], None] | None = None
        self._wake: asyncio.Event | None = None
        self._rejoin: asyncio.Event | None = None
        self._reason = ""
        self._task: asyncio.Task[None] | None = None
        self._joined_once: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---- the guard ---------------------------------------------------------

    def check(self) -> str | None:
        """Why writes must be refused now (None: they may be admitted). Pure: reads the clock."""
        if self._stopping:
            return "stopping"
        if not self._joined or self.replica is None:
            return "not_registered"
        now = self.clock()
        if not self._lease.held(now):
            return "lease_expired"        # rule 5
        if now - _read_at(self.replica) >= self.lease_s:
            return "stale_table"          # rule 3
        return None

    def table_stale(self) -> bool:
        """Rule 3: the last successful table read is older than the lease."""
        r = self.replica
        return r is not None and self.clock() - _read_at(r) >= self.lease_s

    def writable(self) -> bool:
        """True when this participant may admit writes (the ``WriteGate`` guard)."""
        return self.check() is None

    @property
    def published(self) -> Epoch:
        """The epoch last acknowledged under the current session."""
        return self._published

    # ---- life cycle --------------------------------------------------------

    async def start(self, *, wait_joined_s: float | None = None) -> None:
        """Start the run loop. With ``wait_joined_s``, wait that long for the first
        join (raise ``BackendError`` if it did not happen)."""
        if self._task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._joined_once = asyncio.Event()
        if self._consul is None:
            self._consul = ConsulHTTP(self._consul_url, token=self._token,
                                      request_timeout_s=max(0.5, min(5.0, self.renew_every_s)))
            self._own_consul = True
        else:
            self._own_consul = False
        self._task = asyncio.create_task(self._run(), name=f"participant-{self.id}")
        if wait_joined_s is not None:
            joined = asyncio.ensure_future(self._joined_once.wait())
            await asyncio.wait({joined, self._task}, timeout=wait_joined_s, return_when=asyncio.FIRST_COMPLETED)
            if not joined.done():
                joined.cancel()
                if self._task.done() and not self._task.cancelled() and self._task.exception() is not None:
                    raise self._task.exception()  # type: ignore[misc]  # e.g. ConfigError
                raise BackendError(f"participant {self.id}: not registered after {wait_joined_s:g}s")

    async def wait_joined(self, timeout_s: float) -> bool:
        """Wait until the participant is writable (True) or ``timeout_s`` passed."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.writable():
                return True
            await asyncio.sleep(0.02)
        return self.writable()

    async def stop(self) -> None:
        """Stop admitting, give the session up (its key goes with it), stop the replica."""
        self._stopping = True
        self._joined = False
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - shutting down
                pass
            self._task = None
        await self._leave()
        if self._consul is not None and getattr(self, "_own_consul", False):
            await self._consul.close()

    async def _run(self) -> None:
        backoff = 0.05
        while not self._stopping:
            acker = None
            try:
                await self._join()
                backoff = 0.05
                acker = asyncio.create_task(self._ack_loop(), name=f"ack-{self.id}")
                await self._serve(acker)
                log.warning("participant %s leaving (%s); rejoining", self.id, self._reason)
            except BackendError as exc:
                log.warning("participant %s: %s", self.id, exc)
            except ConfigError:
                log.exception("participant %s: misconfigured; not admitting writes", self.id)
                raise
            finally:
                self._joined = False   # rules 3/4: stop writes before anything else
                if acker is not None:
                    acker.cancel()
                    await asyncio.gather(acker, return_exceptions=True)
            if self._stopping:
                break
            await self._leave()
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, self.lease_s / 2)

    # ---- rule 1: register before you read -------------------------------------

    async def _join(self) -> None:
        self._joined = False
        self.generation += 1
        self._rejoin = asyncio.Event()
        self._wake = asyncio.Event()
        self._published = self._seen = Epoch.ZERO
        self._pending_since = None
        self._cutovers = {}
        await self._open_session()
        await self._register()
        await self._read_table()
        self._joined = True
        self.joins += 1
        assert self._joined_once is not None
        self._joined_once.set()
        self._wake.set()

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

    async def _read_table(self) -> None:
        """A fresh replica: a new snapshot read, never the old view (rule 4). Until it
        has read, the old (stopped) replica keeps answering reads from its last table;
        writes stay refused (``_joined`` is false)."""
        old = self.replica
        if old is not None:
            await old.stop()
        replica = self._factory()
        wait = getattr(replica, "wait_s", None)
        if isinstance(wait, (int, float)) and wait > self.wait_s * 1.001:
            raise ConfigError("replica_factory", f"the replica's blocking-query wait {wait:g}s exceeds lease/3 = "
                                                 f"{self.wait_s:g}s: a quiet table would look stale (rule 3)")
        if replica is old and self._unsub is not None:   # a factory that reuses one replica
            self._unsub()
            self._unsub = None
        unsub = replica.subscribe(self._on_change)
        try:
            # bounded: a registered participant that cannot read holds the barrier up
            await asyncio.wait_for(replica.start(), self.lease_s / 2)
        except asyncio.TimeoutError as exc:
            unsub()
            await replica.stop()
            raise BackendError(f"participant {self.id}: table read took longer than {self.lease_s / 2:g}s") from exc
        except BaseException:
            unsub()
            await replica.stop()
            raise
        if self._unsub is not None:
            self._unsub()
        self.replica, self._unsub = replica, unsub
        for p, (state, epoch) in replica.partitions().items():
            if state.phase is Phase.CUTOVER:
                self._cutovers[p] = epoch
        self._seen = max(self._seen, replica.current_epoch())

    def _on_change(self, partition: str, state: PartitionState | None, epoch: int) -> None:
        loop = self._loop
        if loop is not None and not _on_loop(loop):
            loop.call_soon_threadsafe(self._on_change, partition, state, epoch)
            return
        if state is not None and state.phase is Phase.CUTOVER:
            self._cutovers[partition] = Epoch(epoch)
        elif state is not None and state.phase is Phase.DRAINING and epoch > self._draining_seen:
            # the controller's pre-barrier waits for acks of a draining epoch: not coalesced
            self._draining_seen = Epoch(epoch)
        if epoch > self._seen:
            self._seen = Epoch(epoch)
        if self._wake is not None:
            self._wake.set()
        for fn in list(self._subs):
            fn(partition, state, epoch)

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
                for t in (acker, renewer, watcher):
                    if t.done() and not t.cancelled() and t.exception() is not None:
                        raise BackendError(f"participant task failed: {t.exception()!r}")
                try:
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
            log.info("participant %s: renewal failed: %s", self.id, exc)

    def session_lost(self, why: str) -> None:
        """Rule 4: stop writes at once; the run loop rejoins with a new session."""
        self._joined = False
        self._reason = f"session lost: {why}"
        if self._rejoin is not None:
            self._rejoin.set()

    # ---- the ack ----------------------------------------------------------------

    async def _ack_loop(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            target = self._seen
            urgent = self._published == 0      # the first publish after a join
            if self._published < self._draining_seen <= target:
                urgent = True                  # a pre-barrier waits for this one
            for p, e in sorted(self._cutovers.items(), key=lambda kv: kv[1]):
                if e <= target:
                    await self._drain(p, e)
                    urgent = True              # a barrier waits for this one
                    if self._cutovers.get(p) == e:
                        del self._cutovers[p]
            if target > self._published and not urgent and await self._coalesce():
                continue                       # changed again meanwhile: look at it first
            if target > self._published:
                await self._publish(target)

    async def _coalesce(self) -> bool:
        """A transition no barrier waits for (not a cutover) is published ``ack_every_s``
        after the first unpublished one, with whatever came meanwhile — or at once with
        the next cutover. An ack is a raft write: publishing every transition made each
        one cost N writes fleet-wide (issue 19). True when woken by a new change."""
        assert self._wake is not None
        loop = asyncio.get_running_loop()   # loop time: a throttle, not a safety clock
        if self._pending_since is None:
            self._pending_since = loop.time()
        remaining = self._pending_since + self.ack_every_s - loop.time()
        if remaining <= 0:
            return False
        try:
            await asyncio.wait_for(self._wake.wait(), remaining)
        except asyncio.TimeoutError:
            return False
        return True

    async def _drain(self, partition: str, epoch: Epoch) -> None:
        """Wait for writes of ``partition`` admitted below ``epoch`` — while the
        partition is still in that cutover (once it moved on, no barrier waits for it)."""
        if self.tracker is None:
            return
        while not await self.tracker.wait_drained(partition, epoch, timeout=0.5):
            st = self.replica.state(partition) if self.replica is not None else None
            if st is None or st[1] != epoch:
                return

    async def _publish(self, epoch: Epoch) -> None:
        try:
            ok = await self._consul.acquire(self.key, str(int(epoch)).encode(), self.session)
        except BackendError as exc:
            log.info("participant %s: publish failed: %s", self.id, exc)
            await asyncio.sleep(0.05)
            assert self._wake is not None
            self._wake.set()   # try again
            return
        if not ok:
            self.session_lost("publish refused")
            return
        self._published = epoch
        self._pending_since = None

    async def _leave(self) -> None:
        """Give the session up (best effort) and stop the replica."""
        self._joined = False
        sid, self.session = self.session, None
        if sid is not None and self._consul is not None:
            try:
                await asyncio.wait_for(self._consul.session_destroy(sid), self.renew_every_s)
            except (BackendError, asyncio.TimeoutError) as exc:
                log.info("participant %s: could not destroy session: %s", self.id, exc)
        # The replica stops following but stays: reads continue from its last table
        # (DESIGN §5) while writes are refused; the next join replaces it.
        if self.replica is not None:
            await self.replica.stop()


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
