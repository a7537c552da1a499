"""The app-side write gate against real servers (DESIGN §5 rule 6, §7).

Each framework — aiohttp, Starlette under uvicorn, plain ASGI under uvicorn,
grpc.aio — serves a SQLite KV app behind its gate middleware; the commit-point
admit goes over loopback gRPC to the real ``epochgate.v1.Gate`` server
(``sidecar.api.server.start_control_server``) on an embedded table.

Here the sidecar's part (resolve, admit, stamp, retry a stale-epoch answer) is
played by ``_StandInSidecar`` below — the retry is done by the test — so the
same scenario runs for every framework incl. grpc.aio, which cannot sit behind
the HTTP sidecar. ``test_appgate_sidecar.py`` runs the HTTP frameworks through
the real sidecar, whose own retry makes the write land once.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc
import pytest

import gate
from gate import AdmitClient, EmbeddedStore, PlacementTable, SyncAdmitClient
from sidecar.api.start import start_control_server
from tests._appgate_apps import (
    GRPC_GET,
    GRPC_PUT,
    KV,
    plain_asgi_app,
    start_aiohttp,
    start_grpc_app,
    start_uvicorn,
    starlette_app,
    stop_uvicorn,
)
from tests._consul import free_ports

FRAMEWORKS = ["aiohttp", "starlette", "asgi", "grpc"]


@dataclass
class Answer:
    ok: bool
    status: int | str  # HTTP status, or the gRPC code name
    problem: dict | None
    meta: dict


class App:
    """One running app server of the given framework; ``put`` speaks its protocol."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._close: list[Any] = []

    async def start(self, kv: KV, admitter: Any, **opts: Any) -> "App":
        if self.kind == "aiohttp":
            runner, self.url = await start_aiohttp(kv, admitter, **opts)
            self._close.append(runner.cleanup)
        elif self.kind in ("starlette", "asgi"):
            make = starlette_app if self.kind == "starlette" else plain_asgi_app
            server, task, self.url = await start_uvicorn(make(kv, admitter, **opts))
            self._close.append(lambda: stop_uvicorn(server, task))
        else:
            server, self.target = await start_grpc_app(kv, admitter, **opts)
            self.channel = grpc.aio.insecure_channel(self.target)
            self._close += [lambda: server.stop(None), self.channel.close]
        if self.kind != "grpc":
            self.http = aiohttp.ClientSession()
            self._close.append(self.http.close)
        return self

    async def put(self, key: str, value: str, stamp: tuple[str, int] | None) -> Answer:
        if self.kind == "grpc":
            md = () if stamp is None else (("x-partition", stamp[0]), ("x-placement-epoch", str(stamp[1])))
            call = self.channel.unary_unary(GRPC_PUT)
            try:
                await call(json.dumps({"key": key, "value": value}).encode(), metadata=md, timeout=10)
                return Answer(True, "OK", None, {})
            except grpc.aio.AioRpcError as exc:
                problem = json.loads(exc.details()) if exc.details().startswith("{") else None
                return Answer(False, exc.code().name, problem, dict(exc.trailing_metadata() or ()))
        headers = {} if stamp is None else {"X-Partition": stamp[0], "X-Placement-Epoch": str(stamp[1])}
        async with self.http.put(f"{self.url}/kv/{key}", data=value, headers=headers) as resp:
            body = await resp.read()
            problem = json.loads(body) if resp.content_type == "application/problem+json" else None
            return Answer(resp.status == 200, resp.status, problem, dict(resp.headers))

    async def close(self) -> None:
        for fn in reversed(self._close):
            await fn()


class _StandInSidecar:
    """What the sidecar does with a write (DESIGN §7), minus the HTTP proxying:
    resolve, admit at the resolved epoch, stamp, forward; on a stale-epoch
    answer from the app (never committed), re-resolve and retry."""

    def __init__(self, table: PlacementTable, app: App) -> None:
        self.table = table
        self.app = app

    async def write(self, partition: str, key: str, value: str) -> Answer:
        at = self.table.get(partition)
        assert self.table.admit_write(partition, at.epoch), "the sidecar admits before forwarding"
        return await self.app.put(key, value, (partition, int(at.epoch)))


async def _until(event: asyncio.Event, task: asyncio.Task) -> None:
    """Wait for ``event``; fail at once if ``task`` ends first (no hang)."""
    waiter = asyncio.ensure_future(event.wait())
    done, _ = await asyncio.wait({waiter, task}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
    if waiter not in done:
        waiter.cancel()
        raise AssertionError(f"the write never reached its commit point: {task.result() if task.done() else 'timeout'}")


@pytest.fixture
async def gate_server():
    table = PlacementTable({"t1": "a", "t2": "b"})
    server = await start_control_server("127.0.0.1:0", store=EmbeddedStore(table, {"a": "http://127.0.0.1:1", "b": "http://127.0.0.1:2"}), source=table)
    yield table, f"127.0.0.1:{server.epochgate_port}"
    await server.stop(None)


@pytest.fixture
def kv(tmp_path):
    store = KV(tmp_path / "kv.sqlite")
    yield store
    store.close()


def _is_stale_answer(ans: Answer) -> bool:
    if ans.status == "ABORTED":
        return ans.problem is not None and ans.problem["type"].endswith("stale-epoch")
    ctype = ans.meta.get("Content-Type")
    return gate.is_stale_epoch_problem(ans.status, ctype, ans.problem or {}) and ans.meta.get("Retry-After") == "1"


@pytest.mark.parametrize("kind", FRAMEWORKS)
@pytest.mark.parametrize("move", ["begin", "cutover"])
async def test_write_going_stale_before_commit_rolls_back_and_retry_lands_once(kind, move, gate_server, kv):
    table, target = gate_server
    async with AdmitClient(target) as admitter:
        app = await App(kind).start(kv, admitter)
        try:
            sidecar = _StandInSidecar(table, app)
            kv.pause = asyncio.Event()
            first = asyncio.create_task(sidecar.write("t1", "k", "v1"))
            await _until(kv.paused, first)  # admitted by the sidecar, row inserted, not committed
            table.begin_migration("t1", "b")
            if move == "cutover":
                table.enter_cutover("t1")
            kv.pause.set()
            ans = await first

            assert not ans.ok and _is_stale_answer(ans), ans
            expected_reason = "stale_epoch" if move == "begin" else "cutover"
            expected_phase = "draining" if move == "begin" else "cutover"
            assert ans.problem["reason"] == expected_reason
            assert ans.problem["phase"] == expected_phase
            assert ans.problem["partition"] == "t1"
            assert ans.problem["epoch"] == int(table.get("t1").epoch)
            assert ans.problem["placement"] == "a"
            assert kv.rows() == []  # rolled back

            if move == "cutover":
                table.complete_migration("t1")  # the sidecar holds the write until the flip
            kv.pause = None
            # The retry the sidecar does on a stale-epoch answer (never committed).
            again = await sidecar.write("t1", "k", "v1")
            assert again.ok, again
            assert kv.rows() == [("t1", "k", "v1")]  # exactly once
            assert kv.epochs() == [int(table.get("t1").epoch)]  # ... by the retry, at the current epoch
        finally:
            await app.close()


@pytest.mark.parametrize("kind", FRAMEWORKS)
async def test_sidecar_down_refuses_commit(kind, gate_server, kv):
    table, target = gate_server
    (dead_port,) = free_ports(1)
    async with AdmitClient(f"127.0.0.1:{dead_port}") as admitter:
        app = await App(kind).start(kv, admitter)
        try:
            ans = await app.put("k", "v", ("t1", int(table.get("t1").epoch)))
            assert not ans.ok and _is_stale_answer(ans), ans
            assert ans.problem["reason"] == "fail_closed"
            assert ans.problem["epoch"] is None
            assert kv.rows() == []
            assert admitter.last_error and "UNAVAILABLE" in admitter.last_error
        finally:
            await app.close()


async def test_sidecar_stopped_after_serving_refuses_commit(kv):
    table = PlacementTable({"t1": "a"})
    server = await start_control_server("127.0.0.1:0", store=EmbeddedStore(table), source=table)
    async with AdmitClient(f"127.0.0.1:{server.epochgate_port}") as admitter:
        app = await App("aiohttp").start(kv, admitter)
        try:
            stamp = ("t1", int(table.get("t1").epoch))
            assert (await app.put("k", "before", stamp)).ok
            await server.stop(None)
            ans = await app.put("k", "after", stamp)
            assert ans.status == 503 and ans.problem["reason"] == "fail_closed"
            assert kv.rows() == [("t1", "k", "before")]
        finally:
            await app.close()
            await server.stop(None)


_GATE_PROC = """
import asyncio, sys
from gate import EmbeddedStore, PlacementTable
from sidecar.api.start import start_control_server

async def main():
    table = PlacementTable({"t1": "a"})
    server = await start_control_server("127.0.0.1:0", store=EmbeddedStore(table), source=table)
    print(server.epochgate_port, flush=True)
    await server.wait_for_termination()

asyncio.run(main())
"""


@pytest.fixture
def gate_process():
    """A real Gate server in its own process, so a test can freeze it (SIGSTOP)."""
    proc = subprocess.Popen([sys.executable, "-c", _GATE_PROC], stdout=subprocess.PIPE, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        port = int(proc.stdout.readline())
        yield proc, f"127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.wait(10)
        proc.stdout.close()


@pytest.mark.parametrize("kind", ["aiohttp", "starlette", "grpc"])
async def test_sidecar_frozen_refuses_commit_then_recovers(kind, gate_process, kv):
    proc, target = gate_process
    async with AdmitClient(target, timeout_s=0.3) as admitter:
        app = await App(kind).start(kv, admitter)
        try:
            assert (await app.put("k", "warm", ("t1", 1))).ok  # channel connected
            proc.send_signal(signal.SIGSTOP)
            ans = await app.put("k", "frozen", ("t1", 1))
            assert not ans.ok and ans.problem["reason"] == "fail_closed", ans
            assert admitter.last_error and "DEADLINE_EXCEEDED" in admitter.last_error
            proc.send_signal(signal.SIGCONT)
            assert (await app.put("k", "thawed", ("t1", 1))).ok
            assert [r[2] for r in kv.rows()] == ["warm", "thawed"]
        finally:
            await app.close()


def test_sync_client_fails_closed_when_frozen_and_admits_when_thawed(gate_process):
    proc, target = gate_process
    with SyncAdmitClient(target, timeout_s=0.3) as client:
        assert client.admit("t1", 1) is gate.ADMIT
        stale = client.admit("t1", 0)
        assert stale.reason is gate.RejectReason.STALE_EPOCH and stale.current == ("a", 1)
        proc.send_signal(signal.SIGSTOP)
        assert client.admit("t1", 1).reason is gate.RejectReason.FAIL_CLOSED
        proc.send_signal(signal.SIGCONT)
        assert client.admit("t1", 1) is gate.ADMIT


@pytest.mark.parametrize("kind", FRAMEWORKS)
async def test_unstamped_write_is_refused_with_a_problem_naming_the_header(kind, gate_server, kv):
    table, target = gate_server
    async with AdmitClient(target) as admitter:
        app = await App(kind).start(kv, admitter)
        try:
            ans = await app.put("k", "v", None)
            assert not ans.ok
            if kind == "grpc":
                assert ans.status == "FAILED_PRECONDITION"
            else:
                assert ans.status == 428 and ans.problem["field"] == "X-Partition"
                assert ans.problem["type"].endswith("unstamped-write")
            assert kv.rows() == []
        finally:
            await app.close()


@pytest.mark.parametrize("kind", FRAMEWORKS)
async def test_allow_unstamped_commits_for_local_development(kind, gate_server, kv):
    table, target = gate_server
    async with AdmitClient(target) as admitter:
        app = await App(kind).start(kv, admitter, allow_unstamped=True)
        try:
            assert (await app.put("k", "dev", None)).ok
            assert kv.rows() == [("-", "k", "dev")]
        finally:
            await app.close()


async def test_malformed_epoch_header_is_named(gate_server, kv):
    table, target = gate_server
    async with AdmitClient(target) as admitter:
        app = await App("aiohttp").start(kv, admitter)
        try:
            async with app.http.put(f"{app.url}/kv/k", data="v", headers={"X-Partition": "t1", "X-Placement-Epoch": "x1"}) as resp:
                body = await resp.json(content_type=None)
            assert resp.status == 428 and body["field"] == "X-Placement-Epoch"
            async with app.http.get(f"{app.url}/kv/k") as resp:  # reads are not gated
                assert resp.status == 200
            assert kv.rows() == []
        finally:
            await app.close()


async def test_grpc_read_method_passes_unstamped_and_abort_carries_trailers(gate_server, kv):
    table, target = gate_server
    async with AdmitClient(target) as admitter:
        app = await App("grpc").start(kv, admitter)
        try:
            got = await app.channel.unary_unary(GRPC_GET)(json.dumps({"key": "k"}).encode(), timeout=10)
            assert json.loads(got) == {"values": []}
            ans = await app.put("k", "v", ("t1", 0))  # an epoch that was never current
            assert ans.status == "ABORTED"
            assert ans.meta["x-epochgate-reason"] == "stale_epoch"
            assert ans.meta["x-placement"] == "a" and ans.meta["x-placement-epoch"] == str(int(table.get("t1").epoch))
            assert kv.rows() == []
        finally:
            await app.close()


async def test_bearer_token_reaches_the_gate_and_a_wrong_one_fails_closed():
    table = PlacementTable({"t1": "a"})
    server = await start_control_server("127.0.0.1:0", store=EmbeddedStore(table), source=table, token="s3cret")
    target = f"127.0.0.1:{server.epochgate_port}"
    try:
        async with AdmitClient(target, token="s3cret") as good, AdmitClient(target, token="wrong") as bad:
            assert await good.admit("t1", 1) is gate.ADMIT
            assert (await bad.admit("t1", 1)).reason is gate.RejectReason.FAIL_CLOSED
            assert "UNAUTHENTICATED" in bad.last_error
        with SyncAdmitClient(target, token="s3cret") as sync_good:
            # Off the loop thread: the server runs on this loop, a blocking call here would starve it.
            assert await asyncio.to_thread(sync_good.admit, "t1", 1) is gate.ADMIT, sync_good.last_error
    finally:
        await server.stop(None)


async def test_admits_again_soon_after_the_sidecar_restarts_on_its_port():
    """Recovery after a short outage. (The reconnect-backoff cap in ``_admit``
    matters after long outages, which this test does not wait through.)"""
    table = PlacementTable({"t1": "a"})
    (port,) = free_ports(1)
    addr = f"127.0.0.1:{port}"
    server = await start_control_server(addr, store=EmbeddedStore(table), source=table)
    async with AdmitClient(addr) as client:
        assert await client.admit("t1", 1) is gate.ADMIT
        await server.stop(None)
        for _ in range(3):  # a few failures push gRPC's reconnect backoff up
            assert (await client.admit("t1", 1)).reason is gate.RejectReason.FAIL_CLOSED
            await asyncio.sleep(0.3)
        server = await start_control_server(addr, store=EmbeddedStore(table), source=table)
        try:
            for _ in range(100):  # bounded poll, not a timing assertion
                if await client.admit("t1", 1) is gate.ADMIT:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"still failing closed after the restart: {client.last_error}")
        finally:
            await server.stop(None)
