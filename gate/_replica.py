"""``Replica``: a sidecar's local copy of the consensus store (DESIGN §4.3).

It reads ``partitions/`` (and ``nodes/``) once, then follows the change log:
a blocking query on ``log/head`` wakes it on every transition and hands it the
newest entry, so a transition costs each replica one small response however
large the table is. When it sees a jump in the log's sequence numbers it reads
the missing entries from ``log/e/``; when those were already truncated (it fell
too far behind) or the store went backwards (index reset: agent restart,
restore from backup) it reads the snapshot again.

Changes go into a ``PlacementTable`` through ``apply`` (only newer epochs), so
reads are answered by the same code as the embedded store. ``last_read`` is the
clock time of the last successful read of the store — a blocking query that
returns "no change" counts — and is what a sidecar's lease is measured against.

Fail closed (DESIGN §4.3): a change-log entry (or a head with no entry behind it)
that does not parse, or a ``partitions/`` value a snapshot cannot parse, stops the
replica there — ``blocked`` says where and why. Nothing past it is applied, the
table epoch does not move (so no participant acks past it), ``last_read`` stops
(the table is stale), and ``admit_write`` answers ``fail_closed`` for every
partition: an entry that cannot be parsed cannot be trusted to name its
partition, and an ack is one epoch for the whole table. The same bytes never
parse differently in the same process, so the block lifts on a fresh read: a
snapshot taken when the entry is gone or rewritten, the store was reset, or a new
process (an upgraded one) starts, in which every partition value parses. One log
line when it stops and one when it resumes, not one per poll. A ``nodes/`` value
carries no phase or epoch (it cannot hide a cutover): one that does not parse is
logged, counted and the node keeps its last good URL.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

from ._admission import fail_closed_reject
from ._backoff import Backoff
from ._blocking import next_blocking_index
from ._consensus import Consensus, Versioned
from ._log_entry import HEAD, LOG, NODES, PARTITIONS, LogEntry, decode_head, decode_state, log_key, seq_of
from ._exceptions import BackendError, ConfigError
from ._reachability import failure_level
from ._replica_push import ReplicaPush
from ._placement_file import validate_url
from ._table import PlacementTable
from ._types import Epoch, PartitionState, WriteAdmission, node_name

log = logging.getLogger("epochgate.replica")

_GAP_FETCH_MAX = 16   # missed entries read one key each; more than that: one scan of the log


@dataclass(frozen=True, slots=True)
class LogBlock:
    """Where a replica stopped (DESIGN §4.3): ``key`` and its ``seqno`` (store
    index), the log ``seq`` it stopped before (None: a snapshot's partition value
    or an unreadable head), and why."""

    key: str
    seqno: int
    seq: int | None
    why: str
    snapshot: bool = False


class Replica(ReplicaPush):
    """Follows a Consensus store into a local ``PlacementTable``.

    ``wait_s`` is the blocking-query wait (keep it ≤ a third of the sidecar's
    lease, DESIGN §5 rule 3). ``clock`` stamps ``last_read``; ``sleep`` and
    ``backoff`` are injectable for tests.
    """

    def __init__(self, consensus: Consensus, *, wait_s: float = 5.0, clock: Callable[[], float] = time.monotonic,
                 backoff: Backoff | None = None, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        if not isinstance(wait_s, (int, float)) or not 0 < wait_s <= 300:
            raise ConfigError("wait_s", f"blocking-query wait must be in (0, 300] seconds, got {wait_s!r}")
        self.consensus = consensus
        self.wait_s = float(wait_s)
        self._clock = clock
        self._sleep = sleep
        self.backoff = backoff or Backoff(cap_s=min(5.0, max(0.05, wait_s)))
        self.table = PlacementTable()
        t = self.table
        self.get, self.lookup, self.get_or_raise, self.admit_write = t.get, t.lookup, t.get_or_raise, t.admit_write
        self.state, self.partitions, self.subscribe = t.state, t.partitions, t.subscribe
        self._epoch = Epoch.ZERO
        self.nodes: dict[str, str] = {}
        self.last_read: float | None = None
        self.errors = 0      # failed reads and unparseable values
        self.updates = 0     # changes applied from the log (table or nodes)
        self.snapshots = 0   # full reads of partitions/
        self.resets = 0      # times the store's index went backwards
        self.seq = 0         # last change-log sequence number applied
        self.index = 0       # blocking-query index on log/head
        self.stale_store = False  # the store lost its data; serving the last table
        self._log_index = 0  # seqno of the last log entry applied
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False  # set by stop(): the follow loop ends even if a cancel is swallowed
        self._refreshing: asyncio.Future[None] | None = None
        self._last_bad: set[tuple[str, int]] = set()
        self.blocked: LogBlock | None = None   # fail closed: stopped at a value it cannot parse
        self.blocks = 0      # times it stopped (a new LogBlock)
        self._why = ""
        # The push path (gate/_push_link.py): while push_up() is true the follow loop reads
        # log/head without blocking every wait_s (freshness, rule 3) instead of holding a
        # blocking query every commit wakes; kick() makes it read now.
        self.push_up: Callable[[], bool] | None = None
        self.pushed_epoch = Epoch.ZERO   # the table epoch as of the last push applied
        self._kick = asyncio.Event()
        self._blocking = True   # the follow loop holds blocking queries (False: push pause)

    # ---- life cycle --------------------------------------------------------

    async def start(self, *, follow: bool = True) -> None:
        """Read the snapshot (``BackendError`` if the store cannot be read), then
        follow the log in a background task (``follow=False``: only ``refresh``)."""
        if self._task is not None:
            return
        self._stopping = False
        async with self._lock:
            await self._snapshot()
        if follow:
            self._task = asyncio.create_task(self._run(), name="epochgate-replica")

    async def stop(self) -> None:
        """Stop following. Idempotent; the table keeps serving its last state."""
        task, self._task = self._task, None
        if task is not None:
            # The flag as well as the cancel: a library between here and the socket that
            # swallows a CancelledError (Python 3.11's wait_for did, see _longpoll) would
            # otherwise leave this await, and the process's shutdown, waiting for ever.
            self._stopping = True
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    def _admit_blocked(self, partition: str, epoch: int) -> WriteAdmission:
        return fail_closed_reject(self.table, partition)

    def current_epoch(self) -> Epoch:
        """The highest epoch applied since the store last went backwards.

        Kept here rather than read from the table: after the store is reset
        (indexes start over) the table's own high-water mark would stay at the
        old generation's epochs, and a barrier ack compared against the new
        generation's epochs must not pass on those.
        """
        return self._epoch

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def refresh(self) -> None:
        """Catch up with the store now (non-blocking read). Concurrent callers
        share one read; raises ``BackendError`` when the store cannot be read."""
        if self._refreshing is None:
            self._refreshing = asyncio.ensure_future(self._refresh_once())
            self._refreshing.add_done_callback(self._refresh_done)
        await asyncio.shield(self._refreshing)

    def _refresh_done(self, fut: asyncio.Future[None]) -> None:
        self._refreshing = None
        if not fut.cancelled():
            fut.exception()  # retrieved here so an unawaited failure is not reported twice

    async def _refresh_once(self) -> None:
        value, index = await self.consensus.watch(HEAD, 0, 0.0)
        async with self._lock:
            await self._on_head(value, index)

    # ---- the follow loop ---------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping:
            try:
                if self.push_up is not None and self.push_up():
                    self._stop_blocking()
                    await self._poll_pause()
                    value, index = await self.consensus.watch(HEAD, 0, 0.0)
                else:
                    self._blocking = True
                    value, index = await self.consensus.watch(HEAD, self.index, self.wait_s)
                async with self._lock:
                    await self._on_head(value, index)
                self.backoff.reset()
            except BackendError as exc:
                self.errors += 1
                delay = self.backoff.next()
                log.log(failure_level(exc), "replica: store read failed (retry in %.2fs): %s", delay, exc)
                await self._sleep(delay)
            except Exception:  # a bug must not end the loop silently: last_read would just go stale
                self.errors += 1
                delay = self.backoff.next()
                log.exception("replica: unexpected error while following (retry in %.2fs)", delay)
                await self._sleep(delay)

    async def _on_head(self, value: Versioned | None, index: int) -> None:
        """Process one answer of the head query (caller holds the lock)."""
        if next_blocking_index(self.index, index) == 0:
            # The store went backwards (restart without data, restore): nothing we
            # hold about its positions is valid any more. Start over from a snapshot.
            self.resets += 1
            log.warning("replica: store index went backwards (%d → %d); re-reading the snapshot", self.index, index)
            self.index = 0
            await self._snapshot()
            return
        self.index = index
        if self.blocked is not None:
            await self._retry_blocked(value)
            return
        if value is None:
            if self.seq > 0 or self.stale_store:
                await self._snapshot()  # the log vanished: wiped store
            else:
                self._fresh()  # still an empty store
            return
        # The head holds the newest entry, or a group commit's consecutive batch.
        batch = self._parse_head(value)
        entry = None if batch is None else batch[-1]
        if self.stale_store or (entry is not None and entry.seq < self.seq):
            await self._snapshot()
        elif entry is not None and entry.seq == self.seq:
            self._fresh()  # the wait ended with no change: the table is confirmed current
        elif batch is not None and batch[0].seq <= self.seq + 1:
            for e in batch:   # applied together, with no await between: an ack sees all or none
                if e.seq > self.seq:
                    self._apply(e, value.seqno)
            self._fresh()
        elif not (batch is not None and await self._fill_gap(batch, value.seqno)):
            await self._catch_up(entry, value)

    async def _retry_blocked(self, head: Versioned | None) -> None:
        """Stopped (fail closed): stay stopped while the value it stopped at is still
        there unchanged (the same bytes parse the same way in this process); once it is
        gone or rewritten, a fresh snapshot decides."""
        b = self.blocked
        assert b is not None
        now = head if b.key == HEAD else await self.consensus.head(b.key)
        if now is not None and now.seqno == b.seqno:
            return
        await self._snapshot()

    async def _fill_gap(self, batch: list[LogEntry], head_index: int) -> bool:
        """A few entries missed (the fleet's CPU was busy while transitions kept
        coming): read just those keys rather than the whole kept log, so bytes per
        transition stay one entry each. False: leave it to ``_catch_up``."""
        missing = range(self.seq + 1, batch[0].seq)
        if not 0 < len(missing) <= _GAP_FETCH_MAX:
            return False
        got = await asyncio.gather(*(self.consensus.head(log_key(s)) for s in missing))
        entries = [None if v is None else self._parse_entry(v) for v in got]
        if any(e is None or e.seq != s for e, s in zip(entries, missing)):
            return False
        for e, v in zip(entries, got):
            self._apply(e, v.seqno)  # type: ignore[arg-type, union-attr]
        for e in batch:
            self._apply(e, head_index)
        self._fresh()
        return True

    async def _catch_up(self, head: LogEntry | None, head_value: Versioned | None = None) -> None:
        """Read the log entries after the last one applied; snapshot on a gap; stop
        (fail closed) at the first entry that does not parse."""
        for v in await self.consensus.scan(LOG, self._log_index + 1):
            s = seq_of(v.key)
            if s is None:
                self._block(v.key, v.seqno, None, "not a log entry key")
                return
            if s <= self.seq:
                continue
            if s > self.seq + 1:
                log.info("replica: log truncated past seq %d (next kept is %d); re-reading the snapshot", self.seq, s)
                await self._snapshot()
                return
            entry = self._parse_entry(v)
            if entry is None or entry.seq != s:
                why = self._why if entry is None else f"entry says seq {entry.seq}"
                self._block(v.key, v.seqno, s, why)
                return
            self._apply(entry, v.seqno)
        if head is not None and head.seq > self.seq:
            await self._snapshot()  # the head is ahead of every entry we could read
            return
        if head is None and head_value is not None and head_value.seqno > self._log_index:
            # An unreadable head with no log entry behind it: it may hold a cutover.
            self._block(HEAD, head_value.seqno, None, self._why)
            return
        self._fresh()

    def _apply(self, entry: LogEntry, epoch: int) -> None:
        if entry.partition is not None:
            if self.table.apply(entry.partition, entry.state, epoch):
                self.updates += 1
                if epoch > self._epoch:
                    self._epoch = Epoch(epoch)
        elif self.nodes.get(entry.node or "") != entry.url:
            self.nodes[entry.node or ""] = entry.url or ""
            self.updates += 1
        self.seq, self._log_index = entry.seq, epoch

    # ---- snapshot ----------------------------------------------------------

    async def _snapshot(self) -> None:
        head = await self.consensus.head(HEAD)
        items, read_index = await self.consensus.read_prefix(PARTITIONS)
        node_items, _ = await self.consensus.read_prefix(NODES)
        if head is None and not items and len(self.table) and self.last_read is not None:
            # The store holds nothing at all after holding a table: it was wiped (a
            # dev agent restarted, a botched restore). Keep serving the last table;
            # last_read stays old, so the sidecar's lease fails writes closed until
            # the store is seeded again.
            if not self.stale_store:
                log.error("replica: the store is empty; keeping the last table until it is re-seeded")
                self.errors += 1
            self.stale_store = True
            self.seq, self._log_index, self.index = 0, 0, max(read_index, 1)
            return
        batch = None if head is None else self._parse_head(head)
        entry = None if batch is None else batch[-1]
        if head is not None and entry is None:
            seqs = [s for s in map(seq_of, await self.consensus.list_keys(LOG)) if s is not None]
            seq = max(seqs, default=0)
        else:
            seq = 0 if entry is None else entry.seq
        snap: dict[str, tuple[PartitionState, int]] = {}
        for v in items:
            try:
                snap[v.key[len(PARTITIONS):]] = (decode_state(v.value), v.seqno)
            except ValueError as exc:
                # Fail closed: that partition may be in cutover. The table keeps its last
                # good state for reads; the blocking query waits for the next change.
                self._note_bad(v.key, v.seqno, str(exc))
                self.index = head.seqno if head is not None else max(read_index, 1)
                self._block(v.key, v.seqno, None, str(exc), snapshot=True)
                return
        self.table.replace(snap)
        self._epoch = Epoch(max((e for _, e in snap.values()), default=0))
        self.nodes = self._parse_nodes(node_items)
        self.seq, self._log_index = seq, 0 if head is None else head.seqno
        self.index = head.seqno if head is not None else max(read_index, 1)
        self.stale_store = False
        self.snapshots += 1
        self._fresh()

    def _parse_nodes(self, items: list[Versioned]) -> dict[str, str]:
        out: dict[str, str] = {}
        for v in items:
            try:
                out[node_name(v.key[len(NODES):])] = validate_url(v.value.decode(), v.key)
            except (ConfigError, UnicodeDecodeError) as exc:
                self._bad(v.key, str(exc))
                old = self.nodes.get(v.key[len(NODES):])
                if old is not None:
                    out[v.key[len(NODES):]] = old
        return out

    # ---- helpers -----------------------------------------------------------

    def _parse_head(self, v: Versioned) -> list[LogEntry] | None:
        try:
            return decode_head(v.value)
        except ValueError as exc:
            self._note_bad(v.key, v.seqno, str(exc))
            return None

    def _parse_entry(self, v: Versioned) -> LogEntry | None:
        try:
            return LogEntry.decode(v.value)
        except ValueError as exc:
            self._note_bad(v.key, v.seqno, str(exc))
            return None

    def _note_bad(self, key: str, seqno: int, why: str) -> None:
        """Count a bad value once, not on every wait (``_why`` keeps the reason)."""
        self._why = why
        if (key, seqno) not in self._last_bad:
            if len(self._last_bad) > 64:
                self._last_bad.clear()
            self._last_bad.add((key, seqno))
            self.errors += 1
            log.debug("replica: unparseable value at %s: %s", key, why)

    def _bad(self, key: str, why: str) -> None:
        self.errors += 1
        log.warning("replica: skipping unparseable value at %s: %s", key, why)

    def _block(self, key: str, seqno: int, seq: int | None, why: str, *, snapshot: bool = False) -> None:
        """Stop here (DESIGN §4.3): nothing past it is applied, ``last_read`` stays, and
        every write is refused until a fresh read parses. Logged once per new stop."""
        old = self.blocked
        self.blocked = LogBlock(key, seqno, seq, why, snapshot)
        self.admit_write = self._admit_blocked
        if old is None or (old.key, old.seqno) != (key, seqno):
            self.blocks += 1
            log.error("replica: stopped at %s (store index %d%s) it cannot parse: %s — nothing past it is applied, "
                      "no ack moves past it and every write is refused until a fresh read parses (DESIGN §4.3)",
                      key, seqno, "" if seq is None else f", log seq {seq}", why[:200])

    def _fresh(self) -> None:
        """The table is consistent with the store: lift a stop, stamp ``last_read``."""
        if self.stale_store:
            return
        if self.blocked is not None:
            b, self.blocked = self.blocked, None
            self.admit_write = self.table.admit_write
            log.warning("replica: resumed: %s (store index %d) no longer stops it; at log seq %d", b.key, b.seqno,
                        self.seq)
        self.last_read = self._clock()
