"""Which leg of the sidecar's path adds latency at a low rate: HTTP/1.1 or HTTP/2 downstream, HTTP/1.1 or h2c upstream.

    python bench/bench_h2_legs.py [--rps 50] [--calls 150] [--rounds 3]

At a rate far below any saturation (one connection, ``--rps`` requests per second, one in flight),
the latency a proxy adds is its own path — wake-ups, writes, hand-offs between its two
connections — not queueing. bench_grpc_latency.py found the sidecar adding several times nginx's
p50 to gRPC unary calls at every rate; this bench splits the sidecar's path by protocol leg, with
bench_grpc.py's upstream (nginx answering h2c gRPC-shaped calls and HTTP/1.1) and the sidecar on its
compiled HTTP/2 engine (``--h2py`` adds pure-Python h2):

    client -> sidecar -> node      h2load options
    h1 -> h1    POST 64 B          --h1 -d msg   (partition t2: node http://)
    h1 -> h2c   POST 64 B          --h1 -d msg   (partition t1: node h2c://)
    h2c -> h1   gRPC unary         -m1 gRPC      (t2)
    h2c -> h2c  gRPC unary         -m1 gRPC      (t1)

and nginx (``proxy_pass`` for h1 -> h1, ``grpc_pass`` for h2c -> h2c) and the upstream directly
beside them. Medians over ``--rounds`` interleaved rounds of each cell's p50 and p90 (µs, h2load's
log), and of the proxy's CPU per call in the cell (µs; its threads' run time from
``/proc/PID/task/*/schedstat``, less its idle rate measured before the rounds): when the p50 a
proxy adds is about its CPU per call, the added latency is work, not waiting. Coordinated omission
as bench_latency.py says; at this rate no response comes near the period.

``--sidecar-root DIR`` adds the sidecar of another source tree (e.g. a worktree of main, built
with ``setup.py build_ext --inplace``) as ``base`` cells in the same interleaved rounds, for a
before/after on one loaded machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_grpc import grpc_args, grpc_sidecar, grpc_upstream, nginx_grpc_proxy, sidecar_from  # noqa: E402
from bench_latency import pct  # noqa: E402
from bench_proxy import Proc, _median, group_cpu_by_pid  # noqa: E402


def run_ns(p: Proc) -> int:
    """CPU run time (ns) of every thread of ``p``'s process group: schedstat's first field, where
    /proc/PID/stat counts 10 ms ticks (a cell's ~50 ms of CPU would be ±20%)."""
    total = 0
    for pid in group_cpu_by_pid(p.p.pid):
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for t in tasks:
            try:
                with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                    total += int(f.read().split()[0])
            except OSError:
                pass
    return total


def cell(port: int, key: str, opts: list[str], rps: int, calls: int, tmp: Path,
         proxy: tuple[Proc, float] | None = None) -> tuple[float, float, float]:
    """p50 and p90 (µs) of ``calls`` requests, and ``proxy``'s CPU per call (µs; its idle ns/s subtracted)."""
    log = tmp / "legs.tsv"
    log.unlink(missing_ok=True)
    t0, c0 = time.monotonic(), run_ns(proxy[0]) if proxy else 0
    subprocess.run(["h2load", *opts, "-c1", f"--rps={rps}", f"-n{calls}", "-H", f"x-partition-key: {key}",
                    f"--log-file={log}", f"http://127.0.0.1:{port}/kv.v1.Store/Put"],
                   capture_output=True, timeout=calls / rps + 60)
    cpu = (run_ns(proxy[0]) - c0 - proxy[1] * (time.monotonic() - t0)) / calls / 1e3 if proxy else float("nan")
    rows = [line.split("\t") for line in log.read_text().splitlines()]
    if not rows or any(not r[1].startswith("2") for r in rows):
        raise RuntimeError(f"non-2xx or no responses from port {port} ({key}, {opts[:2]})")
    lat = sorted(int(r[2]) for r in rows)
    return pct(lat, .5), pct(lat, .9), cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rps", type=int, default=50)
    ap.add_argument("--calls", type=int, default=150, help="requests per cell (default 150)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--h2py", action="store_true", help="also the sidecar on pure-Python h2")
    ap.add_argument("--sidecar-root", type=Path, metavar="DIR",
                    help="also the sidecar from this source tree (cells named 'base'), same rounds")
    a = ap.parse_args()
    if not 1 <= a.rps <= 100 or min(a.calls, a.rounds) < 1:
        ap.error("--rps 1..100, --calls and --rounds ≥ 1")
    if a.sidecar_root is not None and not (a.sidecar_root / "sidecar" / "__main__.py").is_file():
        ap.error(f"--sidecar-root: no sidecar/__main__.py under {a.sidecar_root}")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    procs: list[Proc] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        try:
            up = grpc_upstream(tmp, nginx)
            procs.append(up)
            h2, h1 = up.port, up.h1  # type: ignore[attr-defined]
            ng = nginx_grpc_proxy(tmp, nginx, h2, h1)
            sc = grpc_sidecar(tmp, h2, h1)
            procs += [ng, sc]
            g = grpc_args(tmp)
            h1post = ["--h1", "-d", g[1]]
            grpc = ["-m1", *g]
            cells = [("direct h1", None, h1, "t2", h1post), ("direct h2c gRPC", None, h2, "t1", grpc),
                     ("nginx h1 -> h1", ng, ng.h1, "t2", h1post),  # type: ignore[attr-defined]
                     ("nginx h2c -> h2c (grpc_pass)", ng, ng.port, "t1", grpc)]
            sidecars = [("sidecar", sc)]
            if a.sidecar_root is not None:
                base = sidecar_from(a.sidecar_root.resolve(), tmp, h2, h1, "sidecar-base")
                procs.append(base)
                sidecars.append(("base", base))
            for label, p in sidecars:
                cells += [(f"{label} h1 -> h1", p, p.port, "t2", h1post), (f"{label} h1 -> h2c", p, p.port, "t1", h1post),
                          (f"{label} h2c -> h1", p, p.port, "t2", grpc), (f"{label} h2c -> h2c", p, p.port, "t1", grpc)]
            if a.h2py:
                py = grpc_sidecar(tmp, h2, h1, env={"EPOCHGATE_PURE_PYTHON": "proxy.h2"}, name="sidecar-h2py")
                procs.append(py)
                cells += [("sidecar-h2py h2c -> h1", py, py.port, "t2", grpc),
                          ("sidecar-h2py h2c -> h2c", py, py.port, "t1", grpc)]
            res: dict[str, list[tuple[float, float, float]]] = {}
            for name, p, port, key, opts in cells:  # warm-up
                cell(port, key, opts, a.rps, max(10, a.calls // 10), tmp)
            idle: dict[int, float] = {}  # each proxy's idle CPU, ns per second (its timers)
            for p in {id(c[1]): c[1] for c in cells if c[1] is not None}.values():
                n0, t0 = run_ns(p), time.monotonic()
                time.sleep(1.0)
                idle[id(p)] = (run_ns(p) - n0) / (time.monotonic() - t0)
            for _ in range(a.rounds):
                for name, p, port, key, opts in cells:
                    proxy = None if p is None else (p, idle[id(p)])
                    res.setdefault(name, []).append(cell(port, key, opts, a.rps, a.calls, tmp, proxy))
        except (RuntimeError, TimeoutError, subprocess.TimeoutExpired) as exc:
            print(f"bench_h2_legs: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        finally:
            for p in procs:
                p.stop()
    print(f"one connection, {a.rps} req/s, {a.calls} requests per cell; medians of {a.rounds} interleaved rounds "
          f"(range of p50); {os.cpu_count()} CPUs, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"{'path':30s} {'p50 µs':>16s} {'p90 µs':>7s} {'CPU µs/call':>12s}")
    for name, rs in res.items():
        p50 = [r[0] for r in rs]
        cpu = _median([r[2] for r in rs])
        print(f"{name:30s} {f'{_median(p50):.0f} ({min(p50):.0f}-{max(p50):.0f})':>16s} {_median([r[1] for r in rs]):7.0f}"
              f" {'' if cpu != cpu else f'{cpu:.0f}':>12s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
