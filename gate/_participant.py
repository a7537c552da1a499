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

Where the steps live: the session — open, register, renew, watch, leave —
in ``_participant_session`` (``ParticipantSession``); the ack in
``_participant_ack`` (``ParticipantAck``); the guard, the run loop, the join
and the table read here. Both are mixins of ``Participant``, so a test still
overrides one rule's method in a subclass.

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

from ._current_replica import CurrentReplica, read_at as _read_at
from ._exceptions import BackendError, ConfigError
from ._reachability import failure_level
from ._lease import Lease
from ._participant_ack import ParticipantAck, Tracker
from ._participant_session import ParticipantSession
from ._sessions import ConsulHTTP
from ._types import Epoch, PartitionState, Phase

log = logging.getLogger("epochgate.participant")

MIN_TTL_S = 10.0


class ReplicaLike(Protocol):
    last_read: float

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def default_lease(ttl_s: float) -> float:
    """``L`` = T/2: the margin T − L is also how long an admitted write may take
    to commit in an application without a commit-point admit (DESIGN §5 rule 6)."""
    return ttl_s / 2


class Participant(ParticipantSession, ParticipantAck, CurrentReplica):
    """One barrier participant (DESIGN §5 rules 1–5). See the module docstring.

    ``replica_factory()`` returns an unstarted replica (``start``/``stop``,
    ``last_read`` on the same ``clock``, a ``PlacementTable``-like read API,
    ``subscribe``); it is called for every (re)join, and its blocking queries
    must wait at most ``lease_s / 3`` (``self.wait_s``).
    """

    def __init__(self, consul_url: str, prefix: str = "epochgate/", *, participant_id: str,
                 replica_factory: Callable[[], Any], tracker: Tracker | None = None, ttl_s: float = 10.0,
                 lease_s: float | None = None, token: str | None = None,
                 clock: Callable[[], float] = time.monotonic, consul: Any = None, watch_key: bool | None = None,
                 push_target: str | None = None, push_token: str | None = None,
                 http_session: Any = None) -> None:
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
        # The replica's ConsulConsensus.http_session (a one-connection pool): the session
        # calls share it, so reads, renewals and acks go over one keep-alive connection
        # (DESIGN §5 "The push path": connections per participant).
        self._http_session = http_session
        self._factory = replica_factory
        # One more long-poll connection per participant (Consul limits connections per
        # client IP: limits.http_max_conns_per_client, default 200); without it an
        # outside session end is noticed at the next renewal (≤ lease/4).
        # With the push path (issue 31) it is off by default: its connection is the one a
        # participant trades for the push stream, and a session ended from outside is then
        # noticed at the next renewal (≤ lease/4), as with watch_key=False.
        self.watch_key = (push_target is None) if watch_key is None else watch_key
        self.ack_every_s = 0.5           # acks no barrier waits for coalesce (see _coalesce)
        # The push path (issue 31, gate/_push_link.py): the controller's Fleet/Follow address;
        # None: Consul only, as before.
        self.push_target = push_target
        self.push_token = push_token   # bearer token of the controller's control API, if it requires one
        self._link: Any = None
        self._consul_published = Epoch.ZERO   # what sidecars/<id> holds under this session
        self._draining_seen = Epoch(0)   # newest draining epoch seen (the pre-barrier's)
        self._pending_since: float | None = None
        self.tracker = tracker
        self.clock = clock
        self.replica: Any = None
        self.session: str | None = None
        self.generation = 0
        self.joins = 0
        self.probes = 0   # fresh reads while out of the barrier over an unparseable value (DESIGN §4.3)
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
        if getattr(self.replica, "blocked", None) is not None:
            return "log_blocked"          # DESIGN §4.3: stopped at a value it cannot parse
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

    def log_blocked(self) -> bool:
        """The replica stopped at a value it cannot parse (DESIGN §4.3) and every write
        admitted before that has finished: time to leave (like rule 3), so the barrier
        does not wait for an ack that cannot come. Until drained it keeps its session:
        a barrier then waits for it (and aborts at its deadline), never passes it with
        a write of the draining epoch still in flight. Rule 3 bounds that wait."""
        if getattr(self.replica, "blocked", None) is None:
            return False
        count = getattr(self.tracker, "count", None)
        return count is None or count() == 0

    def writable(self) -> bool:
        """True when this participant may admit writes (the ``WriteGate`` guard)."""
        return self.check() is None

    @property
    def push_up(self) -> bool:
        """True while the push stream from the controller is up (``push_target``)."""
        return self._link is not None and self._link.up

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
                                      request_timeout_s=max(0.5, min(5.0, self.renew_every_s)),
                                      session=self._http_session)
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
                self._start_link()
                await self._serve(acker)
                log.warning("participant %s leaving (%s); rejoining", self.id, self._reason)
            except BackendError as exc:
                log.log(failure_level(exc), "participant %s: %s", self.id, exc)
            except ConfigError:
                log.exception("participant %s: misconfigured; not admitting writes", self.id)
                raise
            finally:
                self._joined = False   # rules 3/4: stop writes before anything else
                if acker is not None:
                    acker.cancel()
                    await asyncio.gather(acker, return_exceptions=True)
                await self._stop_link()
            if self._stopping:
                break
            await self._leave()
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, self.lease_s / 2)
            if self._reason == "log blocked":
                await self._until_readable()

    async def _until_readable(self) -> None:
        """After leaving over a value it cannot parse: wait, out of the barrier and
        refusing writes, until a fresh read (no session, no key: no raft writes) parses,
        so a fleet of old processes in a rolling upgrade does not churn sessions."""
        logged = False
        while not self._stopping:
            probe = self._factory()
            self.probes += 1
            try:
                await probe.start(follow=False)
                blocked = getattr(probe, "blocked", None)
            except Exception as exc:  # noqa: BLE001 - unreachable store or a bad read: still out
                blocked = exc
            finally:
                await probe.stop()
            if blocked is None:
                if logged:
                    log.warning("participant %s: the store reads cleanly again; rejoining", self.id)
                return
            if not logged:
                log.error("participant %s: out of the barrier, refusing writes, until the store reads cleanly "
                          "(%s)", self.id, getattr(blocked, "key", blocked))
                logged = True
            await asyncio.sleep(self.lease_s / 2 * (0.5 + random.random()))

    # ---- the push path (issue 31) ------------------------------------------------

    def _start_link(self) -> None:
        if not self.push_target or self.session is None:
            return
        from ._push_link import PushLink   # loads grpc: only participants that push pay for it
        link = PushLink(self.push_target, self.id, self.session, self.replica,
                        acked=lambda: self._published, on_change=self._link_changed, token=self.push_token)
        self._link = link
        self.replica.push_up = lambda: link.up
        link.start()

    async def _stop_link(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            await link.stop()

    def _link_changed(self, up: bool) -> None:
        """Down: the replica blocks on the log again and the ack loop writes to Consul
        what it acked by stream (the barrier's fallback reads that key)."""
        if not up:
            if self.replica is not None:
                self.replica.kick()
            if self._wake is not None:
                self._wake.set()

    # ---- rule 1: register before you read -------------------------------------

    async def _join(self) -> None:
        self._joined = False
        self._reason = ""
        self.generation += 1
        self._rejoin = asyncio.Event()
        self._wake = asyncio.Event()
        self._published = self._seen = self._consul_published = Epoch.ZERO
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
            async with asyncio.timeout(self.lease_s / 2):  # not wait_for: see gate/_longpoll.py
                await replica.start()
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


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
