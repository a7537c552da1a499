"""Syscalls and event-loop wake-ups per request at a fixed low rate, per target (strace counts).

    python bench/bench_syscalls.py [--grpc] [--method GET|POST] [--rate 600] [--seconds 4] [--rounds 1]
                                   [--variant 'NAME;K=V;...'] [--no-peers] [--order FILE]

On this VM a syscall or a loop wake-up made after an idle gap costs tens of µs (docs/figures-peers.md,
stop 40), so at a low request rate what a proxy spends per request is set by how many it makes. This
runs bench_tail.py's set-up (an nginx upstream answering 1 KiB, or gRPC-shaped unary calls on h2c with
``--grpc``; h2load at a fixed rate, open loop per connection, ``--client-rps`` per connection) against
each sidecar variant (1 worker, gating, metrics and the access log on; ``ROOT=DIR`` runs another
checkout, e.g. the baseline build) and, unless ``--no-peers``, nginx (``proxy_pass`` / ``grpc_pass``,
access log buffered) and HAProxy (one thread, access log on). For each target, after one second of
load, ``perf stat`` counts the syscall tracepoints of every process of the target for ``--seconds``
(``--tool strace``: ``strace -f -c`` instead) and the calls of each syscall are divided by the
requests sent meanwhile (rate x seconds: the load is open loop).

``epoll_wait`` (or ``epoll_pwait``) calls are the loop's wake-ups. perf's tracepoint counters leave the
target at its own speed; strace slows the traced process (each syscall stops it twice), so more
requests arrive per wake-up and the wake-up counts fall (the other counts hold while the target is
not saturated under strace). Before the load, each target's syscalls and wake-ups per second with no
load (its timers) are counted the same way over ``--seconds`` (``--no-idle`` leaves that out).
``--order FILE`` also writes, per target, ``strace -f -tt`` of a short window (clock_gettime left
out) so the order of a request's syscalls can be read.

Also printed: ``CPU µs/request`` (on-CPU time of the target's threads from schedstat over the window,
perf's counting included) and its kernel share (utime/stime, 10 ms ticks: coarse).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peers import group_threads, stop_targets, tools_missing  # noqa: E402
from bench_latency import run_h2load  # noqa: E402
from bench_proxy import TICK  # noqa: E402
from bench_tail import parse_variants, start_peers, start_sidecar, start_upstream  # noqa: E402

ROW = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:(\d+)\s+)?(\w+)\s*$")


def strace_counts(pids: list[int], seconds: float, out: Path, order: bool = False) -> dict[str, int]:
    """Attach strace to ``pids`` (all threads) for ``seconds``; calls per syscall (with ``order``: the raw trace)."""
    argv = ["strace", "-f", "-o", str(out)] + (["-tt", "-e", "trace=!clock_gettime"] if order else ["-c"])
    for pid in pids:
        argv += ["-p", str(pid)]
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(seconds)
    p.send_signal(signal.SIGINT)
    p.wait(30)
    if order:
        return {}
    counts = {}
    for line in out.read_text().splitlines():
        m = ROW.match(line)
        if m and m.group(3) != "total":
            counts[m.group(3)] = int(m.group(1))
    return counts


PERF_CALLS = ("epoll_wait", "epoll_pwait", "read", "recvfrom", "write", "writev", "sendto", "sendmsg", "recvmsg",
              "epoll_ctl", "setsockopt", "getsockopt", "getpeername", "futex", "openat", "ioctl", "getpid")


def perf_counts(pids: list[int], seconds: float, out: Path) -> dict[str, int]:
    """``perf stat`` of syscall tracepoints on ``pids`` for ``seconds``: calls per syscall, with the
    target running at its own speed (no ptrace stops, unlike strace); ``all`` is every syscall."""
    ev = ["raw_syscalls:sys_enter"] + [f"syscalls:sys_enter_{c}" for c in PERF_CALLS]
    # polls that do not block (timeout 0): the loop had work queued (call_soon) or a timer due within 1 ms
    zero = [a for c in ("epoll_wait", "epoll_pwait") for a in ("-e", f"syscalls:sys_enter_{c}", "--filter", "timeout == 0")]
    argv = ["perf", "stat", "-x", ",", "-o", str(out), "-e", ",".join(ev), *zero, "-p", ",".join(map(str, pids)),
            "--", "sleep", str(seconds)]
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=seconds + 30)
    counts: dict[str, int] = {}
    for line in out.read_text().splitlines():
        f = line.split(",")
        if len(f) > 2 and f[0].isdigit():
            name = "all" if f[2] == "raw_syscalls:sys_enter" else f[2].removeprefix("syscalls:sys_enter_")
            if name in counts:  # the second of a name: the filtered one (timeout 0)
                counts["zero-timeout polls"] = counts.get("zero-timeout polls", 0) + int(f[0])
            else:
                counts[name] = int(f[0])
    return counts


def cpu_times(pgid: int) -> tuple[float, float, float]:
    """(on-CPU s from schedstat, utime s, stime s) of every thread of process group ``pgid``."""
    run = ut = st = 0.0
    for pid, tid in group_threads(pgid):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                run += int(f.read().split()[0]) / 1e9
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
            fields = stat[stat.rfind(")") + 2:].split()
            ut, st = ut + int(fields[11]) / TICK, st + int(fields[12]) / TICK
        except (OSError, ValueError, IndexError):
            continue
    return run, ut, st


def measure(url: str, pgid: int, a, tmp: Path, h2, name: str) -> dict[str, float]:
    """Per-request syscall counts for the target in process group ``pgid`` under the fixed-rate load;
    ``cpu_us`` (on-CPU µs per request, schedstat) and ``sys_share`` (kernel share of utime + stime)."""
    pids = sorted({pid for pid, _ in group_threads(pgid)})
    res: dict[str, int] = {}
    window = a.seconds

    def trace() -> None:
        time.sleep(1.0)  # the clients are connected and the load is steady
        c0 = cpu_times(pgid)
        if a.tool == "perf":
            res.update(perf_counts(pids, window, tmp / f"perf-{name}.txt"))
        else:
            res.update(strace_counts(pids, window, tmp / f"strace-{name}.txt"))
        c1 = cpu_times(pgid)
        cpu[:] = [c1[0] - c0[0], c1[1] - c0[1], c1[2] - c0[2]]

    cpu: list[float] = []

    t = threading.Thread(target=trace)
    t.start()
    r = run_h2load(url, a.method, a.rate, a.client_rps, window + 2.0, tmp, h2=h2)
    t.join()
    if r["bad"]:
        print(f"bench_syscalls: {name}: {r['bad']} failed requests", file=sys.stderr)
    n = a.rate * window
    out = {k: v / n for k, v in res.items()}
    out["cpu_us"] = 1e6 * cpu[0] / n
    out["sys_share"] = cpu[2] / max(cpu[1] + cpu[2], 1e-9)
    return out


def idle_counts(pgid: int, a, tmp: Path, name: str) -> dict[str, float]:
    """Syscalls per second of the target with no load (its timers: what wakes it between requests)."""
    pids = sorted({pid for pid, _ in group_threads(pgid)})
    res = perf_counts(pids, a.seconds, tmp / f"idle-{name}.txt") if a.tool == "perf" else \
        strace_counts(pids, a.seconds, tmp / f"idle-{name}.txt")
    return {k: v / a.seconds for k, v in res.items()}


def order_trace(url: str, pgid: int, a, tmp: Path, h2, name: str, dest: Path) -> None:
    pids = sorted({pid for pid, _ in group_threads(pgid)})
    out = tmp / f"order-{name}.txt"

    def trace() -> None:
        time.sleep(1.0)
        strace_counts(pids, 0.5, out, order=True)

    t = threading.Thread(target=trace)
    t.start()
    run_h2load(url, a.method, min(a.rate, 200), min(a.client_rps, 20), 2.0, tmp, h2=h2)
    t.join()
    with dest.open("a") as f:
        f.write(f"===== {name} ({'gRPC' if h2 else a.method}) =====\n{out.read_text()}\n")


KINDS = (("wake-ups (epoll_wait)", ("epoll_wait", "epoll_pwait")),
         ("  of which timeout 0", ("zero-timeout polls",)),
         ("reads", ("read", "recvfrom", "recvmsg", "readv")),
         ("writes", ("write", "sendto", "sendmsg", "writev")),
         ("epoll_ctl", ("epoll_ctl",)))


def report(rows: dict[str, dict[str, float]], a, idle: dict[str, dict[str, float]]) -> None:
    what = "gRPC unary (h2c both sides)" if a.grpc else f"HTTP/1.1 {a.method}{' 1 KiB' if a.method == 'POST' else ''}"
    print(f"\nsyscalls per request, {what}, {a.rate} req/s ({a.client_rps}/s per connection), "
          f"{'perf stat' if a.tool == 'perf' else 'strace -f -c'} over {a.seconds:g} s, load {os.getloadavg()[0]:.1f}")
    names = list(rows)
    print(f"{'':24s}" + "".join(f"{n:>12s}" for n in names))
    print(f"{'CPU µs/request':24s}" + "".join(f"{rows[n]['cpu_us']:12.1f}" for n in names))
    print(f"{'  kernel share':24s}" + "".join(f"{rows[n]['sys_share']:12.0%}" for n in names))
    print(f"{'syscalls':24s}" + "".join(f"{rows[n].get('all', sum(rows[n].values())):12.2f}" for n in names))
    for label, calls in KINDS:
        print(f"{label:24s}" + "".join(f"{sum(rows[n].get(c, 0) for c in calls):12.2f}" for n in names))
    if idle:
        print(f"{'idle: syscalls/s':24s}" + "".join(f"{idle[n].get('all', sum(idle[n].values())):12.1f}" for n in names))
        print(f"{'idle: wake-ups/s':24s}" + "".join(
            f"{idle[n].get('epoll_wait', 0) + idle[n].get('epoll_pwait', 0):12.1f}" for n in names))
    known = {c for _, cs in KINDS for c in cs} | {"all", "cpu_us", "sys_share"}
    other = sorted({c for n in names for c in rows[n] if c not in known},
                   key=lambda c: -max(rows[n].get(c, 0) for n in names))
    for c in other:
        if max(rows[n].get(c, 0) for n in names) >= 0.01:
            print(f"{'  ' + c:24s}" + "".join(f"{rows[n].get(c, 0):12.2f}" for n in names))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=int, default=600, help="req/s (default 600)")
    ap.add_argument("--seconds", type=float, default=4.0, help="strace window per target (default 4)")
    ap.add_argument("--rounds", type=int, default=1, help="repeat the targets; the table is per round")
    ap.add_argument("--client-rps", type=int, default=50)
    ap.add_argument("--method", choices=("GET", "POST"), default="POST")
    ap.add_argument("--grpc", action="store_true", help="gRPC unary over h2c (node h2c://) instead of HTTP/1.1")
    ap.add_argument("--variant", action="append", default=[], help="'NAME;K=V;...' (repeatable; default: one 'sidecar')")
    ap.add_argument("--tool", choices=("perf", "strace"), default="perf",
                    help="count with perf stat's syscall tracepoints (default: the target at its own speed) or strace -c")
    ap.add_argument("--no-peers", dest="peers", action="store_false", help="leave out nginx and HAProxy")
    ap.add_argument("--no-idle", dest="idle", action="store_false", help="leave out the idle window (syscalls/s, no load)")
    ap.add_argument("--order", type=Path, help="also write a short strace -tt of each target to this file")
    a = ap.parse_args()
    if tools_missing("bench_syscalls", "h2load", "nginx", a.tool, *(["strace"] if a.order else [])):
        return 2
    variants = parse_variants(a.variant)
    tmp = Path(tempfile.mkdtemp(prefix="bench-syscalls-"))
    procs: dict = {}
    upstream = None
    try:
        upstream, node, h2, path = start_upstream(tmp, a.grpc)
        ports: dict[str, int] = {}
        for name, env in variants.items():
            procs[name] = start_sidecar(tmp, name, node, dict(env), probe=False)
            ports[name] = procs[name].port
        if a.peers:
            for name, (p, port) in start_peers(tmp, upstream, a.grpc, {"nginx", "haproxy"}).items():
                procs[name], ports[name] = p, port
        for name in procs:  # warm-up
            run_h2load(f"http://127.0.0.1:{ports[name]}{path}", a.method, a.rate, a.client_rps, 1.0, tmp, h2=h2)
        idle = {name: idle_counts(p.p.pid, a, tmp, name) for name, p in procs.items()} if a.idle else {}
        for rnd in range(a.rounds):
            rows = {}
            for name, p in procs.items():
                rows[name] = measure(f"http://127.0.0.1:{ports[name]}{path}", p.p.pid, a, tmp, h2, name)
            report(rows, a, idle)
        if a.order:
            for name, p in procs.items():
                order_trace(f"http://127.0.0.1:{ports[name]}{path}", p.p.pid, a, tmp, h2, name, a.order)
    finally:
        for p in procs.values():
            p.stop()
        stop_targets({}, upstream, tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
