"""What a second worker costs over HTTP/2: the sidecar with 2 workers against 1, beside nginx with 2 against 1.

    python bench/bench_grpc_workers.py [--requests 20000] [--connections 32] [--streams 10] [--rounds 3]

bench_grpc.py's set-up (an nginx h2c upstream answering gRPC-shaped unary calls; nginx ``grpc_pass``
with its access log on and buffered; the sidecar on its compiled HTTP/2 engine, gating, metrics and
access log on) with 1 and 2 workers each: nginx's workers share the listening socket (its default),
the sidecar's workers each have a SO_REUSEPORT socket (the kernel hashes connections over them).
h2load drives gRPC unary calls and plain HTTP/2 GETs (``--connections`` x ``--streams``; more
connections than bench_grpc's 16 so the kernel's hash has something to spread), targets interleaved
over ``--rounds`` rounds. Per cell: calls/s and CPU µs per call of the whole process group (the
parent — nginx's master, the sidecar's supervisor — included) and the split between the workers;
then 2w/1w per round (CPU per call: what running a second worker adds per call on this machine).
Both CPUs are shared with the load generator and the upstream, so 2 workers cannot double the rate.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_grpc import grpc_sidecar, grpc_upstream, nginx_grpc_proxy, run_h2load  # noqa: E402
from bench_proxy import Proc, _median, group_cpu_by_pid  # noqa: E402

TARGETS = ("nginx", "nginx-2w", "sidecar-1w", "sidecar-2w")
CELLS = (("gRPC unary", "/kv.v1.Store/Put", True), ("h2 GET", "/kv/k", False))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=20000, help="h2load requests per cell (default 20000)")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--streams", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    if min(a.requests, a.connections, a.streams, a.rounds) < 1:
        ap.error("every count must be ≥ 1")
    for tool in ("h2load", "nginx"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            print(f"bench_grpc_workers: {tool} not found", file=sys.stderr)
            return 2
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        up = grpc_upstream(tmp, nginx)
        h2, h1 = up.port, up.h1  # type: ignore[attr-defined]
        start = {"nginx": lambda: nginx_grpc_proxy(tmp, nginx, h2, h1),
                 "nginx-2w": lambda: nginx_grpc_proxy(tmp, nginx, h2, h1, workers=2),
                 "sidecar-1w": lambda: grpc_sidecar(tmp, h2, h1, name="sidecar-1w"),
                 "sidecar-2w": lambda: grpc_sidecar(tmp, h2, h1, name="sidecar-2w", workers=2)}
        try:
            for rnd in range(a.rounds):
                for name in TARGETS:
                    p: Proc = start[name]()
                    try:
                        for proto, path, grpc in CELLS:
                            url = f"http://127.0.0.1:{p.port}{path}"
                            run_h2load(url, 2000, a.connections, a.streams, tmp, grpc)  # warm-up
                            c0 = group_cpu_by_pid(p.p.pid)
                            r = run_h2load(url, a.requests, a.connections, a.streams, tmp, grpc)
                            c1 = group_cpu_by_pid(p.p.pid)
                            deltas = {pid: c1[pid] - c0.get(pid, 0.0) for pid in c1}
                            workers = sorted((v for pid, v in deltas.items() if pid != p.p.pid or len(deltas) == 1),
                                             reverse=True)
                            r.update(name=name, proto=proto, round=rnd,
                                     cpu_us=sum(deltas.values()) * 1e6 / max(r["reqs"], 1),
                                     split="/".join(f"{100 * v / max(sum(workers), 1e-9):.0f}%" for v in workers)
                                     if len(workers) > 1 else "")
                            rows.append(r)
                            print(f"  {rnd + 1} {name:10s} {proto:10s} {r['rps']:.0f} req/s {r['cpu_us']:.1f} µs "
                                  f"{r['split']}", file=sys.stderr, flush=True)
                    finally:
                        p.stop()
        finally:
            up.stop()
    report(a, rows)
    return 0


def report(a, rows: list[dict]) -> None:
    print(f"\nh2load -c{a.connections} -m{a.streams}, {a.requests} requests per cell; medians of {a.rounds} interleaved "
          f"rounds; {os.cpu_count()} CPUs, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"{'target':12s} {'cell':10s} {'req/s':>8s} {'CPU µs/req':>11s} {'x nginx':>8s} {'non-2xx':>8s}  worker CPU split")
    cell = {(r["name"], r["proto"], r["round"]): r for r in rows}
    for proto, _, _ in CELLS:
        base = _median([cell["nginx", proto, i]["cpu_us"] for i in range(a.rounds)])
        for name in TARGETS:
            rs = [cell[name, proto, i] for i in range(a.rounds)]
            cpu = _median([r["cpu_us"] for r in rs])
            print(f"{name:12s} {proto:10s} {_median([r['rps'] for r in rs]):8.0f} {cpu:11.1f} {cpu / base:8.2f} "
                  f"{sum(r['non2xx'] for r in rs):8d}  {' '.join(r['split'] for r in rs)}")
    for one, two in (("nginx", "nginx-2w"), ("sidecar-1w", "sidecar-2w")):
        for proto, _, _ in CELLS:
            xs = [cell[two, proto, i]["cpu_us"] / cell[one, proto, i]["cpu_us"] for i in range(a.rounds)]
            ys = [cell[two, proto, i]["rps"] / cell[one, proto, i]["rps"] for i in range(a.rounds)]
            print(f"2w/1w {two:10s} {proto:10s} CPU µs/req {_median(xs):.2f}x (rounds {min(xs):.2f}-{max(xs):.2f}), "
                  f"req/s {_median(ys):.2f}x (rounds {min(ys):.2f}-{max(ys):.2f})")


if __name__ == "__main__":
    sys.exit(main())
