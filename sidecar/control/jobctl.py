"""Pause/resume and copy rate limits, per job and fleet-wide (issue 17).

Kept in Consul beside the jobs, so every controller (and the next leader
after a fail-over) sees the same switches:

    <prefix>control/fleet       {"paused": bool, "rate": bytes/s}   the fleet
    <prefix>control/jobs/<id>   {"paused": bool, "rate": bytes/s}   one job
    <prefix>control/cordon      {"nodes": [...]}                    drained nodes balance skips

A paused job holds before its next phase: before ``begin`` (so a paused
fleet starts no job), before its bulk copy, and before ``enter_cutover``.
It never holds once in cutover — writes to the partition are refused fleet-wide
until the flip, so holding there would turn a pause into an outage; the
delta replay after the barrier is never throttled for the same reason.

While a job holds, the runner still notices an abort request and the loss
of the controller lock.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any, Callable

from gate import BackendError, ConfigError, failure_level

from .runner import AbortRequested
from .throttle import Pacer

log = logging.getLogger("epochgate.controller")

FLEET = ""   # the id that names the fleet-wide switch


@dataclass(frozen=True, slots=True)
class Control:
    paused: bool = False
    rate: float = 0.0   # bytes/s, 0 = unlimited

    def encode(self) -> bytes:
        return json.dumps({"paused": self.paused, "rate": self.rate}).encode()

    @classmethod
    def decode(cls, raw: bytes) -> "Control":
        try:
            d = json.loads(raw)
            return cls(bool(d.get("paused")), max(0.0, float(d.get("rate") or 0.0)))
        except (ValueError, TypeError, AttributeError):
            return cls()


def _decode_nodes(raw: bytes) -> frozenset[str]:
    try:
        return frozenset(str(n) for n in json.loads(raw).get("nodes", ()))
    except (ValueError, TypeError, AttributeError):
        return frozenset()


class JobControls:
    """The switches, cached from Consul (``refresh``/``follow``) and written through ``set``."""

    def __init__(self, consul: Any, prefix: str = "epochgate/") -> None:
        self.consul = consul
        self.dir = f"{prefix}control/"
        self.fleet = Control()
        self.jobs: dict[str, Control] = {}
        self.cordoned: frozenset[str] = frozenset()
        self.holding: dict[str, str] = {}   # job id → the phase it waits before (for views and tests)
        self.changed = asyncio.Event()
        self.pacer = Pacer(lambda: self.fleet.rate, lambda job_id: self.get(job_id).rate)
        self._index = 0

    def _key(self, job_id: str) -> str:
        return self.dir + ("fleet" if job_id == FLEET else f"jobs/{job_id}")

    def get(self, job_id: str) -> Control:
        return self.fleet if job_id == FLEET else self.jobs.get(job_id, Control())

    def paused(self, job_id: str) -> bool:
        return self.fleet.paused or self.get(job_id).paused

    def _apply(self, entries: list) -> None:
        fleet, jobs, cordoned = Control(), {}, frozenset()
        for e in entries:
            rel = e.key[len(self.dir):]
            if rel == "cordon":
                cordoned = _decode_nodes(e.value)
            elif rel == "fleet":
                fleet = Control.decode(e.value)
            elif rel.startswith("jobs/"):
                jobs[rel[5:]] = Control.decode(e.value)
        self.fleet, self.jobs, self.cordoned = fleet, jobs, cordoned
        self.changed.set()

    async def refresh(self, wait_s: float | None = None) -> None:
        """Read the switches (blocking up to ``wait_s`` for a change after the last read)."""
        index = self._index if wait_s else None
        entries, idx = await self.consul.list(self.dir, index=index or None, wait_s=wait_s or 1.0)
        self._index = idx if idx >= self._index else 0
        self._apply(entries)

    async def follow(self) -> None:
        """Keep the cache current (a controller runs this for its lifetime)."""
        while True:
            try:
                await self.refresh(wait_s=2.0)
            except BackendError as exc:
                log.log(failure_level(exc), "job controls: %s", exc)
                await asyncio.sleep(1.0)

    async def set(self, job_id: str, *, paused: bool | None = None, rate: float | None = None) -> Control:
        if rate is not None and (rate != rate or rate < 0):
            raise ConfigError("rate_bytes_per_s", f"must be ≥ 0 (0 = unlimited), got {rate!r}")
        key = self._key(job_id)
        for _ in range(20):
            entry = await self.consul.get(key)
            cur = Control.decode(entry.value) if entry is not None else Control()
            new = Control(cur.paused if paused is None else bool(paused), cur.rate if rate is None else float(rate))
            if await self.consul.put(key, new.encode(), cas=entry.modify_index if entry is not None else 0):
                if job_id == FLEET:
                    self.fleet = new
                else:
                    self.jobs[job_id] = new
                self.changed.set()
                return new
            await asyncio.sleep(0.01)
        raise BackendError(f"could not record the control of {job_id or 'the fleet'} (concurrent changes)")

    async def cordon(self, node: str, on: bool) -> frozenset[str]:
        """Add ``node`` to (or take it off) the cordoned set balance leaves alone."""
        key = self.dir + "cordon"
        for _ in range(20):
            entry = await self.consul.get(key)
            nodes = _decode_nodes(entry.value) if entry is not None else frozenset()
            nodes = nodes | {node} if on else nodes - {node}
            raw = json.dumps({"nodes": sorted(nodes)}).encode()
            if await self.consul.put(key, raw, cas=entry.modify_index if entry is not None else 0):
                self.cordoned = nodes
                return nodes
            await asyncio.sleep(0.01)
        raise BackendError("could not record the cordoned nodes (concurrent changes)")

    async def forget(self, job_id: str) -> None:
        """Drop a finished job's switch."""
        if job_id != FLEET and job_id in self.jobs:
            self.jobs.pop(job_id, None)
            await self.consul.delete(self._key(job_id))

    async def hold(self, job: Any, check: Callable[[], None], records: Any, phase: str) -> None:
        """Return once neither the job nor the fleet is paused; raise ``AbortRequested`` on an
        abort request and whatever ``check`` raises when the lock is lost."""
        for partition in getattr(job, "copied", (job.partition,)):   # a merge copies two slots
            if phase == "copy":
                self.pacer.start(partition, job.id)
            elif phase == "cutover":
                self.pacer.stop(partition)
        try:
            await self._hold(job, check, records, phase)
        finally:
            self.holding.pop(job.id, None)

    async def _hold(self, job: Any, check: Callable[[], None], records: Any, phase: str) -> None:
        announced = False
        while True:
            check()
            if not self.paused(job.id):
                if announced:
                    log.info("job %s: resumed before %s", job.id, phase)
                return
            if not announced:
                log.info("job %s: paused before %s", job.id, phase)
                self.holding[job.id] = phase
                announced = True
            latest = await records.get(job.id)
            if latest is not None and latest.abort_requested:
                raise AbortRequested(job.id)
            self.changed.clear()
            try:
                async with asyncio.timeout(0.5):  # not wait_for: it can lose a cancel on 3.11
                    await self.changed.wait()
            except asyncio.TimeoutError:
                pass
