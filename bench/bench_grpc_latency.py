"""The latency the sidecar adds to gRPC unary calls at a fixed rate every target sustains, beside nginx, HAProxy, Caddy.

    python bench/bench_grpc_latency.py [--seconds 90] [--rounds 3] [--client-rps 50] [--h2py] [--no-peers] [--no-bare] [--rate N]
                                       [--rt PRIO] [--skip 0.5] [--no-pin] [--sidecar-env K=V]

bench_latency.py's method, for gRPC unary (issue 30):

1. bench_grpc.py's set-up: an nginx upstream answering gRPC-shaped unary calls on h2c (HEADERS + DATA,
   then ``grpc-status: 0`` trailers), the same 64-byte message, and as targets nginx ``grpc_pass``
   (keep-alive 256 upstream connections, access log on and buffered), HAProxy (``proto h2`` both
   sides) and Caddy (``reverse_proxy h2c://``) from bench/peers/ (one thread each, access log on;
   skipped with one line if not installed), and the sidecar with 1 worker on its compiled HTTP/2
   engine (node ``h2c://``, a gated write: resolve, admit, stamp, in-flight, access log); ``--h2py``
   adds the sidecar on pure-Python h2 (``EPOCHGATE_PURE_PYTHON=proxy.h2``); ``bare-h2`` (``--no-bare``
   leaves it out) is bench_grpc's floor for any Python gRPC forwarder (uvloop + libnghttp2 through
   ngh2, one upstream h2c connection, no gate, metrics or log).
2. Each proxy's saturation throughput: h2load 16 connections x 10 streams, as bench_grpc.
3. At a fixed rate of half the *slowest peer's* (nginx, HAProxy, Caddy) saturation, h2load drives
   each target in turn — the upstream directly, nginx, the peers, the sidecar — interleaved over
   ``--rounds`` rounds. Latency per call from h2load's ``--log-file`` (µs from writing the request
   to the end of the response, trailers included).

It prints p50/p99/p99.9 per target (all rounds' calls pooled), the latency *added* (target minus
direct), the median over rounds of each round's p99 and added p99 with their range, the proxy's CPU
use, and each target's added p99 over nginx's (the sidecar's goal: ≤ 1.5x), pooled and per round.
"non-2xx" counts HTTP statuses; the upstream always answers ``grpc-status: 0`` in trailers, which
h2load does not check (bench_grpc_stream.py checks a call's trailers through every target).

How the load is generated (h2load, HTTP/2 with prior knowledge, ``--rps``, one stream in flight per
connection: ``-m1``), and what that means:

* Each h2load client is one connection with at most one call in flight. With ``--rps R`` a
  per-client timer makes R calls per second due whatever the responses do (open loop per
  connection), as long as each response arrives within the period 1/R. A gRPC client would
  multiplex its calls over fewer connections; one stream per connection keeps the statement below
  exact, and the proxies see the same number of concurrent streams either way (rate x latency).
* Coordinated omission, as bench_latency.py states it: a call that falls due while its
  connection's previous call is still in flight waits for it, and h2load times it from when it is
  written, so that wait is not counted. Only a call whose predecessor took at least the period can
  be delayed so; the ``>=period`` column counts responses that slow. 0 means no call waited and the
  percentiles carry no coordinated omission; otherwise percentiles above 1 - count/total are lower
  bounds.
* h2load's timer fires no more often than every 10 ms and libev's epoll wait has 1 ms resolution,
  so arrivals come in ~1 ms ticks; clients are opened over one period (``-r`` per
  ``--rate-period 1ms``) so their phases spread.
* h2load, the upstream and the proxies share this machine's cores; h2load's own time is in every
  cell alike, which is why the figures are the *added* latency against the direct cell.
* Pinning and rounds as bench_latency.py: h2load and the upstream on the first half of the CPUs,
  each proxy on the other half (``--no-pin`` turns it off), the targets' order rotated each round,
  and the added percentiles judged per round (median and range over rounds, ratio to nginx's);
  each cell's first ``--skip`` seconds (default 0.5) left out, for every target alike; ``--rt PRIO``
  runs h2load, the upstream and the proxies SCHED_FIFO in the fixed-rate cells (see there).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peers import (binary, caddy_proc, cpu_split, group_wait_s, haproxy_proc, missing, stop_targets,  # noqa: E402
                    tools_missing)
from bench_grpc import bare_h2, grpc_args, grpc_peer, grpc_sidecar, grpc_upstream, nginx_grpc_proxy  # noqa: E402
from bench_grpc import run_h2load as run_h2load_sat  # noqa: E402
from bench_latency import PCTS, RT, pct, pin_targets, pinning, ratio, rotate, round_table, run_h2load  # noqa: E402
from bench_proxy import ROOT, Proc, _median, group_cpu_s  # noqa: E402

PEERS = ("nginx", "haproxy", "caddy")  # what a user would run instead; the slowest one's saturation sets the rate
PATH = "/kv.v1.Store/Put"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=90.0, help="bound on the fixed-rate cells (default 90)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds over the targets (default 3)")
    ap.add_argument("--client-rps", type=int, default=50,
                    help="calls per second per connection (default 50: a 20 ms period, at most 100)")
    ap.add_argument("--sat-requests", type=int, default=10000, help="calls per saturation run (default 10000)")
    ap.add_argument("--h2py", action="store_true", help="also the sidecar on pure-Python h2")
    ap.add_argument("--no-peers", dest="peers", action="store_false",
                    help="leave out HAProxy and Caddy (then nginx's saturation sets the rate)")
    ap.add_argument("--no-bare", dest="bare", action="store_false",
                    help="leave out bare-h2, the floor for a Python gRPC forwarder (bench/_bare_h2_forwarder.py)")
    ap.add_argument("--fraction", type=float, default=0.5, help="fixed rate / the slowest peer's saturation (default 0.5)")
    ap.add_argument("--rate", type=int, help="a fixed rate in calls/s instead (e.g. a previous run's, with --no-peers)")
    ap.add_argument("--skip", type=float, default=0.5,
                    help="leave out what each cell starts in its first SKIP seconds (default 0.5; 0: keep all)")
    ap.add_argument("--rt", type=int, default=0, metavar="PRIO",
                    help="run h2load, the upstream and the proxies SCHED_FIFO at PRIO in the fixed-rate cells "
                         "(bench_latency's --rt; default 0: off)")
    ap.add_argument("--no-pin", dest="pin", action="store_false",
                    help="do not pin the load generator and upstream, and the proxy, to separate CPUs")
    ap.add_argument("--sidecar-env", action="append", default=[], metavar="K=V",
                    help="an environment variable for the sidecar (repeatable; e.g. EPOCHGATE_PURE_PYTHON=proxy.h2)")
    a = ap.parse_args()
    if not 1 <= a.client_rps <= 100:
        ap.error("--client-rps must be 1..100 (h2load's timer fires at most every 10 ms)")
    if a.rounds < 1 or a.seconds <= 0 or not 0 < a.fraction <= 1 or a.sat_requests < 1:
        ap.error("--rounds ≥ 1, --seconds > 0, --sat-requests ≥ 1 and 0 < --fraction ≤ 1")
    if tools_missing("bench_grpc_latency", "h2load", "nginx"):
        return 2
    nginx = binary("nginx")
    tmp = Path(tempfile.mkdtemp(prefix="bench-grpc-latency-"))
    procs: dict[str, Proc | None] = {}
    upstream = None
    split = cpu_split(a.pin)
    if split:  # h2load and the upstream inherit the bench's CPUs; each proxy is moved below
        os.sched_setaffinity(0, split[0])
    sidecar_env = dict(kv.split("=", 1) for kv in a.sidecar_env)
    try:
        upstream = grpc_upstream(tmp, nginx)
        h2, h1 = upstream.port, upstream.h1  # type: ignore[attr-defined]
        procs["direct"] = None
        # 256 idle upstream connections as bench_latency's nginx (the ~100 client connections here, one stream each)
        procs["nginx"] = nginx_grpc_proxy(tmp, nginx, h2, h1, keepalive=256)
        for peer, start in (("haproxy", haproxy_proc), ("caddy", caddy_proc)):
            if why := missing(peer):  # not installed: one line, and the rest runs
                print(f"bench_grpc_latency: {why}", file=sys.stderr)
            elif a.peers:
                procs[peer] = grpc_peer(start, tmp, h2, h1)
        if a.bare and importlib.util.find_spec("ngh2") is not None:
            procs["bare-h2"] = bare_h2(tmp, h2)
        procs["sidecar"] = grpc_sidecar(tmp, h2, h1, env=sidecar_env or None)
        if a.h2py:
            procs["sidecar-h2py"] = grpc_sidecar(tmp, h2, h1, env={**sidecar_env, "EPOCHGATE_PURE_PYTHON": "proxy.h2"},
                                                 name="sidecar-h2py")
        pin_targets(procs, split)
        build = subprocess.run([sys.executable, "-c", "import sidecar._build as b; print(b.describe())"],
                               capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                               timeout=60).stdout.strip()
        engine = subprocess.run([sys.executable, "-c", "import sidecar.proxy.h2.engine as e; print(e.describe())"],
                                capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                                timeout=60).stdout.strip()  # as the sidecar process (started the same way) sees it
        args = grpc_args(tmp)

        def url(name: str) -> str:
            p = procs[name]
            return f"http://127.0.0.1:{p.port if p else h2}{PATH}"

        # 1. saturation per proxy (bench_grpc's h2load settings): the slowest peer's sets the rate
        sat: dict[str, float] = {}
        for name in procs:
            if name != "direct":
                run_h2load_sat(url(name), 2000, 16, 10, tmp)
                sat[name] = run_h2load_sat(url(name), a.sat_requests, 16, 10, tmp)["rps"]
        slowest = min((sat[n], n) for n in PEERS if n in sat)
        rate = max(a.client_rps, int((a.rate or slowest[0] * a.fraction)) // a.client_rps * a.client_rps)
        print(f"  saturation (calls/s): {', '.join(f'{k} {v:.0f}' for k, v in sat.items())}; rate {rate}",
              file=sys.stderr, flush=True)

        # 2. fixed rate, interleaved; 1 s warm-up per target, not counted
        cell_s = max(1.0, a.seconds / (a.rounds * len(procs)) - 1 / a.client_rps)
        RT["prio"] = a.rt  # the fixed-rate cells only (bench_latency's --rt)
        pin_targets(procs, split, upstream, a.rt)
        for name in procs:
            run_h2load(url(name), "POST", rate, a.client_rps, 1.0, tmp, h2=args)
        acc: dict[str, list] = {}
        loads: list[float] = []
        for rnd in range(a.rounds):
            loads.append(os.getloadavg()[0])
            for name in rotate(list(procs), rnd):
                owner = procs[name] or upstream
                c0, w0, t0 = group_cpu_s(owner.p.pid), group_wait_s(owner.p.pid), time.monotonic()
                r = run_h2load(url(name), "POST", rate, a.client_rps, cell_s, tmp, h2=args, skip_s=a.skip)
                dt = time.monotonic() - t0
                r["cpu"] = (group_cpu_s(owner.p.pid) - c0) / dt
                r["wait"] = (group_wait_s(owner.p.pid) - w0) / dt
                r["lat"].sort()
                acc.setdefault(name, []).append(r)
                print(f"  round {rnd + 1} (load {loads[-1]:.1f}) {name:12s} {r['rps']:.0f} calls/s p99 {pct(r['lat'], .99):.0f} µs",
                      file=sys.stderr, flush=True)
        report(a, procs, acc, sat, rate, cell_s, f"{build}, HTTP/2 engine {engine}, {pinning(split)}", slowest, loads)
    except (RuntimeError, TimeoutError, subprocess.TimeoutExpired, AttributeError) as exc:
        print(f"bench_grpc_latency: {type(exc).__name__}: {exc} (logs were in {tmp})", file=sys.stderr)
        return 1
    finally:
        stop_targets(procs, upstream, tmp)
    return 0


def report(a, procs, acc, sat, rate, cell_s, build, slowest, loads) -> None:
    clients = acc["direct"][0]["clients"]
    how = "given (--rate)" if a.rate else f"of {a.fraction:g} x the slowest peer's saturation"
    print(f"\nh2load (h2c, -m1) gRPC unary at a fixed rate {how} "
          f"(h2load -c16 -m10: {slowest[1]} {slowest[0]:.0f} calls/s): {rate} calls/s, {clients} connections x "
          f"{a.client_rps} calls/s; {a.rounds} rounds x {cell_s:.1f} s per cell; sidecar: 1 worker, gating + "
          f"metrics + access log on, {build}; {os.cpu_count()} CPUs, load average (1 min) at the rounds' starts "
          f"{min(loads):.1f}–{max(loads):.1f}, at the end {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"{'target':12s} {'calls/s':>7s} {'p50 µs':>7s} {'p99 µs':>7s} {'p99.9 µs':>8s} {'+p50':>6s} {'+p99':>6s} "
          f"{'+p99.9':>7s} {'p99 med (range)':>18s} {'+p99 med (range)':>18s} {'CPU %':>6s} {'wait ms/s':>9s} {'of sat.':>7s} "
          f"{'>=period':>8s} {'non-2xx':>7s}")
    merged: dict[str, list[float]] = {}
    for name in procs:
        runs = acc[name]
        ps = [pct(sorted(v for r in runs for v in r["lat"]), q) for q in PCTS]
        merged[name] = ps
        base = merged["direct"]
        added = ["-"] * 3 if name == "direct" else [f"{p - b:.0f}" for p, b in zip(ps, base)]
        p99s = [pct(r["lat"], .99) for r in runs]
        add99 = [pct(r["lat"], .99) - pct(d["lat"], .99) for r, d in zip(runs, acc["direct"])]
        med = f"{_median(p99s):.0f} ({min(p99s):.0f}-{max(p99s):.0f})"
        addmed = "-" if name == "direct" else f"{_median(add99):.0f} ({min(add99):.0f}-{max(add99):.0f})"
        print(f"{name:12s} {sum(r['rps'] for r in runs) / len(runs):7.0f} {ps[0]:7.0f} {ps[1]:7.0f} {ps[2]:8.0f} "
              f"{added[0]:>6s} {added[1]:>6s} {added[2]:>7s} {med:>18s} {addmed:>18s} "
              f"{100 * sum(r['cpu'] for r in runs) / len(runs):6.0f} {1000 * sum(r['wait'] for r in runs) / len(runs):9.1f} "
              f"{(f'{100 * rate / sat[name]:.0f}%' if name in sat else '-'):>7s} "
              f"{sum(r['late'] for r in runs):8d} {sum(r['bad'] for r in runs):7d}"
              + ("  (upstream's CPU)" if name == "direct" else ""))
    print("+pNN: the target's percentile minus the direct one's (all rounds pooled). p99 med: the median over "
          "rounds of each round's p99 (range: min-max). wait: ms per s its threads were runnable but off-CPU. of sat.: the fixed rate / the target's own saturation "
          "(same run). >=period: responses at least 1/client-rps slow (0: no coordinated omission)")
    for name in procs:
        if name in ("direct", "nginx"):
            continue
        d, n, s = merged["direct"], merged["nginx"], merged[name]
        ratios = [ratio(sv - dv, nv - dv) for sv, nv, dv in zip(s, n, d)]
        per_round = []
        for rd, rn, rs in zip(acc["direct"], acc["nginx"], acc[name]):
            dv, nv, sv = (pct(r["lat"], .99) for r in (rd, rn, rs))
            per_round.append(ratio(sv - dv, nv - dv))
        goal = " (goal ≤ 1.5x)" if name.startswith(("sidecar", "bare")) else ""  # the floor: can any Python forwarder?
        print(f"added latency {name} / nginx: p50 {ratios[0]}, p99 {ratios[1]}{goal}, p99.9 {ratios[2]}; "
              f"p99 per round: {', '.join(per_round)}")
    round_table(lambda n: acc[n], list(procs), "gRPC unary")


if __name__ == "__main__":
    sys.exit(main())
