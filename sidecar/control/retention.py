"""Retention: history and finished jobs compacted on a schedule (issue 17).

Without it ``history/<p>/`` and ``jobs/`` grow for ever in Consul. The
leading controller runs ``Compactor.run_once`` every ``interval_s``:

* history: per partition, drop records beyond the newest ``history_keep`` or
  older than ``history_max_age_s`` (each bound caps it), but ALWAYS keep the
  current record (the one whose epoch is the partition's epoch: it is what
  ``partitions/<p>`` says now, so the audit trail never loses its head).
  ``truncate`` drops records below a bound, so the plan is one bound per
  partition (``history_cut``, pure).
* jobs: finished (completed/failed/aborted) records beyond ``jobs_keep`` or
  older than ``jobs_max_age_s``; a job that is not finished is never touched,
  and every delete is conditional on the record's version (a record rewritten
  since it was read is kept). Finished drain/balance operations and the
  pause/rate switches of dropped jobs go by the same bounds; a switch whose job record is
  gone (set in the instant its job was being dropped) goes at the next pass.

An explicit bound (``CompactHistory`` RPC, ``history compact``) goes through
``compact_partition_history``, which refuses a bound past the current record.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from prometheus_client import Counter, Gauge

from gate import BackendError, ConfigError, MigrationError, TxnOp, UnknownPartition, partition_id

log = logging.getLogger("epochgate.controller")

DAY = 86400.0


class CompactionRefused(MigrationError):
    """The asked bound would drop the partition's current record."""


@dataclass(frozen=True, slots=True)
class RetentionConfig:
    """How much history and how many finished jobs to keep (0 = no count bound / no age bound)."""

    history_keep: int = 100
    history_max_age_s: float = 30 * DAY
    jobs_keep: int = 1000
    jobs_max_age_s: float = 7 * DAY
    interval_s: float = 3600.0

    def __post_init__(self) -> None:
        for name in ("history_keep", "jobs_keep"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(name.replace("_", "-"), f"must be an int ≥ 0, got {v!r}")
        for name in ("history_max_age_s", "jobs_max_age_s"):
            if getattr(self, name) < 0:
                raise ConfigError(name.replace("_", "-"), f"must be ≥ 0 seconds, got {getattr(self, name)!r}")
        if self.interval_s <= 0:
            raise ConfigError("compact-every", f"must be > 0 seconds, got {self.interval_s!r}")


def history_cut(entries: Sequence[tuple[int, float]], current_epoch: int, keep: int, max_age_s: float,
                now: float) -> int | None:
    """The ``before_epoch`` bound for one partition's history, or ``None`` (nothing to drop).

    ``entries`` are ``(epoch, time)`` oldest first. A record is kept while it is
    among the newest ``keep`` AND younger than ``max_age_s`` (each bound caps
    the history; ``0`` disables it) — and the current record
    (``epoch >= current_epoch``) is kept whatever its age or rank. Everything
    below the oldest kept record goes.
    """
    n = len(entries)
    for i, (epoch, t) in enumerate(entries):
        rank = n - 1 - i   # 0 = newest
        within_count = keep == 0 or rank < keep
        within_age = max_age_s == 0 or now - t < max_age_s
        if (within_count and within_age) or epoch >= current_epoch:
            bound = min(epoch, current_epoch)
            return bound if entries[0][0] < bound else None
    # no record kept, not even a current one (history already lost its head): keep below current
    bound = current_epoch
    return bound if n and entries[0][0] < bound else None


def jobs_to_drop(jobs: Sequence[Any], keep: int, max_age_s: float, now: float) -> list[Any]:
    """Finished jobs beyond the newest ``keep`` or finished longer than ``max_age_s`` ago.
    Unfinished jobs are never returned."""
    done = sorted((j for j in jobs if j.terminal), key=lambda j: j.finished or j.started, reverse=True)
    out = []
    for rank, job in enumerate(done):
        over_count = keep > 0 and rank >= keep
        over_age = max_age_s > 0 and now - (job.finished or job.started) > max_age_s
        if over_count or over_age:
            out.append(job)
    return out


async def compact_partition_history(store: Any, partition: str, before_epoch: int) -> int:
    """Drop ``partition``'s history below ``before_epoch``; refused past the current record.

    A transition racing this only raises the current epoch, so a bound checked
    against the epoch read here still keeps the (newer) current record.
    """
    p = partition_id(partition)
    if isinstance(before_epoch, bool) or int(before_epoch) < 1:
        raise ConfigError("before_epoch", f"must be a positive epoch, got {before_epoch!r}")
    st = await store.state(p)
    if st is None:
        raise UnknownPartition(f"unknown partition {p!r}", p)
    current = int(st[1])
    if int(before_epoch) > current:
        raise CompactionRefused(f"before_epoch {before_epoch} is past the current record of {p} "
                                f"(epoch {current}); the current record is never compacted", p)
    return await store.compact_history(p, int(before_epoch))


class Compactor:
    """One scheduled compaction pass over every partition's history and the job records."""

    def __init__(self, store: Any, records: Any, consensus: Any, config: RetentionConfig, registry: Any,
                 *, ops: Any = None, clock: Callable[[], float] = time.time) -> None:
        self.store, self.records, self.consensus, self.config = store, records, consensus, config
        self.ops = ops   # drain/balance operation records: compacted with the jobs' bounds
        self.clock = clock
        self.removed = Counter("epochgate_compaction_removed_total",
                               "Records removed by scheduled or explicit compaction.", ("kind",), registry=registry)
        self.runs = Counter("epochgate_compaction_runs_total", "Compaction passes by outcome.", ("outcome",),
                            registry=registry)
        self.last_run = Gauge("epochgate_compaction_last_run_timestamp_seconds",
                              "Unix time of the last successful compaction pass.", registry=registry)
        for kind in ("history", "jobs", "ops"):
            self.removed.labels(kind)
        for outcome in ("ok", "error"):
            self.runs.labels(outcome)

    async def compact_history(self, partition: str, before_epoch: int) -> int:
        n = await compact_partition_history(self.store, partition, before_epoch)
        self.removed.labels("history").inc(n)
        return n

    async def run_once(self) -> dict[str, int]:
        """Compact everything once; returns ``{"history": n, "jobs": m}``."""
        cfg, now = self.config, self.clock()
        try:
            hist = 0
            for p, (_, epoch) in sorted((await self.store.partitions()).items()):
                entries = [(int(e.epoch), e.time) for e in await self.store.history(p)]
                bound = history_cut(entries, int(epoch), cfg.history_keep, cfg.history_max_age_s, now)
                if bound is not None:
                    hist += await compact_partition_history(self.store, p, bound)
            # the switches are listed before the jobs: a switch is only ever set for a job whose
            # record exists, so one whose job is missing from the later read is an orphan — set
            # while its job was being dropped here (set_controls checked, then this pass deleted)
            switches = await self.consensus.list_keys("control/jobs/")
            jobs, _ = await self.records.list()
            dropped = ops_dropped = 0
            live = {j.id for j in jobs}
            for key in switches:
                if key[len("control/jobs/"):] not in live:
                    await self.consensus.txn([TxnOp("delete", key)])
            for job in jobs_to_drop(jobs, cfg.jobs_keep, cfg.jobs_max_age_s, now):
                # delete-cas on the version read: a record rewritten since is kept; its
                # pause/rate switch (if any) goes with it
                if await self.consensus.txn([TxnOp("delete", f"jobs/{job.id}", None, job.version),
                                             TxnOp("delete", f"control/jobs/{job.id}")]) is not None:
                    dropped += 1
            if self.ops is not None:
                ops, _ = await self.ops.list()
                for op in jobs_to_drop(ops, cfg.jobs_keep, cfg.jobs_max_age_s, now):
                    if await self.consensus.txn([TxnOp("delete", f"ops/{op.id}", None, op.version)]) is not None:
                        ops_dropped += 1
        except BackendError:
            self.runs.labels("error").inc()
            raise
        self.removed.labels("history").inc(hist)
        self.removed.labels("jobs").inc(dropped)
        self.removed.labels("ops").inc(ops_dropped)
        self.runs.labels("ok").inc()
        self.last_run.set(now)
        if hist or dropped or ops_dropped:
            log.info("compaction: removed %d history records, %d finished jobs, %d finished operations",
                     hist, dropped, ops_dropped)
        return {"history": hist, "jobs": dropped, "ops": ops_dropped}

    async def loop(self, leading: Callable[[], bool]) -> None:
        """Every ``interval_s``, on the leader only."""
        while True:
            await asyncio.sleep(self.config.interval_s)
            if not leading():
                continue
            try:
                await self.run_once()
            except BackendError as exc:
                log.warning("compaction: %s (next pass in %gs)", exc, self.config.interval_s)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    d = RetentionConfig()
    env = os.environ.get
    ap.add_argument("--history-keep", type=int, default=int(env("EPOCHGATE_HISTORY_KEEP", d.history_keep)),
                    metavar="N", help=f"history records kept per partition (0 = no count bound; default {d.history_keep})")
    ap.add_argument("--history-max-age", type=float,
                    default=float(env("EPOCHGATE_HISTORY_MAX_AGE", d.history_max_age_s)), metavar="S",
                    help="history younger than S seconds is kept regardless (0 = no age bound; default 30 days)")
    ap.add_argument("--jobs-keep", type=int, default=int(env("EPOCHGATE_JOBS_KEEP", d.jobs_keep)), metavar="N",
                    help=f"finished jobs kept (0 = no count bound; default {d.jobs_keep})")
    ap.add_argument("--jobs-max-age", type=float, default=float(env("EPOCHGATE_JOBS_MAX_AGE", d.jobs_max_age_s)),
                    metavar="S", help="finished jobs older than S seconds are dropped (0 = never; default 7 days)")
    ap.add_argument("--compact-every", type=float, default=float(env("EPOCHGATE_COMPACT_EVERY", d.interval_s)),
                    metavar="S", help="seconds between compaction passes (default 3600)")


def from_args(args: argparse.Namespace) -> RetentionConfig:
    return RetentionConfig(args.history_keep, args.history_max_age, args.jobs_keep, args.jobs_max_age,
                           args.compact_every)
