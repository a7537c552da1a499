"""How much slower a system call runs after the process slept: this machine's "cold" factor.

    python bench/bench_cold.py [--count 300] [--cpu N]

A proxy at a low request rate sleeps between requests, so each request (each of its system calls,
each loop wake-up) runs after an idle gap. On some VMs what ran before the gap is gone from the
caches by then, and the same work costs several times what it costs in a tight loop; a program with
a large footprint per request (CPython) pays that more than a small one. This prints, per sleep
before each call, the p50/p90 of a 5.5 KB ``os.write`` to /dev/null and to a tmpfs file (an access
log's flush) and of ``getpid`` + ``stat`` (a bare system call), and each one's factor over the tight
loop's p50. Run it before judging a latency figure taken at a low rate on an unfamiliar machine.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

DATA = (b"x" * 229 + b"\n") * 24  # ~24 access lines
GAPS = (0.0, 0.001, 0.005, 0.02)


def timed(op, gap: float, count: int) -> tuple[float, float]:
    """p50 and p90 in µs of ``op()``, each call after sleeping ``gap`` seconds."""
    ds = []
    for _ in range(count):
        if gap:
            time.sleep(gap)
        t = time.perf_counter_ns()
        op()
        ds.append((time.perf_counter_ns() - t) / 1000)
    ds.sort()
    return ds[len(ds) // 2], ds[int(len(ds) * 0.9)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=300, help="calls per cell (default 300)")
    ap.add_argument("--cpu", type=int, help="pin to this CPU first")
    a = ap.parse_args()
    if a.cpu is not None:
        os.sched_setaffinity(0, {a.cpu})
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    null = os.open(os.devnull, os.O_WRONLY)
    with tempfile.TemporaryFile(dir=shm) as f:
        ops = {"write 5.5 KB to /dev/null": lambda: os.write(null, DATA),
               f"write 5.5 KB to a file in {shm or tempfile.gettempdir()}": lambda: os.write(f.fileno(), DATA),
               "getpid + stat": lambda: (os.getpid(), os.stat("/"))}
        print(f"{'operation':42} {'sleep before':>12} {'p50 µs':>8} {'p90 µs':>8} {'x tight p50':>11}")
        for name, op in ops.items():
            base = None
            for gap in GAPS:
                f.seek(0)
                f.truncate()
                p50, p90 = timed(op, gap, a.count)
                base = base or p50
                print(f"{name:42} {gap * 1000:>9.0f} ms {p50:>8.1f} {p90:>8.1f} {p50 / base:>10.1f}x")
    os.close(null)


if __name__ == "__main__":
    main()
