"""The latency the sidecar adds at a fixed rate every target sustains, beside what nginx, HAProxy and Caddy add.

    python bench/bench_latency.py [--seconds 60] [--rounds 2] [--pure] [--client-rps 50] [--no-peers] [--no-bare] [--rate N]
                                  [--rt PRIO] [--skip 0.5] [--no-pin] [--sidecar-env K=V] [--only ch1,bare-h1,sidecar,haproxy]

On a shared machine: ``--rt 10`` (below) is what makes the tail figures judgeable.

One run (issue 20, "latency added at half load"):

1. An nginx upstream answering 1 KiB, nginx as a reverse proxy (keep-alive to the upstream,
   up to 256 idle connections kept as the sidecar's pool does; access log on and buffered) and the sidecar with 1 worker (gating, metrics and the access
   log on; POST 1 KiB is a gated write) — the same configurations as ``bench_proxy.py`` —
   and the peers HAProxy and Caddy from bench/peers/ (one thread each, access log on;
   skipped with one line if not installed); ``--pure`` adds the sidecar's plain-Python build;
  ``bare-h1`` (``--no-bare`` leaves it out) is bench_proxy's ``bare-forwarder``, the floor for any
  Python forwarder (uvloop + httptools, a keep-alive pool, no gate, metrics or log): what it adds
  says how much of the goal below is left to the sidecar's own work. ``ch1`` (``--no-bare`` leaves it out
  too) is that floor with its per-request work in C (``_ch1_forwarder.pyx``: llhttp driven from Cython,
  buffered uvloop protocols; docs/figures-peers.md, stop 38): what a Python-hosted forwarder adds
  once only the hosting is left. ``--only`` keeps the named targets (direct and nginx always run).
2. Each proxy's saturation throughput: wrk -t1 -c32, 2 s per method, as bench_proxy.
3. At a fixed rate of half the *slowest peer's* (nginx, HAProxy, Caddy) saturation, per method,
   so every target can sustain it, h2load drives each target in turn — the
   upstream directly, nginx, the peers, the sidecar — interleaved over ``--rounds`` rounds so a change in
   the machine's load falls on every target alike. Latency per request comes from h2load's
   ``--log-file`` (µs from writing the request to the end of the response).

It prints p50/p99/p99.9 per cell, the latency *added* (target minus direct, per percentile),
the proxy's CPU use during the cell, and each target's added latency over nginx's (the sidecar's goal:
p99 within 1.5x), with that ratio per round to show the spread. ``--seconds`` bounds the whole
run (default 60).

How the load is generated (h2load from nghttp2-client, ``--h1 --rps``), and what that means:

* Each h2load client is one keep-alive connection with at most one request in flight (HTTP/1.1
  without pipelining). With ``--rps R`` a per-client timer makes R requests per second due
  whatever the responses do (open loop per connection), so the offered rate does not fall when
  the server slows — as long as each response arrives within the period 1/R.
* Coordinated omission: a request that falls due while its connection's previous request is
  still in flight waits for it, and h2load times it from when it is written, so that wait is
  not counted. Only a request whose predecessor took at least the period can be delayed so;
  the ``>=period`` column counts responses that slow. 0 means no request waited and the
  percentiles carry no coordinated omission; otherwise percentiles above 1 - count/total are
  lower bounds. Hence the low per-connection rate (default 50/s: a 20 ms period, 200
  connections at 10k req/s).
* h2load's timer fires no more often than every 10 ms (``max(0.01, 1/R)``: at R > 100 a client
  sends its due requests back to back every 10 ms), and libev's epoll wait has 1 ms resolution,
  so arrivals come in ~1 ms ticks: at 10k req/s about 10 requests start together each ms.
  Clients are opened at a fixed rate (``-r`` per ``--rate-period 1ms``) so that their phases
  spread over the period; opened all at once, every client fires in the same ms of each
  period (measured against bare nginx at 10k req/s: mean 1.8 ms instead of 0.39 ms).
* h2load, the upstream and the proxies share this machine's cores; h2load's own time is in
  every cell alike, which is why the figures are the *added* latency against the direct cell.
* Pinning (default with ≥ 2 CPUs; ``--no-pin`` turns it off): the bench, so wrk, h2load and the
  upstream, runs on the first half of the CPUs, each proxy (every thread of its process group) on
  the other half, the same for every target, so the load generator never preempts the proxy in
  the middle of a request. Other work on the machine still runs on every CPU: the header states
  the load average, and each round's is printed.
* Rounds are short and interleaved (the order of the targets rotates each round); the figures to
  judge by are per round: each target's percentile minus the direct cell's *of the same round*,
  given as the median over rounds with the range, and the per-round ratio to nginx's.
* ``--rt PRIO`` (opt-in): h2load in the fixed-rate cells, the upstream and every proxy run
  SCHED_FIFO at PRIO, so the machine's other work (other benches, test suites) no longer preempts
  them: on a shared machine the proxies otherwise spend up to a third of their runnable time
  waiting for a CPU (the ``wait ms/s`` column), which swamps what is compared. Bounded: at the
  fixed rate each takes a fraction of a CPU, and the kernel keeps 5% of each CPU for the rest
  (``sched_rt_runtime_us``); the saturation runs (wrk) stay at normal priority.
* Each cell's first ``--skip`` seconds (default 0.5) are left out, for every target alike: a
  cell opens new client connections, and a proxy idle during the other targets' cells may have
  closed its upstream connections (the sidecar's ``--upstream-idle`` is 4 s, nginx's keep-alive
  timeout 60 s), so its first requests would measure reconnecting, not the steady rate. The
  ``>=period`` column still counts the skipped requests.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _compiled_copy import ch1_argv  # noqa: E402
from _peers import (binary, caddy_proc, cpu_split, group_wait_s, haproxy_proc, missing, pin_group,  # noqa: E402
                    ratio_spread, rt_prefix, spread, stop_targets, tools_missing)
from bench_proxy import (ROOT, Proc, free_port, group_cpu_s, nginx_proxy, nginx_upstream,  # noqa: E402
                         run_wrk, sidecar_proc)

PEERS = ("nginx", "haproxy", "caddy")  # what a user would run instead; the slowest one's saturation sets the rate

PCTS = (0.50, 0.99, 0.999)
#: SCHED_FIFO priority for h2load in the fixed-rate cells, the upstream and the proxies (``--rt``; 0: off)
RT = {"prio": 0}
METHODS = ("GET", "POST")


def pct(sorted_us: list[int], q: float) -> float:
    """Nearest-rank percentile of an ascending list, in µs."""
    if not sorted_us:
        return float("nan")
    return float(sorted_us[min(len(sorted_us) - 1, max(0, math.ceil(q * len(sorted_us)) - 1))])


def run_h2load(url: str, method: str, rate: int, client_rps: int, seconds: float, tmp: Path,
               h2: list[str] | None = None, skip_s: float = 0.0) -> dict:
    """h2load at ``rate`` req/s (clients x ``client_rps``) for about ``seconds``; per-request latencies.

    HTTP/1.1 (``method`` GET, or POST 1 KiB), or with ``h2`` HTTP/2 (prior knowledge, one stream in flight per
    connection as on HTTP/1.1) sending those extra arguments (bench_grpc_latency: a gRPC unary call).
    ``skip_s``: requests started in the cell's first ``skip_s`` seconds are left out (``skipped``)."""
    clients = max(1, rate // client_rps)
    period_ms = 1000 / client_rps
    log = tmp / "h2load.tsv"
    log.unlink(missing_ok=True)
    argv = [*rt_prefix(RT["prio"]), "h2load", *(["--h1"] if h2 is None else ["-m1", *h2]), f"-c{clients}", f"--rps={client_rps}",
            # open the clients over one period (1 ms is h2load's finest --rate-period) so their timers' phases spread
            f"-r{max(1, math.ceil(clients / period_ms))}", "--rate-period=1ms",
            f"-n{clients * max(1, round(client_rps * seconds))}", "-H", "X-Partition-Key: t1",
            f"--log-file={log}"]
    if method == "POST" and h2 is None:
        body = tmp / "body.bin"
        body.write_bytes(b"x" * 1024)
        argv += ["-d", str(body), "-H", "Content-Type: application/octet-stream"]
    out = subprocess.run(argv + [url], capture_output=True, text=True, timeout=seconds + 60)
    if out.returncode != 0 or not log.exists():
        raise RuntimeError(f"h2load failed ({out.returncode}): {out.stdout[-500:]} {out.stderr[-500:]}")
    lat, starts, bad = [], [], 0
    for line in log.read_text().splitlines():
        start, status, us = line.split("\t")[:3]
        starts.append(int(start))
        if not status.startswith("2"):
            bad += 1
        lat.append(int(us))
    rows = list(zip(starts, lat))  # (start µs since the epoch, µs): bench_tail matches slow ones to loop stalls
    late = sum(1 for v in lat if v >= period_ms * 1000)  # all of them: one in the skipped start can delay a kept one
    skipped = 0
    if skip_s > 0 and starts:
        cut = min(starts) + skip_s * 1e6
        kept = [(s, u) for s, u in rows if s >= cut]
        skipped = len(rows) - len(kept)
        rows, lat = kept, [u for _, u in kept]
    m = re.search(r"requests: (\d+) total", out.stdout)
    unlogged = max(0, int(m.group(1)) - len(starts)) if m else 0  # never answered (a failed stream is logged as -1)
    span = (max(starts) - min(starts)) / 1e6 if len(starts) > 1 else 1.0
    return {"lat": lat, "rows": rows, "rps": len(starts) / max(span, 1e-6), "bad": bad + unlogged, "skipped": skipped,
            "late": late, "clients": clients}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="bound on the whole run (default 60)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds over the targets (default 2)")
    ap.add_argument("--client-rps", type=int, default=50,
                    help="requests per second per connection (default 50: a 20 ms period, at most 100)")
    ap.add_argument("--pure", action="store_true", help="also the sidecar's plain-Python build")
    ap.add_argument("--no-peers", dest="peers", action="store_false",
                    help="leave out HAProxy and Caddy (then nginx's saturation sets the rate, as before)")
    ap.add_argument("--no-bare", dest="bare", action="store_false",
                    help="leave out bare-h1 and ch1, the floors for a Python forwarder (bench/_bare_forwarder.py, "
                    "bench/_ch1_forwarder.pyx)")
    ap.add_argument("--only", help="comma-separated targets to run besides direct and nginx (haproxy, caddy, bare-h1, ch1, "
                    "sidecar, sidecar-pure)")
    ap.add_argument("--fraction", type=float, default=0.5, help="fixed rate / the slowest peer's saturation (default 0.5)")
    ap.add_argument("--rate", type=int, help="a fixed rate in req/s for both methods instead (e.g. a previous run's, "
                    "with --no-peers: more rounds in the same time)")
    ap.add_argument("--skip", type=float, default=0.5,
                    help="leave out what each cell starts in its first SKIP seconds (default 0.5; 0: keep all)")
    ap.add_argument("--rt", type=int, default=0, metavar="PRIO",
                    help="run h2load, the upstream and the proxies SCHED_FIFO at PRIO (1-99; default 0: off)")
    ap.add_argument("--no-pin", dest="pin", action="store_false",
                    help="do not pin the load generator and upstream, and the proxy, to separate CPUs")
    ap.add_argument("--sidecar-env", action="append", default=[], metavar="K=V",
                    help="an environment variable for the sidecar (repeatable; e.g. EPOCHGATE_PURE_PYTHON=proxy.h2)")
    a = ap.parse_args()
    if not 1 <= a.client_rps <= 100:
        ap.error("--client-rps must be 1..100 (h2load's timer fires at most every 10 ms)")
    if a.rounds < 1 or a.seconds <= 0 or not 0 < a.fraction <= 1:
        ap.error("--rounds ≥ 1, --seconds > 0 and 0 < --fraction ≤ 1")
    if a.only and (bad := set(a.only.split(",")) - {"direct", "nginx", "haproxy", "caddy", "bare-h1", "ch1", "sidecar",
                                                     "sidecar-pure"}):
        ap.error(f"--only: no target {', '.join(sorted(bad))}")
    if tools_missing("bench_latency", "wrk", "h2load", "nginx"):
        return 2
    nginx = binary("nginx")
    tmp = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    procs: dict[str, Proc | None] = {}
    upstream = None
    split = cpu_split(a.pin)
    if split:  # wrk, h2load and the upstream inherit the bench's CPUs; each proxy is moved below
        os.sched_setaffinity(0, split[0])
    sidecar_env = dict(kv.split("=", 1) for kv in a.sidecar_env)
    keep = set(a.only.split(",")) if a.only else set()
    try:
        upstream = nginx_upstream(tmp, nginx)
        up = upstream.port
        procs["direct"] = None
        # keep as many idle upstream connections as the sidecar's pool does (256): with nginx's usual 64, the
        # ~200 connections here make it open and close upstream connections per request (measured: p50 25 ms)
        procs["nginx"] = nginx_proxy(tmp, nginx, free_port(), up, keepalive=256)

        def want(name: str) -> bool:
            return not keep or name in keep

        for peer, start in (("haproxy", haproxy_proc), ("caddy", caddy_proc)):
            if not want(peer):
                continue
            if why := missing(peer):  # not installed: one line, and the rest runs
                print(f"bench_latency: {why}", file=sys.stderr)
            elif a.peers:
                procs[peer] = start(tmp, free_port(), up)
        if a.bare and want("bare-h1"):
            port = free_port()
            procs["bare-h1"] = Proc("bare-h1", [sys.executable, str(ROOT / "bench" / "_bare_forwarder.py"), str(port),
                                                str(up)], port, tmp)
        # built before it starts (~10 s of CPU the first time); None: it cannot be built (said on stderr)
        if a.bare and want("ch1") and (argv := ch1_argv(tmp / "ch1")) is not None:
            port = free_port()
            procs["ch1"] = Proc("ch1", [*argv, str(port), str(up)], port, tmp)
        if want("sidecar"):
            procs["sidecar"] = sidecar_proc(tmp, free_port(), up, 1, extra_env=sidecar_env)
        if a.pure and want("sidecar-pure"):
            procs["sidecar-pure"] = sidecar_proc(tmp, free_port(), up, 1, pure=True, extra_env=sidecar_env)
        pin_targets(procs, split)
        build = subprocess.run([sys.executable, "-c", "import sidecar._build as b; print(b.describe())"],
                               capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                               timeout=60).stdout.strip()  # as the sidecar process (started the same way) sees it

        def url(name: str) -> str:
            p = procs[name]
            return f"http://127.0.0.1:{p.port if p else up}/kv/bench"

        # 1. saturation throughput per method (bench_proxy's wrk settings): nginx's sets the rate; each proxy's own
        # says how loaded it is at that rate (a proxy near its own saturation queues, whatever its code does)
        sat_s = 2.0
        sat: dict[tuple[str, str], float] = {}
        for name in procs:
            if name != "direct":
                run_wrk(url(name), 1.0, 32, False, tmp)
                for m in METHODS:
                    sat[name, m] = run_wrk(url(name), sat_s, 32, m == "POST", tmp)["rps"]
        slowest = {m: min((sat[n, m], n) for n in PEERS if (n, m) in sat) for m in METHODS}
        rate = {m: max(a.client_rps, int(a.rate or slowest[m][0] * a.fraction) // a.client_rps * a.client_rps)
                for m in METHODS}
        print(f"  saturation: {sat}", file=sys.stderr, flush=True)

        # 2. fixed rate, interleaved; warm-up (1 s per target and method) is not counted
        spent = (len(procs) - 1) * (2 * sat_s + 1) + 8  # saturation runs, their warm-up, start-up
        cells = a.rounds * len(METHODS) * len(procs)
        # each cell also spends one period opening its connections
        cell_s = max(1.0, (a.seconds - spent - len(procs) * len(METHODS)) / cells - 1 / a.client_rps)
        RT["prio"] = a.rt  # the fixed-rate cells only: wrk's saturation runs above stay at normal priority
        pin_targets(procs, split, upstream, a.rt)
        for name in procs:
            for m in METHODS:
                run_h2load(url(name), m, rate[m], a.client_rps, 1.0, tmp)
        acc: dict[tuple[str, str], list] = {}
        loads: list[float] = []
        for rnd in range(a.rounds):
            loads.append(os.getloadavg()[0])
            for m in METHODS:
                for name in rotate(list(procs), rnd):
                    owner = procs[name] or upstream
                    c0, w0, t0 = group_cpu_s(owner.p.pid), group_wait_s(owner.p.pid), time.monotonic()
                    r = run_h2load(url(name), m, rate[m], a.client_rps, cell_s, tmp, skip_s=a.skip)
                    dt = time.monotonic() - t0
                    r["cpu"] = (group_cpu_s(owner.p.pid) - c0) / dt
                    r["wait"] = (group_wait_s(owner.p.pid) - w0) / dt
                    r["lat"].sort()
                    acc.setdefault((name, m), []).append(r)
                    print(f"  round {rnd + 1} (load {loads[-1]:.1f}) {name:12s} {m:4s} {r['rps']:.0f} req/s "
                          f"p99 {pct(r['lat'], .99):.0f} µs", file=sys.stderr, flush=True)
        report(a, procs, acc, sat, rate, cell_s, build, slowest, split, loads)
    except (RuntimeError, TimeoutError, subprocess.TimeoutExpired, AttributeError) as exc:
        # a target that died or never listened, h2load or wrk failing (AttributeError: wrk printed no figures)
        print(f"bench_latency: {type(exc).__name__}: {exc} (logs were in {tmp})", file=sys.stderr)
        return 1
    finally:
        stop_targets(procs, upstream, tmp)
    return 0


def rotate(names: list[str], rnd: int) -> list[str]:
    """The targets' order in round ``rnd``: rotated by one each round, so no target always follows
    the same one (a cell's after-effects — the machine's caches, a neighbour's burst — fall on all)."""
    k = rnd % len(names)
    return names[k:] + names[:k]


def pin_targets(procs: dict, split: tuple[set[int], set[int]] | None, upstream=None, rt: int = 0) -> None:
    """Every proxy's process group onto the proxy CPUs (the load generator and upstream keep the others);
    with ``rt``, the proxies and ``upstream`` SCHED_FIFO at that priority too."""
    cpus = split or (os.sched_getaffinity(0),) * 2
    if split or rt:
        for p in procs.values():
            if p is not None:
                pin_group(p.p.pid, cpus[1], rt)
    if upstream is not None and rt:
        pin_group(upstream.p.pid, cpus[0], rt)


def pinning(split: tuple[set[int], set[int]] | None) -> str:
    rt = f", SCHED_FIFO {RT['prio']} in the fixed-rate cells (--rt)" if RT["prio"] else ""
    if not split:
        return "not pinned" + rt
    return (f"h2load + upstream pinned to CPU {','.join(map(str, sorted(split[0])))}, each proxy to CPU "
            f"{','.join(map(str, sorted(split[1])))}{rt}")


def added_by_round(runs: list[dict], direct: list[dict]) -> list[list[float]]:
    """Per round: [+p50, +p99, +p99.9] — the target's percentile minus the direct cell's of that round."""
    return [[pct(r["lat"], q) - pct(d["lat"], q) for q in PCTS] for r, d in zip(runs, direct)]


def round_table(acc_of, names: list[str], label: str) -> None:
    """Per target: the added percentiles as median (range) over rounds, and the per-round ratio of its added
    p50/p99/p99.9 to nginx's (``acc_of(name)`` → that target's runs, one per round)."""
    direct = acc_of("direct")
    nginx = added_by_round(acc_of("nginx"), direct) if "nginx" in names else None
    print(f"per round ({label}): added µs, median (min–max) over {len(direct)} rounds; x nginx: the same round's "
          f"added figure over nginx's, median (range)")
    print(f"  {'target':12s} {'+p50':>16s} {'+p99':>18s} {'+p99.9':>18s}   {'+p50 x nginx':>22s} "
          f"{'+p99 x nginx':>22s} {'+p99.9 x nginx':>22s}")
    for name in names:
        if name == "direct":
            continue
        add = added_by_round(acc_of(name), direct)
        cols = [spread([r[i] for r in add]) for i in range(3)]
        if nginx is None or name == "nginx":
            xs = ["-"] * 3
        else:
            xs = [ratio_spread([r[i] / n[i] if n[i] > 0 else None for r, n in zip(add, nginx)]) for i in range(3)]
        print(f"  {name:12s} {cols[0]:>16s} {cols[1]:>18s} {cols[2]:>18s}   {xs[0]:>22s} {xs[1]:>22s} {xs[2]:>22s}")


def report(a, procs, acc, sat, rate, cell_s, build, slowest, split, loads) -> None:
    clients = {m: acc["direct", m][0]["clients"] for m in METHODS}
    how = "given (--rate)" if a.rate else f"of {a.fraction:g} x the slowest peer's saturation"
    print(f"\nh2load --h1 at a fixed rate {how} (wrk -t1 -c32: GET "
          f"{slowest['GET'][1]} {slowest['GET'][0]:.0f}, POST {slowest['POST'][1]} {slowest['POST'][0]:.0f} req/s): GET {rate['GET']}, POST {rate['POST']} req/s, "
          f"{clients['GET']}/{clients['POST']} connections x {a.client_rps} req/s; {a.rounds} rounds x {cell_s:.1f} s "
          f"per cell; sidecar: 1 worker, gating + metrics + access log on, {build}; {os.cpu_count()} CPUs, "
          f"{pinning(split)}; load average (1 min) at the rounds' starts "
          f"{min(loads):.1f}–{max(loads):.1f}, at the end {os.getloadavg()[0]:.1f}")
    print(f"{'target':12s} {'method':6s} {'req/s':>7s} {'p50 µs':>7s} {'p99 µs':>7s} {'p99.9 µs':>8s} "
          f"{'+p50':>6s} {'+p99':>6s} {'+p99.9':>7s} {'CPU %':>6s} {'wait ms/s':>9s} {'of sat.':>7s} {'>=period':>8s} "
          f"{'non-2xx':>7s}")
    merged: dict[tuple[str, str], list[float]] = {}
    for m in METHODS:
        base = None
        for name in procs:
            runs = acc[name, m]
            lat = sorted(v for r in runs for v in r["lat"])
            ps = [pct(lat, q) for q in PCTS]
            merged[name, m] = ps
            base = base or ps
            added = ["-"] * 3 if name == "direct" else [f"{p - b:.0f}" for p, b in zip(ps, base)]
            n = sum(len(r["lat"]) for r in runs)
            print(f"{name:12s} {m:6s} {sum(r['rps'] for r in runs) / len(runs):7.0f} {ps[0]:7.0f} {ps[1]:7.0f} "
                  f"{ps[2]:8.0f} {added[0]:>6s} {added[1]:>6s} {added[2]:>7s} "
                  f"{100 * sum(r['cpu'] for r in runs) / len(runs):6.0f} "
                  f"{1000 * sum(r['wait'] for r in runs) / len(runs):9.1f} "
                  f"{(f'{100 * rate[m] / sat[name, m]:.0f}%' if (name, m) in sat else '-'):>7s} "
                  f"{sum(r['late'] for r in runs):8d} "
                  f"{sum(r['bad'] for r in runs):7d}" + ("  (upstream's CPU)" if name == "direct" else "")
                  + ("" if n else "  no responses"))
    print("+pNN: the target's percentile minus the direct one's. wait: ms per s its threads were runnable but "
          "off-CPU (other work on its CPU; the same for every target's code). of sat.: the fixed rate / the target's own "
          "saturation throughput (wrk, same run). >=period: responses at least 1/client-rps slow (0: no "
          "coordinated omission)")
    for name in procs:
        if name in ("direct", "nginx"):
            continue
        for m in METHODS:
            d, n, s = merged["direct", m], merged["nginx", m], merged[name, m]
            ratios = [ratio(sv - dv, nv - dv) for sv, nv, dv in zip(s, n, d)]
            # issue 20's goal is the sidecar's; the floor's figure says whether any Python forwarder can meet it
            goal = " (goal ≤ 1.5x)" if name.startswith(("sidecar", "bare", "ch1")) else ""
            print(f"added latency {name} / nginx, {m:4s}, all rounds pooled: p50 {ratios[0]}, p99 {ratios[1]}{goal}, "
                  f"p99.9 {ratios[2]}")
    for m in METHODS:
        round_table(lambda n: acc[n, m], list(procs), m)


def ratio(x: float, y: float) -> str:
    return f"{x / y:.2f}x" if y > 0 else "n/a (nginx adds ≤ 0)"


if __name__ == "__main__":
    sys.exit(main())
