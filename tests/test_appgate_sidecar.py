"""The commit-point admit through the real sidecar (DESIGN §5 rule 6, §7).

Two app instances (nodes ``a`` and ``b``, each its own SQLite database) sit
behind a real in-process ``sidecar.Sidecar`` on the embedded store. Each app's
gate middleware admits at its commit point over the sidecar's own
``epochgate.v1.Gate`` gRPC API. The sidecar admits a write and forwards it;
the test moves the partition while the write is inside the application,
before its commit. The app rolls back and answers the stale-epoch problem; the
sidecar recognises it, re-resolves (or holds the write through cutover) and
retries, so the client sees one success and the row exists exactly once, on
the node that owns the partition when it finally commits.

The gRPC flavour of the app cannot sit behind the HTTP sidecar; its retry is
shown in ``test_appgate_servers.py`` with the retry done by the test.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from gate import AdmitClient
from tests._appgate_apps import KV, plain_asgi_app, start_aiohttp, start_uvicorn, starlette_app, stop_uvicorn
from tests._consul import free_ports
from tests._sidecar_util import config, running_sidecar, write_placement


async def _start(kind: str, kv: KV, admitter: AdmitClient):
    if kind == "aiohttp":
        runner, url = await start_aiohttp(kv, admitter)
        return url, runner.cleanup
    server, task, url = await start_uvicorn((starlette_app if kind == "starlette" else plain_asgi_app)(kv, admitter))
    return url, lambda: stop_uvicorn(server, task)


@pytest.mark.parametrize("kind", ["aiohttp", "starlette", "asgi"])
@pytest.mark.parametrize("move", ["begin", "cutover"])
async def test_stale_at_commit_is_retried_by_the_sidecar_and_lands_once(kind, move, tmp_path):
    kv_a, kv_b = KV(tmp_path / "a.sqlite"), KV(tmp_path / "b.sqlite")
    closers = []
    try:
        (control_port,) = free_ports(1)  # the apps need it before the sidecar (which needs their URLs) starts
        admitter = AdmitClient(f"127.0.0.1:{control_port}")
        closers.append(admitter.close)
        url_a, close_a = await _start(kind, kv_a, admitter)
        url_b, close_b = await _start(kind, kv_b, admitter)
        closers += [close_a, close_b]
        placement = write_placement(tmp_path / "placement.toml", {"a": url_a, "b": url_b}, {"t1": "a"})
        cfg = config(placement, hold_seconds=10, control=f"127.0.0.1:{control_port}")
        async with running_sidecar(cfg) as sc, aiohttp.ClientSession() as http:
            kv_a.pause = asyncio.Event()
            write = asyncio.create_task(_put(http, sc.port, "k", "v1"))
            await _until(kv_a.paused, write)  # admitted and forwarded by the sidecar; not committed

            e_moved = await sc.store.begin("t1", "b")
            cutover = None
            if move == "cutover":
                cutover = asyncio.create_task(sc.store.enter_cutover("t1"))  # flips now, then waits for the drain
                await _until_true(lambda: sc.table.state("t1")[0].phase.value == "cutover", cutover)
            kv_a.pause.set()

            if move == "begin":
                status, body = await write
                assert status == 200, body
                assert kv_a.rows() == [("t1", "k", "v1")] and kv_b.rows() == []  # once, on the source
                assert kv_a.epochs() == [e_moved]  # the committed attempt is the retry, at the draining epoch
            else:
                # The refused attempt ended (rolled back), so the drain completes and the
                # cutover counts; the sidecar holds the retried write until the flip.
                await asyncio.wait_for(cutover, 10)
                assert kv_a.rows() == [] and kv_b.rows() == []
                await sc.store.complete("t1")
                status, body = await write
                assert status == 200, body
                assert kv_a.rows() == [] and kv_b.rows() == [("t1", "k", "v1")]  # once, on the target
                assert kv_b.epochs() == [sc.table.state("t1")[1]]
    finally:
        for close in reversed(closers):
            await close()
        kv_a.close()
        kv_b.close()


async def _put(http: aiohttp.ClientSession, port: int, key: str, value: str) -> tuple[int, bytes]:
    async with http.put(f"http://127.0.0.1:{port}/kv/{key}", data=value, headers={"X-Partition-Key": "t1"}) as r:
        return r.status, await r.read()


async def _until(event: asyncio.Event, task: asyncio.Task) -> None:
    waiter = asyncio.ensure_future(event.wait())
    done, _ = await asyncio.wait({waiter, task}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
    if waiter not in done:
        waiter.cancel()
        raise AssertionError(f"the write never reached the app's commit point: {task.result() if task.done() else 'timeout'}")


async def _until_true(pred, task: asyncio.Task) -> None:
    for _ in range(2000):
        if pred():
            return
        if task.done():
            task.result()
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached")
