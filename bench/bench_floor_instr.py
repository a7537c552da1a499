"""Instructions per gRPC unary call through the Python forwarder floors, counted (valgrind): ``bare-h2``
(``_bare_h2_forwarder.py``: libnghttp2 through ngh2) against ``cng-h2`` (``_cng_forwarder.pyx``:
libnghttp2 driven from C), and ``haproxy`` (bench/peers/haproxy.cfg: one thread, access log on) for
scale. docs/figures-peers.md, stop 37.

    python bench/bench_floor_instr.py [--calls 2000] [--lone] [--targets bare-h2,cng-h2,haproxy]
    python bench/bench_floor_instr.py --h1 [--calls 2000] [--lone] [--targets bare-h1,ch1,haproxy] [--by-source]

``--h1`` (stop 38): HTTP/1.1 GETs instead, through ``bare-h1`` (``_bare_forwarder.py``: uvloop + httptools)
against ``ch1`` (``_ch1_forwarder.pyx``: llhttp driven from C) and HAProxy's HTTP/1.1 frontend; the same
nginx answers "ok" on HTTP/1.1, h2load ``--h1`` drives 4 connections (``--lone``: 1), one request in flight each.

bench_grpc_instr's method on a forwarder instead of the sidecar: nginx answering gRPC-shaped unary
calls on h2c behind it; the forwarder under ``valgrind --tool=cachegrind --cache-sim=no``, 400 warm-up
calls then N calls by h2load (4 connections x 10 streams; ``--lone``: 1 x 1), then SIGTERM; again with
3N calls; (I(3N) - I(N)) / 2N is one call's instructions, start-up and shutdown cancelled.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _compiled_copy import ch1_argv, compiled_argv  # noqa: E402
from _peers import PEERS, binary  # noqa: E402
from bench_grpc import grpc_upstream, run_h2load  # noqa: E402
from bench_proxy import ROOT, free_port, wait_port  # noqa: E402


def argv_of(target: str, tmp: Path, port: int, up: object, h1: bool = False) -> tuple[list[str], dict[str, str]] | None:
    """The target's argv listening for h2c (``h1``: HTTP/1.1) on ``port`` in front of ``up`` (bench_grpc's nginx),
    and its env."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    if target == "haproxy" and h1:  # its HTTP/1.1 frontend (PEER_PORT) on ``port``, to nginx's HTTP/1.1 server
        env.update(PEER_PORT=str(port), PEER_H2_PORT=str(free_port()), UP_PORT=str(up.h1),  # type: ignore[attr-defined]
                   UP_H2_PORT=str(up.port))  # type: ignore[attr-defined]
        return [binary("haproxy") or "haproxy", "-f", str(PEERS / "haproxy.cfg"), "-db"], env
    if target in ("bare-h1", "ch1"):
        argv = ([sys.executable, str(ROOT / "bench" / "_bare_forwarder.py")] if target == "bare-h1"
                else ch1_argv(tmp / "ch1"))
        return None if argv is None else ([*argv, str(port), str(up.h1)], env)  # type: ignore[attr-defined]
    if target == "haproxy":  # one thread, access log on (bench/peers/haproxy.cfg); the log is its stdout
        env.update(PEER_PORT=str(free_port()), PEER_H2_PORT=str(port), UP_PORT=str(up.h1),  # type: ignore[attr-defined]
                   UP_H2_PORT=str(up.port))  # type: ignore[attr-defined]
        return [binary("haproxy") or "haproxy", "-f", str(PEERS / "haproxy.cfg"), "-db"], env
    if target == "bare-h2":
        argv = [sys.executable, str(ROOT / "bench" / "_bare_h2_forwarder.py")]
    elif (built := compiled_argv(ROOT / "bench" / "_cng_forwarder.pyx", tmp / "cng-h2")) is not None:
        argv = built
    else:
        return None
    return [*argv, str(port), str(up.port)], env  # type: ignore[attr-defined]


#: ``--by-source``: cachegrind's source files grouped by what they belong to (first match; the rest: "other")
GROUPS = (("llhttp", ("llhttp",)), ("forwarder", ("_ch1_forwarder", "_cng_forwarder")), ("ngh2/nghttp2", ("nghttp2", "ngh2")),
          ("uvloop+libuv", ("uvloop", "libuv", "/uv/", "src/unix")), ("httptools", ("httptools",)),
          ("CPython", ("Objects/", "Python/", "Include/", "Modules/", "Parser/")), ("pthread (GIL)", ("nptl",)),
          ("libc", ("string/", "malloc", "sysdeps", "libio", "stdlib")))


def by_source(out: Path) -> dict[str, int]:
    """Self instructions per group of source files in a cachegrind output (``fl=`` lines name the file)."""
    acc: dict[str, int] = {}
    group = "other"
    for line in out.read_text(errors="replace").splitlines():
        if line.startswith("fl="):
            group = next((g for g, keys in GROUPS if any(k in line for k in keys)), "other")
        elif line[:1].isdigit() and len(parts := line.split()) >= 2:
            acc[group] = acc.get(group, 0) + int(parts[1])
    return acc


def run(target: str, tmp: Path, up: object, calls: int, lone: bool, h1: bool = False) -> tuple[int, dict[str, int]]:
    port = free_port()
    out = tmp / f"cachegrind.{calls}.out"
    argv, env = argv_of(target, tmp, port, up, h1)  # type: ignore[misc]
    p = subprocess.Popen(["valgrind", "--tool=cachegrind", "--cache-sim=no", f"--cachegrind-out-file={out}",
                          *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True, env=env)
    try:
        wait_port(port, timeout=600)
        conns, streams = (1, 1) if lone else (4, 1 if h1 else 10)
        url = f"http://127.0.0.1:{port}/kv/bench" if h1 else f"http://127.0.0.1:{port}/kv.v1.Store/Put"
        run_h2load(url, 400, conns, streams, tmp, grpc=not h1, h1=h1)
        r = run_h2load(url, calls, conns, streams, tmp, grpc=not h1, h1=h1)
        if r["ok"] != calls:
            raise RuntimeError(f"{r['ok']} of {calls} calls succeeded")
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(300)
    m = re.search(r"^(?:summary|totals): (\d+)", out.read_text(errors="replace"), re.M)
    if m is None:
        raise RuntimeError(f"no totals in {out}")
    return int(m.group(1)), by_source(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--lone", action="store_true", help="one connection, one call in flight")
    ap.add_argument("--targets", help="default: bare-h2,cng-h2,haproxy (--h1: bare-h1,ch1,haproxy)")
    ap.add_argument("--by-source", action="store_true", help="also each target's instructions per request by "
                    "what their source files belong to (CPython, uvloop, llhttp, ...)")
    ap.add_argument("--h1", action="store_true", help="HTTP/1.1 GETs through bare-h1, ch1 and HAProxy (stop 38)")
    a = ap.parse_args()
    for tool in ("valgrind", "h2load"):
        if not shutil.which(tool):
            print(f"bench_floor_instr: {tool} not found (Debian: valgrind, nghttp2-client)", file=sys.stderr)
            return 2
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    res = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        up = grpc_upstream(tmp, nginx)
        try:
            what = "HTTP/1.1 GET" if a.h1 else "gRPC call"
            for t in (a.targets or ("bare-h1,ch1,haproxy" if a.h1 else "bare-h2,cng-h2,haproxy")).split(","):
                if argv_of(t, tmp, 0, up, a.h1) is None:
                    continue
                one, src1 = run(t, tmp, up, a.calls, a.lone, a.h1)
                three, src3 = run(t, tmp, up, 3 * a.calls, a.lone, a.h1)
                res[t] = (three - one) / (2 * a.calls)
                print(f"{t:8s} {res[t]:,.0f} instructions per {what}{' (lone)' if a.lone else ''}", flush=True)
                if a.by_source:
                    per = {g: (src3.get(g, 0) - src1.get(g, 0)) / (2 * a.calls) for g in src3.keys() | src1.keys()}
                    print("         " + ", ".join(f"{g} {n:,.0f}" for g, n in sorted(per.items(), key=lambda x: -x[1])),
                          flush=True)
        finally:
            up.stop()
    for a_, b_ in (("cng-h2", "bare-h2"), ("cng-h2", "haproxy"), ("bare-h2", "haproxy"), ("ch1", "bare-h1"),
                   ("ch1", "haproxy"), ("bare-h1", "haproxy")):
        if a_ in res and b_ in res:
            print(f"{a_} / {b_}: {res[a_] / res[b_]:.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
