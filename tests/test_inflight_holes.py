"""In-flight accounting that cannot be cut short (DESIGN §5, §7; issue 22).

1. A client that closes its connection after sending a write does not end the write's
   in-flight count: the application is still working on it, so the cutover ack waits
   until the upstream exchange has ended.
2. A participant that cannot drain within ``--drain-seconds`` does not acknowledge the
   cutover: on the embedded store (one process, and ``--workers 2``) ``EnterCutover``
   fails and the migration is aborted back to ``from`` — it never counts with a write
   still in flight.

Real sidecars (in-process for 1 and for the single-process case of 2, a
``python -m sidecar --workers 2`` process for the other), a real upstream, real sockets.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from gate import PartitionState
from gate.pb.epochgate.v1 import epochgate_pb2 as pb
from gate.pb.epochgate.v1 import epochgate_pb2_grpc as pb_grpc
from tests._sidecar_util import (Upstream, config, free_port, running_sidecar, spawn_sidecar, wait_http,
                                 write_placement)

PUT = b"PUT /wait HTTP/1.1\r\nHost: x\r\nX-Partition-Key: t1\r\nContent-Length: 5\r\n\r\nvalue"


async def _until(pred, timeout_s: float, what: str) -> None:
    end = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.fixture
async def upstream():
    up = await Upstream("a").start()
    yield up
    await up.stop()


async def test_client_gone_write_counts_until_the_upstream_answers(upstream, tmp_path):
    p = write_placement(tmp_path / "p.toml", {"a": upstream.url, "b": "http://127.0.0.1:1"}, {"t1": "a"})
    async with running_sidecar(config(p, drain_seconds=10.0, read_timeout=30.0)) as sc:
        reader, writer = await asyncio.open_connection("127.0.0.1", sc.port)
        writer.write(PUT)
        await writer.drain()
        await _until(lambda: any(s["path"] == "/wait" for s in upstream.seen), 10, "the app to get the write")
        writer.close()                                  # the client goes away; the app keeps working
        await _until(lambda: not sc.ctx.clients, 10, "the sidecar to see the disconnect")
        await sc.store.begin("t1", "b")
        acked_at: list[float] = []
        task = asyncio.create_task(sc.store.enter_cutover("t1"))
        task.add_done_callback(lambda _: acked_at.append(time.monotonic()))
        await asyncio.wait({task}, timeout=1.5)         # on main the ack is already here (≈0.1 s)
        released_at = time.monotonic()
        upstream.release.set()                          # the app finishes (commits) the write now
        await asyncio.wait_for(task, 10)
        assert acked_at[0] >= released_at, (
            f"cutover acknowledged {released_at - acked_at[0]:.2f}s before the app finished the write")
        await _until(lambda: sc.tracker.count() == 0, 10, "the count to end")


async def test_trickled_or_partial_body_is_cut_and_not_counted(upstream, tmp_path):
    """The other half of the rule: a client gone before its body was sent whole leaves the
    app a truncated request it cannot commit — nothing to wait for, the count ends."""
    p = write_placement(tmp_path / "p.toml", {"a": upstream.url, "b": "http://127.0.0.1:1"}, {"t1": "a"})
    async with running_sidecar(config(p, drain_seconds=10.0)) as sc:
        reader, writer = await asyncio.open_connection("127.0.0.1", sc.port)
        writer.write(PUT[:-3])                          # two bytes of five
        await writer.drain()
        await _until(lambda: sc.tracker.count() == 1, 10, "the write to be admitted")
        writer.close()
        await _until(lambda: sc.tracker.count() == 0, 10, "the count to end")


async def test_embedded_cutover_not_acknowledged_while_a_write_is_stuck(upstream, tmp_path):
    p = write_placement(tmp_path / "p.toml", {"a": upstream.url, "b": "http://127.0.0.1:1"}, {"t1": "a"})
    async with running_sidecar(config(p, drain_seconds=0.5, read_timeout=30.0)) as sc:
        reader, writer = await asyncio.open_connection("127.0.0.1", sc.port)
        writer.write(PUT)
        await writer.drain()
        await _until(lambda: sc.tracker.count() == 1, 10, "the write to be in flight")
        await sc.store.begin("t1", "b")
        with pytest.raises(Exception, match="not acknowledged"):
            await sc.store.enter_cutover("t1")
        assert sc.table.state("t1")[0] == PartitionState.active("a")   # aborted: writes go on to `from`
        upstream.release.set()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200")
        writer.close()


@pytest.mark.slow
async def test_workers_cutover_not_acknowledged_while_a_write_is_stuck(upstream, tmp_path):
    p = write_placement(tmp_path / "p.toml", {"a": upstream.url, "b": "http://127.0.0.1:1"}, {"t1": "a"})
    listen, admin, control = free_port(), free_port(), free_port()
    proc = spawn_sidecar(["--placement", str(p), "--listen", f"127.0.0.1:{listen}", "--admin",
                          f"127.0.0.1:{admin}", "--control", f"127.0.0.1:{control}", "--workers", "2",
                          "--drain-seconds", "1", "--read-timeout", "30", "--no-access-log"])
    try:
        await asyncio.to_thread(wait_http, f"http://127.0.0.1:{admin}/readyz", 30)
        writers = []
        for _ in range(4):   # SO_REUSEPORT spreads connections: get one stuck write on some worker
            reader, writer = await asyncio.open_connection("127.0.0.1", listen)
            writer.write(PUT)
            await writer.drain()
            writers.append((reader, writer))
        await _until(lambda: sum(s["path"] == "/wait" for s in upstream.seen) == 4, 10, "the app to get the writes")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{control}") as ch:
            mig = pb_grpc.MigrationStub(ch)
            await mig.Begin(pb.BeginRequest(partition="t1", to_node="b"), timeout=10)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await mig.EnterCutover(pb.PartitionRequest(partition="t1"), timeout=20)
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "not acknowledged" in err.value.details()
            st = await mig.State(pb.PartitionRequest(partition="t1"), timeout=10)
            assert st.phase == pb.PHASE_ACTIVE and st.from_node == "a"
        upstream.release.set()
        for reader, writer in writers:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200")
            writer.close()
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 30)


async def test_trickling_body_cannot_hold_a_cutover(upstream, tmp_path):
    """A client sending its body slowly is cut BODY_GRACE_S after a drain starts waiting for
    it (503, not applied: the app only ever saw a truncated body), so the cutover is
    acknowledged — instead of being held until --drain-seconds and then refused."""
    from sidecar.proxy.trickle import BODY_GRACE_S

    p = write_placement(tmp_path / "p.toml", {"a": upstream.url, "b": "http://127.0.0.1:1"}, {"t1": "a"})
    async with running_sidecar(config(p, drain_seconds=5.0, read_timeout=30.0)) as sc:
        reader, writer = await asyncio.open_connection("127.0.0.1", sc.port)
        writer.write(b"PUT /wait HTTP/1.1\r\nHost: x\r\nX-Partition-Key: t1\r\nContent-Length: 100\r\n\r\nab")
        await writer.drain()
        await _until(lambda: sc.tracker.count() == 1, 10, "the write to be admitted")
        await sc.store.begin("t1", "b")
        t0 = time.monotonic()
        await sc.store.enter_cutover("t1")     # acknowledged: the trickler was cut
        took = time.monotonic() - t0
        assert sc.table.state("t1")[0].phase.value == "cutover"
        head = await asyncio.wait_for(reader.read(4096), 5)
        assert head.startswith(b"HTTP/1.1 503") and b"body-too-slow" in head, head[:300]
        assert not [s for s in upstream.seen if s["path"] == "/wait"]   # the app never had the whole body
        assert took >= BODY_GRACE_S   # the grace is given (no upper bound asserted: shared machine)
        writer.close()
