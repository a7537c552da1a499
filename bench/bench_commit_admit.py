"""What the commit-point admit costs the example app (DESIGN §5 rule 6, §11).

Runs three processes on loopback: a control server (embedded table), the
example app admitting through the sidecar's Gate gRPC API (``--gate``), and
the same app admitting in-process against a plain PlacementTable (baseline: the
cost of the commit without a remote admit). Drives PUTs at a fixed
concurrency for a fixed time against each and prints throughput and latency;
compare the ratio, not the absolute figures (2 shared cores).

    python bench/bench_commit_admit.py [--seconds 3] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent

CONTROL = """
import asyncio, sys
from gate import EmbeddedStore, PlacementTable
from sidecar.api.start import start_control_server
async def main():
    t = PlacementTable({"t1": "a"})
    s = await start_control_server("127.0.0.1:0", store=EmbeddedStore(t, {"a": "http://127.0.0.1:1"}), source=t)
    print(s.epochgate_port, flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""

BASELINE = """
import asyncio, sys
from aiohttp import web
from gate import LocalAdmitter, PlacementTable
from examples.kv import build_app
app = build_app("a", sys.argv[1], LocalAdmitter(PlacementTable({"t1": "a"}), require_participant=False))
async def main():
    r = web.AppRunner(app, access_log=None); await r.setup()
    await web.TCPSite(r, "127.0.0.1", 0).start()
    h, p = r.addresses[0][:2]
    print(f"examples.kv node a listening on http://{h}:{p}", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


async def spawn(*args: str) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, *args, cwd=ROOT, stdout=asyncio.subprocess.PIPE,
                                                env={**os.environ, "PYTHONPATH": str(ROOT)})
    line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
    return proc, line


async def drive(url: str, seconds: float, concurrency: int) -> tuple[float, list[float]]:
    lat: list[float] = []
    end = time.monotonic() + seconds
    headers = {"X-Partition": "t1", "X-Placement-Epoch": "1"}

    async def worker(i: int, http: aiohttp.ClientSession) -> None:
        n = 0
        while time.monotonic() < end:
            t0 = time.perf_counter()
            async with http.put(f"{url}/kv/w{i}-{n % 100}", data=b"x" * 64, headers=headers) as r:
                await r.read()
                assert r.status == 200, r.status
            lat.append(time.perf_counter() - t0)
            n += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:
        t0 = time.monotonic()
        await asyncio.gather(*(worker(i, http) for i in range(concurrency)))
        took = time.monotonic() - t0
    return len(lat) / took, lat


def pct(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=100)[int(q) - 1] * 1000


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()
    procs = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            ctl, port = await spawn("-c", CONTROL)
            procs.append(ctl)
            gated, line = await spawn("-m", "examples.kv", "--node", "a", "--listen", "127.0.0.1:0",
                                      "--data", f"{tmp}/gated", "--gate", f"127.0.0.1:{port}")
            procs.append(gated)
            gated_url = line.split()[-1]
            base, line = await spawn("-c", BASELINE, f"{tmp}/base")
            procs.append(base)
            base_url = line.split()[-1]
            await drive(base_url, 0.5, args.concurrency)  # warm up both
            await drive(gated_url, 0.5, args.concurrency)
            rows = []
            for name, url in (("in-process admit (baseline)", base_url), ("Gate gRPC admit (--gate)", gated_url)):
                rate, lat = await drive(url, args.seconds, args.concurrency)
                rows.append((name, rate, pct(lat, 50), pct(lat, 99)))
        finally:
            for p in procs:
                p.terminate()
                await p.wait()
    print(f"PUT /kv/{{key}} on the example app, concurrency {args.concurrency}, {args.seconds:g}s each")
    for name, rate, p50, p99 in rows:
        print(f"  {name:<30} {rate:8.0f} req/s   p50 {p50:6.2f} ms   p99 {p99:6.2f} ms")
    print(f"  gated / baseline throughput: {rows[1][1] / rows[0][1]:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
