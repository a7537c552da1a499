"""Slowloris memory: 1,000 slow connections each trickling a large header.

    python bench/bench_slowloris.py [--connections 1000] [--header-kib 128] [--max-header-bytes 32768]
                                    [--chunk 1024] [--interval 0.1]

Starts a sidecar (``python -m sidecar``, one process) and measures its RSS
(/proc/PID/status VmRSS, sampled every 50 ms) in two phases on the same
process, one after the other:

1. baseline — N connections that each send a 200-byte partial head and then
   nothing: the fixed cost of N open connections;
2. hostile — N connections that each trickle one header (``X-Big: aaaa…``)
   of ``--header-kib`` KiB, ``--chunk`` bytes every ``--interval`` s, never
   ending it.

The sidecar must answer each hostile connection 431 once about
``--max-header-bytes`` of its head arrived, so its RSS growth stays below
N × max-header-bytes plus the baseline's; without the guard every connection
would buffer its whole header (N × header-kib). It prints both growths, their
ratio, and the growth as a fraction of the configured bound. Figures are noisy
on a shared machine; the ratios are the result.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def sample_peak(pid: int, stop: asyncio.Event) -> int:
    peak = 0
    while not stop.is_set():
        peak = max(peak, rss_kib(pid))
        try:
            await asyncio.wait_for(stop.wait(), 0.05)
        except asyncio.TimeoutError:
            pass
    return max(peak, rss_kib(pid))


async def one_conn(port: int, total: int, chunk: int, interval: float, hold: asyncio.Event,
                   outcome: dict[str, int], settled: list[int]) -> None:
    """Trickle one never-ending header; settle when answered or when all of it was sent,
    then keep the connection open until the phase was measured."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        outcome["connect_failed"] = outcome.get("connect_failed", 0) + 1
        settled[0] += 1
        return
    answer = asyncio.ensure_future(reader.read(200))
    key = "open"
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: bench\r\nX-Partition-Key: t1\r\nX-Big: ")
        sent = 0
        block = b"a" * chunk
        while sent < total and not answer.done():
            writer.write(block)
            await writer.drain()
            sent += chunk
            if interval:
                await asyncio.sleep(interval)
        if answer.done():
            data = answer.result()
            key = data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/1.1 ") else "eof"
    except OSError:
        key = "reset"
    settled[0] += 1
    outcome[key] = outcome.get(key, 0) + 1
    await hold.wait()
    answer.cancel()
    writer.close()


async def phase(pid: int, port: int, n: int, total: int, chunk: int, interval: float) -> tuple[int, dict[str, int]]:
    hold = asyncio.Event()
    stop = asyncio.Event()
    outcome: dict[str, int] = {}
    settled = [0]
    sampler = asyncio.ensure_future(sample_peak(pid, stop))
    tasks = []
    for i in range(n):
        tasks.append(asyncio.ensure_future(one_conn(port, total, chunk, interval, hold, outcome, settled)))
        if i % 100 == 99:
            await asyncio.sleep(0.05)  # do not overrun the accept backlog
    deadline = time.monotonic() + (total / chunk) * interval * 4 + 60
    while settled[0] < n and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # let the sidecar process what is in flight
    stop.set()
    peak = await sampler
    hold.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return peak, outcome


async def listening(port: int) -> None:
    """Until the sidecar accepts on ``port`` (≤ 20 s), then 0.5 s more for its start-up to settle
    (the idle RSS is read next)."""
    for _ in range(400):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group (the sidecar's drain), SIGKILL after 10 s."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


async def measured(args: argparse.Namespace, total: int, chunk: int, interval: float) -> tuple[int, int, dict[str, int]]:
    """A fresh sidecar process: (idle RSS KiB, peak growth KiB, outcomes) for one phase."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-slowloris-"))
    placement = tmp / "p.toml"
    placement.write_text('[nodes]\na = "http://127.0.0.1:9"\n[partitions]\nt1 = "a"\n')
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EPOCHGATE_")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sidecar", "--placement", str(placement), "--listen", f"127.0.0.1:{port}",
         "--admin", "127.0.0.1:0", "--control", "127.0.0.1:0", "--no-access-log",
         "--max-header-bytes", str(args.max_header_bytes), "--head-timeout", "600", "--idle-timeout", "600",
         "--max-connections", str(args.connections * 2)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        await listening(port)
        idle = rss_kib(proc.pid)
        peak, outcome = await phase(proc.pid, port, args.connections, total, chunk, interval)
        return idle, max(peak - idle, 1), outcome
    finally:
        stop_group(proc)


async def main_async(args: argparse.Namespace) -> int:
    n = args.connections
    limit_kib = args.max_header_bytes / 1024
    idle, base, base_out = await measured(args, 200, 200, 0.0)
    rows = []
    for kib in (args.header_kib, args.header_kib * 4):
        rows.append((kib, *await measured(args, kib * 1024, args.chunk, args.interval)))
    print(f"{n} connections; --max-header-bytes {args.max_header_bytes}; trickle {args.chunk} B every "
          f"{args.interval:g} s; sidecar idle RSS {idle / 1024:.1f} MiB; each phase on a fresh sidecar")
    print(f"{'phase':34} {'RSS growth':>11} {'/baseline':>10} {'/ (N x limit)':>14}  outcomes")
    print(f"{'baseline: 200 B partial heads':34} {base / 1024:8.1f} MiB {1:10.2f} {base / (n * limit_kib):14.2f}  {base_out}")
    for kib, _, growth, out in rows:
        print(f"{f'hostile: {kib} KiB header each':34} {growth / 1024:8.1f} MiB {growth / base:10.2f} "
              f"{growth / (n * limit_kib):14.2f}  {out}")
    small, large = rows[0][2], rows[1][2]
    print(f"growth with a 4x larger header / growth: {large / small:.2f}   (a buffering proxy: ~4; bounded: ~1)")
    print(f"what N whole headers would hold: {n * rows[1][0] / 1024:.0f} MiB; measured {large / 1024:.1f} MiB")
    ok = large / small < 1.5
    print("RESULT", "bounded by the configured limit" if ok else "NOT BOUNDED")
    return 0 if ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--header-kib", type=int, default=128)
    ap.add_argument("--max-header-bytes", type=int, default=32768)
    ap.add_argument("--chunk", type=int, default=1024)
    ap.add_argument("--interval", type=float, default=0.1)
    return asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
