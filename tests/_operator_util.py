"""Helpers for the operator's-day tests (issue 17): an in-process controller with its
control API, a recording mover with a gate, fake barrier participants, the CLI as a
subprocess, and a waiter that polls for an event (never a bare sleep)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Awaitable, Callable

from gate._sessions import ConsulHTTP
from sidecar.control.controller import Controller
from sidecar.api.start import start_control_server
from sidecar.control.retention import RetentionConfig

ROOT = Path(__file__).resolve().parent.parent


class GatedMover:
    """Moves nothing; records calls; ``gate`` (an Event) blocks copies; tracks concurrency."""

    def __init__(self, copy_s: float = 0.0) -> None:
        self.calls: list[tuple] = []
        self.gate: asyncio.Event | None = None
        self.copy_s = copy_s
        self.running = 0
        self.max_running = 0
        self.copying: set[str] = set()

    async def copy(self, partition, source_url, target_url, progress, check=None, *, fence=0):
        self.calls.append(("copy", partition))
        self.running += 1
        self.copying.add(partition)
        self.max_running = max(self.max_running, self.running)
        try:
            progress(100)
            if self.gate is not None:
                await self.gate.wait()
            if self.copy_s:
                await asyncio.sleep(self.copy_s)
            return "1"
        finally:
            self.running -= 1
            self.copying.discard(partition)

    async def copy_delta(self, partition, source_url, target_url, since, progress, check=None, *, fence=0):
        self.calls.append(("delta", partition))
        progress(1)
        return "2"


async def until(pred: Callable[[], Awaitable[Any] | Any], timeout: float = 20.0, what: str = "condition") -> Any:
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if asyncio.iscoroutine(v):
            v = await v
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@asynccontextmanager
async def controller(consul_url: str, prefix: str, *, owner: str = "ctl", mover: Any = None,
                     retention: RetentionConfig | None = None, deadline_s: float = 5.0):
    ctl = Controller(consul_url, prefix, deadline_s=deadline_s, mover=mover or GatedMover(), owner=owner,
                     retention=retention)
    await ctl.start()
    server = await start_control_server("127.0.0.1:0", store=ctl.store, source=ctl.replica, jobs=ctl)
    ctl.control = f"127.0.0.1:{server.epochgate_port}"   # type: ignore[attr-defined]
    try:
        yield ctl
    finally:
        await server.stop(0.5)
        await ctl.stop()


@asynccontextmanager
async def participants(consul_url: str, prefix: str, ids: list[str], epoch: int = 0):
    """Fake barrier participants: ``sidecars/<id>`` held by a session, acking every epoch."""
    consul = ConsulHTTP(consul_url)
    sids = {}
    for pid in ids:
        sids[pid] = await consul.session_create(f"test-{pid}", 30)
        assert await consul.acquire(f"{prefix}sidecars/{pid}", str(epoch).encode(), sids[pid])

    async def ack_forever():   # publish a high epoch: every barrier passes at once
        while True:
            for pid, sid in sids.items():
                await consul.acquire(f"{prefix}sidecars/{pid}", b"999999999", sid)
            await asyncio.sleep(0.2)

    task = None

    def start_acking() -> None:
        nonlocal task
        task = asyncio.create_task(ack_forever())

    try:
        yield start_acking
    finally:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for sid in sids.values():
            await consul.session_destroy(sid)
        await consul.close()


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EPOCHGATE_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


async def cli(control: str, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sidecar", *args, "--control", control, cwd=ROOT, env=_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert "Traceback" not in err.decode(), err.decode()
    return proc.returncode, out.decode(), err.decode()
