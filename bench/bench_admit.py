"""The commit-point admit's round trip: gRPC ``Gate/AdmitWrite`` on loopback vs in-process.

    python bench/bench_admit.py [--calls 5000] [--concurrency 16]

Starts a real control server (``sidecar.api.server.start_control_server`` on
an embedded table) in its own process, as a sidecar beside the app would be,
then measures, in this one run:

* ``AdmitClient`` (grpc.aio): sequential calls, p50/p99 per call; and
  ``--concurrency`` calls in flight, admits per second;
* ``SyncAdmitClient`` (blocking grpc): sequential calls, p50/p99;
* ``LocalAdmitter`` over a ``PlacementTable`` (the embedded-replica case, the
  baseline): p50/p99 per call.

Every call must come back admitted (the bench fails otherwise, so a broken
server cannot look fast). Figures are noisy on a shared 2-core machine: read
the ratios to the in-process baseline, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gate import ADMIT, AdmitClient, LocalAdmitter, PlacementTable, SyncAdmitClient  # noqa: E402

SERVER = """
import asyncio
from gate import EmbeddedStore, PlacementTable
from sidecar.api.start import start_control_server
async def main():
    t = PlacementTable({"t1": "a"})
    s = await start_control_server("127.0.0.1:0", store=EmbeddedStore(t), source=t)
    print(s.epochgate_port, flush=True)
    await s.wait_for_termination()
asyncio.run(main())
"""


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


def show(name: str, samples_ns: list[float], base_p50: float | None = None) -> float:
    p50, p99 = pct(samples_ns, 0.50) / 1e3, pct(samples_ns, 0.99) / 1e3
    ratio = "" if base_p50 is None else f"   p50 = {p50 / base_p50:,.0f}× in-process"
    print(f"{name:<34} p50 {p50:9.1f} µs   p99 {p99:9.1f} µs{ratio}")
    return p50


def expect_admit(result: object) -> None:
    if result is not ADMIT:
        raise SystemExit(f"admit refused during the bench: {result!r}")


async def async_runs(target: str, calls: int, concurrency: int) -> tuple[list[float], float]:
    async with AdmitClient(target, timeout_s=2.0) as client:
        for _ in range(200):  # warm-up: channel connect, first-call costs
            expect_admit(await client.admit("t1", 1))
        samples = []
        for _ in range(calls):
            t0 = time.perf_counter_ns()
            r = await client.admit("t1", 1)
            samples.append(time.perf_counter_ns() - t0)
            expect_admit(r)

        per_worker = max(1, calls // concurrency)

        async def worker() -> None:
            for _ in range(per_worker):
                expect_admit(await client.admit("t1", 1))

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        rate = per_worker * concurrency / (time.perf_counter() - t0)
    return samples, rate


def sync_runs(target: str, calls: int) -> list[float]:
    with SyncAdmitClient(target, timeout_s=2.0) as client:
        for _ in range(200):
            expect_admit(client.admit("t1", 1))
        samples = []
        for _ in range(calls):
            t0 = time.perf_counter_ns()
            r = client.admit("t1", 1)
            samples.append(time.perf_counter_ns() - t0)
            expect_admit(r)
    return samples


def local_runs(calls: int) -> list[float]:
    admitter = LocalAdmitter(PlacementTable({"t1": "a"}))
    samples = []
    for _ in range(calls):
        t0 = time.perf_counter_ns()
        r = admitter.admit("t1", 1)
        samples.append(time.perf_counter_ns() - t0)
        expect_admit(r)
        admitter.done("t1", 1)
    return samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    try:
        target = f"127.0.0.1:{int(server.stdout.readline())}"
        print(f"AdmitWrite on loopback ({target}), {args.calls} sequential calls each; server in its own process")
        base = show("in-process LocalAdmitter (baseline)", local_runs(args.calls))
        samples, rate = asyncio.run(async_runs(target, args.calls, args.concurrency))
        show("AdmitClient (grpc.aio)", samples, base)
        show("SyncAdmitClient (blocking grpc)", sync_runs(target, args.calls), base)
        print(f"AdmitClient, {args.concurrency} in flight: {rate:,.0f} admits/s")
    finally:
        server.kill()
        server.wait(10)
        server.stdout.close()


if __name__ == "__main__":
    main()
