"""What in the sidecar makes its slowest requests slow: its loop's pauses beside h2load's slow requests.

    python bench/bench_tail.py [--rate 3000] [--seconds 6] [--rounds 4] [--grpc] [--method GET|POST]
                               [--variant 'NAME;K=V;...'] [--no-probe] [--no-pin]

bench_latency.py's fixed-rate load (h2load, open loop per connection, pinned apart from the proxy:
see its docstring for coordinated omission) against the upstream directly and against one or
more sidecars (1 worker, gating + metrics + access log on), interleaved over ``--rounds``. Each
sidecar runs under ``bench/_tail_probe.py``, which times on its event loop every garbage
collection, every scheduled callback (the context's tick, the metrics flush, timers, task
wake-ups) and every access-log flush, keeping those ≥ 50 µs with their wall-clock start.

It prints, per sidecar variant: the added p50/p99/p99.9 (median over rounds, range), and per kind
of pause its count per second, mean and max, the share of wall time it took, and the share of the
slowest 1% of requests (above the cell's p99) whose [start, end] overlapped one — beside the share
of *all* requests that did (what chance alone gives). A kind whose share among the slow requests
is many times its share among all is what makes the tail.

``--variant 'NAME;K=V;...'`` (repeatable) adds a sidecar started with those environment variables;
``ROOT=DIR`` runs the sidecar from another checkout (e.g. the baseline build). The access log's
flushes are timed one by one on both builds (compiled, through a Python subclass of ``AccessLog``)
and named by who made them: a timer or the tick, or the data path. The probe applies
``PROBE_GC_THRESHOLD=a,b,c`` (``gc.set_threshold`` after start-up), ``PROBE_GC_FREEZE=0`` (undo the
start-up ``gc.freeze``) and ``PROBE_GC=0`` (``gc.disable``) so a setting can be measured before it
is made in the code. ``--no-probe`` runs the sidecars plainly (the probe's own wrapping costs a few
µs per scheduled callback).
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peers import binary, cpu_split, group_wait_s, haproxy_proc, spread, stop_targets, tools_missing  # noqa: E402
from bench_grpc import grpc_args, grpc_upstream, nginx_grpc_proxy  # noqa: E402
from bench_latency import PCTS, RT, pct, pin_targets, pinning, rotate, run_h2load  # noqa: E402
from bench_proxy import ROOT, Proc, free_port, group_cpu_s, nginx_proxy, nginx_upstream  # noqa: E402

PROBE = Path(__file__).resolve().parent / "_tail_probe.py"


def start_upstream(tmp: Path, grpc: bool) -> tuple[Proc, str, list[str] | None, str]:
    """The fixed-rate benches' upstream (nginx answering 1 KiB, or gRPC-shaped unary calls on h2c
    with ``grpc``) and what drives it: (upstream, a sidecar's node URL for it, h2load's HTTP/2
    arguments (None: HTTP/1.1), the request path)."""
    if grpc:
        upstream = grpc_upstream(tmp, binary("nginx"))
        return upstream, f"h2c://127.0.0.1:{upstream.port}", grpc_args(tmp), "/kv.v1.Store/Put"
    upstream = nginx_upstream(tmp, binary("nginx"))
    return upstream, f"http://127.0.0.1:{upstream.port}", None, "/kv/bench"


def start_peers(tmp: Path, upstream: Proc, grpc: bool, want: set[str]) -> dict[str, tuple[Proc, int]]:
    """nginx (``proxy_pass`` / ``grpc_pass``, 256 idle upstream connections, access log buffered)
    and HAProxy (one thread, access log on; when installed) in front of ``start_upstream``'s
    upstream, those named in ``want``: name → (process, the port h2load drives)."""
    out: dict[str, tuple[Proc, int]] = {}
    nginx = binary("nginx")
    if "nginx" in want:
        p = (nginx_grpc_proxy(tmp, nginx, upstream.port, upstream.h1, keepalive=256) if grpc  # type: ignore[attr-defined]
             else nginx_proxy(tmp, nginx, free_port(), upstream.port, keepalive=256))
        out["nginx"] = (p, p.port)
    if "haproxy" in want and binary("haproxy"):
        if grpc:
            p = haproxy_proc(tmp, free_port(), upstream.h1, upstream.port)  # type: ignore[attr-defined]
            out["haproxy"] = (p, p.h2)  # type: ignore[attr-defined]
        else:
            p = haproxy_proc(tmp, free_port(), upstream.port)
            out["haproxy"] = (p, p.port)
    return out


def start_sidecar(tmp: Path, name: str, node: str, env: dict[str, str], probe: bool) -> Proc:
    root = env.pop("ROOT", str(ROOT))
    placement = tmp / f"placement-{name}.toml"
    placement.write_text(f'[nodes]\na = "{node}"\n\n[partitions]\nt1 = "a"\n')
    args = ["--placement", str(placement), "--listen", f"127.0.0.1:{(port := free_port())}",
            "--admin", f"127.0.0.1:{free_port()}", "--control", f"127.0.0.1:{free_port()}", "--workers", "1"]
    # always through the probe script (with PROBE_OFF=1 it only runs the sidecar): ``-m sidecar`` would put
    # Proc's cwd (this checkout) first on sys.path, ahead of a variant's ROOT
    argv = [sys.executable, str(PROBE), str(tmp / f"probe-{name}.json"), *args]
    full = dict(os.environ, PYTHONPATH=root, **env)
    if not probe:
        full["PROBE_OFF"] = "1"
    p = Proc(name, argv, port, tmp, env=full)
    time.sleep(0.3)
    return p


def parse_variants(given: list[str]) -> dict[str, dict[str, str]]:
    """``--variant 'NAME;K=V;...'`` values → {NAME: {K: V}} (one plain ``sidecar`` when none given)."""
    variants = {}
    for v in given or ["sidecar"]:
        name, *kvs = v.split(";")
        variants[name] = dict(kv.split("=", 1) for kv in kvs if kv)
    return variants


def overlap_share(rows: list[tuple[int, int]], spans: list[tuple[float, float]]) -> float:
    """Share of requests (start µs, duration µs) whose interval overlaps one of ``spans`` (sorted (start, end) s)."""
    if not rows:
        return float("nan")
    starts = [s for s, _ in spans]
    hit = 0
    for st, us in rows:
        a, b = st / 1e6, (st + us) / 1e6
        i = bisect.bisect_right(starts, b)  # spans starting before the request ends
        j = i - 1
        while j >= 0 and j >= i - 50:
            if spans[j][1] >= a:
                hit += 1
                break
            j -= 1
    return hit / len(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=int, default=3000, help="req/s (default 3000)")
    ap.add_argument("--seconds", type=float, default=6.0, help="per cell (default 6)")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--client-rps", type=int, default=50)
    ap.add_argument("--method", choices=("GET", "POST"), default="POST")
    ap.add_argument("--grpc", action="store_true", help="gRPC unary over h2c (node h2c://) instead of HTTP/1.1")
    ap.add_argument("--variant", action="append", default=[], help="'NAME;K=V;...' (repeatable; default: one 'sidecar')")
    ap.add_argument("--skip", type=float, default=0.5, help="leave out each cell's first SKIP s (bench_latency's --skip)")
    ap.add_argument("--no-probe", dest="probe", action="store_false")
    ap.add_argument("--no-pin", dest="pin", action="store_false")
    ap.add_argument("--rt", type=int, default=0, metavar="PRIO", help="SCHED_FIFO as bench_latency's --rt")
    a = ap.parse_args()
    if tools_missing("bench_tail", "h2load", "nginx"):
        return 2
    variants = parse_variants(a.variant)
    tmp = Path(tempfile.mkdtemp(prefix="bench-tail-"))
    split = cpu_split(a.pin)
    if split:
        os.sched_setaffinity(0, split[0])
    procs: dict[str, Proc | None] = {"direct": None}
    upstream = None
    try:
        upstream, node, h2, path = start_upstream(tmp, a.grpc)
        for name, env in variants.items():
            procs[name] = start_sidecar(tmp, name, node, dict(env), a.probe)
        RT["prio"] = a.rt
        pin_targets(procs, split, upstream, a.rt)

        def url(name: str) -> str:
            p = procs[name]
            return f"http://127.0.0.1:{p.port if p else upstream.port}{path}"

        for name in procs:  # warm-up, not counted
            run_h2load(url(name), a.method, a.rate, a.client_rps, 1.0, tmp, h2=h2)
        acc: dict[str, list] = {}
        loads = []
        for rnd in range(a.rounds):
            loads.append(os.getloadavg()[0])
            for name in rotate(list(procs), rnd):
                owner = procs[name] or upstream
                w0, c0, t0 = group_wait_s(owner.p.pid), group_cpu_s(owner.p.pid), time.monotonic()
                r = run_h2load(url(name), a.method, a.rate, a.client_rps, a.seconds, tmp, h2=h2, skip_s=a.skip)
                dt = time.monotonic() - t0
                r["wait"] = (group_wait_s(owner.p.pid) - w0) / dt
                r["cpu_us"] = 1e6 * (group_cpu_s(owner.p.pid) - c0) / (a.rate * dt)  # per request
                r["lat"].sort()
                acc.setdefault(name, []).append(r)
                print(f"  round {rnd + 1} (load {loads[-1]:.1f}) {name:14s} p99 {pct(r['lat'], .99):.0f} µs "
                      f">=period {r['late']}", file=sys.stderr, flush=True)
    finally:
        for p in procs.values():
            if p is not None:
                p.stop()  # SIGTERM: the probe writes its file as the sidecar exits
        probes = {n: json.loads((tmp / f"probe-{n}.json").read_text()) for n in variants
                  if (tmp / f"probe-{n}.json").exists()}
        stop_targets({}, upstream, tmp)
    report(a, acc, variants, probes, split, loads)
    return 0


def report(a, acc, variants, probes, split, loads) -> None:
    what = "gRPC unary (h2c, -m1)" if a.grpc else f"HTTP/1.1 {a.method}"
    print(f"\n{what} at {a.rate}/s, {a.rounds} rounds x {a.seconds:g} s, {pinning(split)}; load average (1 min) "
          f"{min(loads):.1f}–{max(loads):.1f}; probe {'on' if a.probe else 'off'}")
    direct = acc["direct"]
    for name in variants:
        runs = acc[name]
        add = [[pct(r["lat"], q) - pct(d["lat"], q) for q in PCTS] for r, d in zip(runs, direct)]
        print(f"\n{name} ({'; '.join(f'{k}={v}' for k, v in variants[name].items()) or 'as built'}): added +p50 "
              f"{spread([x[0] for x in add])}, +p99 {spread([x[1] for x in add])}, +p99.9 "
              f"{spread([x[2] for x in add])} µs; CPU {spread([r['cpu_us'] for r in runs])} µs per request (at "
              f"{1e6 / os.sysconf('SC_CLK_TCK'):.0f} µs ticks); responses >= period {sum(r['late'] for r in runs)}; off-CPU while "
              f"runnable {spread([1000 * r['wait'] for r in runs])} ms/s (direct's upstream: "
              f"{spread([1000 * r['wait'] for r in direct])})")
        pr = probes.get(name)
        if not pr or not a.probe:
            continue
        rows = [row for r in runs for row in r["rows"]]
        slow = [row for r in runs for row in r["rows"] if row[1] > pct(r["lat"], .99)]
        slow9 = [row for r in runs for row in r["rows"] if row[1] > pct(r["lat"], .999)]
        # this variant's cells as wall-clock windows: only the pauses inside them count
        cells = [(min(s for s, _ in r["rows"]) / 1e6, max(s + u for s, u in r["rows"]) / 1e6) for r in runs]
        span = sum(e - s for s, e in cells)
        life = pr["life_s"]
        print(f"  {'pause kind':34s} {'/s':>7s} {'mean µs':>8s} {'max µs':>7s} {'%time':>6s} "
              f"{'slow 1% hit':>11s} {'by chance':>9s} {'0.1% hit':>8s} {'all hit':>8s}")
        by_kind: dict[str, list[tuple[float, float]]] = {}
        for kind, t0, dt in pr["events"]:
            if any(s <= t0 <= e for s, e in cells):
                by_kind.setdefault(kind, []).append((t0, t0 + dt))
        for kind, (n, tot, mx) in sorted(pr["totals"].items(), key=lambda kv: -kv[1][1]):
            spans = sorted(by_kind.get(kind, []))
            ev_time = sum(e - s for s, e in spans)
            # a slow request lasts longer, so it meets more pauses by chance alone: P = rate x (its length + mean pause)
            per_s = len(spans) / max(span, 1e-9)
            mean = ev_time / len(spans) if spans else 0.0
            chance = sum(min(1.0, per_s * (u / 1e6 + mean)) for _, u in slow) / max(1, len(slow))
            if not spans and mx < 50e-6:
                continue
            print(f"  {kind[:34]:34s} {n / max(life, 1):7.1f} {1e6 * tot / n:8.1f} {1e6 * mx:7.0f} "
                  f"{100 * ev_time / max(span, 1e-9):6.2f} {100 * overlap_share(slow, spans):10.1f}% {100 * chance:8.1f}% "
                  f"{100 * overlap_share(slow9, spans):7.1f}% "
                  f"{100 * overlap_share(rows, spans):7.1f}%")
        if pr.get("garbage"):
            print("  freed by the collector (PROBE_GC_SAVEALL), most common types: "
                  + ", ".join(f"{t} {n}" for t, n in pr["garbage"]))
        print(f"  (/s and mean over the sidecar's whole life, all events; %time, hit: events ≥ 50 µs during the "
              f"cells; gc threshold {pr['gc_threshold']}, {pr['frozen']} objects frozen)")


if __name__ == "__main__":
    sys.exit(main())
