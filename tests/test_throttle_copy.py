"""The copy throttle on a real copy (issue 17): the controller's HTTP-hooks mover
streams a partition from a source app to a target app over loopback; the target
timestamps each import batch, so the rate is measured where the bytes land.
The fleet-wide limit (set with the CLI) holds within 10 %, and a per-job limit
set through the control API while the copy runs takes over within 10 % too."""

from __future__ import annotations

import time

import grpc
import pytest
from aiohttp import web

from sidecar.control.mover import HttpHooksMover
from gate.pb.epochgate.v1 import epochgate_pb2 as pb
from gate.pb.epochgate.v1 import epochgate_pb2_grpc as pb_grpc

from ._operator_util import cli, controller, until

pytestmark = [pytest.mark.consul]

LINE = b'{"key":"k%06d","value":"' + b"v" * 1000 + b'"}\n'
TOTAL_LINES = 2400       # ~2.4 MB
BATCH = 32 * 1024


async def _apps():
    imports: list[tuple[float, int]] = []

    async def export(request):
        resp = web.StreamResponse(headers={"X-Epochgate-Cursor": "5", "Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        for i in range(TOTAL_LINES):
            await resp.write(LINE % i)
        await resp.write_eof()
        return resp

    async def delta(request):
        return web.Response(body=b"", headers={"X-Epochgate-Cursor": "6"})

    async def imp(request):
        body = await request.read()
        imports.append((time.monotonic(), len(body)))
        return web.json_response({"imported": body.count(b"\n")})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_get("/_epochgate/export", export)
    app.router.add_get("/_epochgate/delta", delta)
    app.router.add_post("/_epochgate/import", imp)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}", imports


def _rate(imports: list[tuple[float, int]], i: int, j: int) -> float:
    """Bytes/s from batch i's arrival to batch j's (the bytes of batches i+1..j)."""
    return sum(n for _, n in imports[i + 1:j + 1]) / (imports[j][0] - imports[i][0])


async def test_fleet_and_live_per_job_limits_hold_within_ten_percent(consul_agent, kv_prefix):
    runner, url, imports = await _apps()
    try:
        mover = HttpHooksMover(batch_bytes=BATCH)
        async with controller(consul_agent.url, kv_prefix, mover=mover) as ctl:
            await ctl.store.set_node("a", url)
            await ctl.store.set_node("b", url)
            await ctl.store.set("t1", "a")
            code, out, _ = await cli(ctl.control, "jobs", "throttle", "--rate", "1M")
            assert code == 0 and "1,000,000 B/s" in out
            job = await ctl.migrate("t1", "b")
            await until(lambda: sum(n for _, n in imports) >= 700_000, what="the first 700 kB")
            # the live change goes through the same RPC the CLI calls (a CLI subprocess can take
            # seconds to start on a loaded machine: most of the copy would be over)
            async with grpc.aio.insecure_channel(ctl.control) as ch:
                c = await pb_grpc.MigrationStub(ch).SetJobControl(
                    pb.JobControlRequest(id=job.id, set_rate=True, rate_bytes_per_s=400_000), timeout=10)
            assert c.rate_bytes_per_s == 400_000
            changed = len(imports)
            await until(lambda: ctl.get(job.id), what="record")

            async def done():
                return (await ctl.get(job.id)).terminal
            await until(done, timeout=30, what="the copy to finish")
            assert (await ctl.get(job.id)).status == "completed"
        assert sum(n for _, n in imports) == len(LINE % 0) * TOTAL_LINES
        assert changed > 10 and len(imports) - changed > 20, (changed, len(imports))
        fleet = _rate(imports, 1, changed - 2)
        per_job = _rate(imports, changed + 1, len(imports) - 1)
        print(f"measured: fleet limit 1,000,000 B/s → {fleet:,.0f} B/s ({fleet / 1e6:.3f}×); "
              f"job limit 400,000 B/s → {per_job:,.0f} B/s ({per_job / 4e5:.3f}×)")
        assert fleet == pytest.approx(1_000_000, rel=0.10)
        assert per_job == pytest.approx(400_000, rel=0.10)
    finally:
        await runner.cleanup()
