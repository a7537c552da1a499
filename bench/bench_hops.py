"""Where a proxy's added latency goes, hop by hop: the time from each read to the write it causes.

    python bench/bench_hops.py [--h1 GET|POST] [--rate N] [--seconds 3] [--rt 10] [--only nginx,haproxy,sidecar,ch1]
                               [--variant 'NAME;K=V;...'] [--no-pin]

bench_tail.py's targets (its upstream answering gRPC-shaped unary calls on h2c, or with ``--h1``
HTTP/1.1 GET or POST 1 KiB; nginx and HAProxy as bench_syscalls.py starts them; the sidecar, 1
worker, and any ``--variant``; with ``--h1`` also ``ch1``, bench_latency's C-driven floor) and the
latency benches' load (h2load open loop per connection at a fixed rate, h2load and the upstream
pinned apart from the proxy), one target at a time. While h2load
runs, ``perf record`` takes the target's system calls (the ``raw_syscalls`` tracepoints, every
thread of its process group) for ``--seconds``, and each socket is named by ``/proc``: a client's
(its local port is the proxy's) or the upstream's. Per target it prints, p50 / p90 / p99 in µs:

* **request hop**: a client read's return → the start of the next write to an upstream socket
  (parsing, routing, gating, re-framing: everything the proxy does before the call leaves it);
* **response hop**: an upstream read's return → the start of the next write to a client socket;
* **poll → read**: the loop's wake-up, from its poll's return to the read that follows it;
* **write**: how long those two writes take. On loopback a write delivers to the peer's socket and
  wakes it, so it carries the kernel's share; it is slower when the code before it left the
  kernel's cache lines cold.

The sum of the medians (the wake-up counted twice, once per hop) is the proxy's share of a call's
critical path; what it does after a write (its bookkeeping) is not in it, but delays the next call. Tracing costs the same
few µs per system call for every target; the figures compare, they are not the untraced latency
(bench_grpc_latency.py has that). Needs perf (Debian ``linux-perf``) and root.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _compiled_copy import ch1_argv  # noqa: E402
from _peers import cpu_split, group_threads, stop_targets, tools_missing  # noqa: E402
from bench_latency import RT, pin_targets, run_h2load  # noqa: E402
from bench_proxy import Proc, free_port  # noqa: E402
from bench_tail import parse_variants, start_peers, start_sidecar, start_upstream  # noqa: E402

READS = {0, 17, 19, 45}         # read, pread64, readv, recvfrom
WRITES = {1, 18, 20, 44, 46}    # write, pwrite64, writev, sendto, sendmsg
POLLS = {7, 232, 281, 441}       # poll, epoll_wait, epoll_pwait, epoll_pwait2
CONNECT, CLOSE, ACCEPTS = 42, 3, {43, 288}  # nginx makes new upstream connections as it goes (keepalive_requests)
LINE = re.compile(r"\s*(\d+)/(\d+)\s+([\d.]+):\s+raw_syscalls:sys_(enter|exit): NR (\d+) (.*)")


def socket_roles(pids: list[int], listen: int, upstream: int) -> dict[tuple[int, int], str]:
    """(pid, fd) → "client" or "upstream", from each socket's ports in /proc/net/tcp."""
    ports: dict[str, tuple[int, int]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for row in f.readlines()[1:]:
                c = row.split()
                ports[c[9]] = (int(c[1].rsplit(":", 1)[1], 16), int(c[2].rsplit(":", 1)[1], 16))
    roles = {}
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            m = re.fullmatch(r"socket:\[(\d+)\]", link)
            if m and m.group(1) in ports:
                local, remote = ports[m.group(1)]
                if local == listen and remote:
                    roles[(pid, int(fd))] = "client"
                elif remote == upstream:
                    roles[(pid, int(fd))] = "upstream"
    return roles


def hops(trace: str, roles: dict[tuple[int, int], str]) -> dict[str, list[float]]:
    """The four series (µs) from ``perf script`` output."""
    roles = dict(roles)  # kept current through the trace: connections made, accepted and closed in it
    calls = []  # (enter µs, exit µs, nr, pid, role of the fd then, ret) per completed call
    open_ = {}
    for line in trace.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        pid, tid, t, kind, nr, rest = int(m[1]), int(m[2]), float(m[3]) * 1e6, m[4], int(m[5]), m[6]
        if kind == "enter":
            args = rest.strip("()").split(", ")
            fd = int(args[0], 16) if args and args[0] else -1
            if nr == CONNECT:
                roles[(pid, fd)] = "upstream"
            elif nr == CLOSE:
                roles.pop((pid, fd), None)
            open_[tid] = (t, nr, pid, fd)
        elif tid in open_ and open_[tid][1] == nr:
            t0, _, p, fd = open_.pop(tid)
            ret = int(rest.split("=")[1])
            if nr in ACCEPTS and ret >= 0:
                roles[(p, ret)] = "client"
            calls.append((t0, t, nr, p, roles.get((p, fd)), ret))
    out: dict[str, list[float]] = {"poll → read": [], "request hop": [], "write upstream": [], "response hop": [],
                                   "write client": []}
    for i, (start, end, nr, pid, role, ret) in enumerate(calls):
        if nr not in READS or ret <= 0 or role is None:
            continue
        for j in range(i - 1, max(-1, i - 4), -1):  # the loop's wake-up: its poll's return → this read
            if calls[j][3] == pid and calls[j][2] in POLLS:
                out["poll → read"].append(start - calls[j][1])
                break
            if calls[j][3] == pid and calls[j][2] not in READS:
                break
        want = "upstream" if role == "client" else "client"
        for t0, t1, nr2, pid2, role2, _ in calls[i + 1:i + 40]:
            if nr2 in WRITES and pid2 == pid and role2 == want:
                hop, wr = ("request hop", "write upstream") if role == "client" else ("response hop", "write client")
                out[hop].append(t0 - end)
                out[wr].append(t1 - t0)
                break
    return out


def q(v: list[float], p: float) -> float:
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * p))] if v else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--h1", choices=("GET", "POST"), help="HTTP/1.1 requests instead of gRPC calls")
    ap.add_argument("--rate", type=int, help="per s (default: 1650 gRPC calls, 1900 HTTP/1.1 requests: half of Caddy's saturation here)")
    ap.add_argument("--seconds", type=float, default=3.0, help="traced seconds per target (default 3)")
    ap.add_argument("--client-rps", type=int, default=50)
    ap.add_argument("--rt", type=int, default=0, metavar="PRIO", help="SCHED_FIFO for h2load, upstream, proxy (as bench_latency)")
    ap.add_argument("--only", default="nginx,haproxy,sidecar,ch1", help="targets (default nginx,haproxy,sidecar,ch1; ch1 with --h1)")
    ap.add_argument("--variant", action="append", metavar="'NAME;K=V;...'",
                    help="a sidecar with these environment variables, ROOT=DIR: another checkout (bench_tail's; "
                         "repeatable; default one plain sidecar)")
    ap.add_argument("--no-pin", dest="pin", action="store_false")
    a = ap.parse_args()
    perf = shutil.which("perf")
    if perf is None or tools_missing("bench_hops", "h2load", "nginx"):
        print("bench_hops: perf, h2load and nginx are needed", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="bench-hops-"))
    procs: dict = {}
    upstream = None
    split = cpu_split(a.pin)
    if split:
        os.sched_setaffinity(0, split[0])
    want = a.only.split(",")
    rate = a.rate or (1900 if a.h1 else 1650)
    try:
        upstream, node, args, path = start_upstream(tmp, grpc=not a.h1)
        ports: dict[str, int] = {}
        for name, (p, port) in start_peers(tmp, upstream, not a.h1, set(want)).items():
            procs[name], ports[name] = p, port
        if a.h1 and "ch1" in want and (argv := ch1_argv(tmp / "ch1")) is not None:
            port = free_port()
            procs["ch1"], ports["ch1"] = Proc("ch1", [*argv, str(port), str(upstream.port)], port, tmp), port
        if "sidecar" in want:
            for name, env in parse_variants(a.variant).items():
                procs[name] = start_sidecar(tmp, name, node, dict(env), probe=False)
                ports[name] = procs[name].port
        what = f"HTTP/1.1 {a.h1}{' 1 KiB' if a.h1 == 'POST' else ''}" if a.h1 else "gRPC unary (h2c, -m1)"
        RT["prio"] = a.rt
        pin_targets(procs, split, upstream, a.rt)
        print(f"{what} at {rate}/s, {a.seconds:g} s traced per target after 1 s of load; "
              f"µs p50 / p90 / p99 (n = reads matched)")
        print(f"{'target':10s} {'poll → read':>18s} {'request hop':>18s} {'write upstream':>18s} {'response hop':>18s}"
              f" {'write client':>18s} {'sum of p50':>10s} {'n':>6s}")
        for name, p in procs.items():
            url = f"http://127.0.0.1:{ports[name]}{path}"
            load = threading.Thread(target=run_h2load, args=(url, a.h1 or "POST", rate, a.client_rps, a.seconds + 3, tmp),
                                    kwargs={"h2": args}, daemon=True)
            load.start()
            time.sleep(1.0)
            pids = sorted({pid for pid, _ in group_threads(p.p.pid)})
            roles = socket_roles(pids, ports[name], upstream.port)  # the sockets open when the trace starts
            data = tmp / f"{name}.perf"
            subprocess.run([perf, "record", "-q", "-e", "raw_syscalls:sys_enter,raw_syscalls:sys_exit",
                            "-p", ",".join(map(str, pids)), "-o", str(data), "--", "sleep", str(a.seconds)],
                           check=True, capture_output=True, timeout=a.seconds + 60)
            load.join(a.seconds + 60)
            trace = subprocess.run([perf, "script", "-i", str(data), "-F", "pid,tid,time,event,trace"],
                                   capture_output=True, text=True, timeout=300).stdout
            s = hops(trace, roles)
            cells = " ".join(f"{q(v, .5):5.0f} {q(v, .9):5.0f} {q(v, .99):5.0f}" for v in s.values())
            # the sum: the two hops and their writes, and one wake-up per hop (each read follows one poll at most)
            wake = q(s["poll → read"], .5)  # nan where no read follows a poll directly (HAProxy: *, left out)
            total = sum(q(v, .5) for k, v in s.items() if k != "poll → read") + (2 * wake if wake == wake else 0)
            print(f"{name:10s} {cells} {total:9.0f}{' ' if wake == wake else '*'} {len(s['request hop']):6d}", flush=True)
    finally:
        stop_targets(procs, upstream, tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
