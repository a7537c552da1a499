"""Instructions per gRPC unary call through the sidecar, counted (valgrind): this tree against another.

    python bench/bench_grpc_instr.py [--baseline DIR] [--calls 2000] [--get] [--lone] [--tool cachegrind|callgrind] [--out DIR]

bench_grpc.py's set-up (nginx answering gRPC-shaped unary calls on h2c; partition ``t1`` on node
``h2c://``; gating, metrics and the access log on) with the 1-worker sidecar run under
``valgrind --tool=cachegrind --cache-sim=no`` twice: start-up, a warm-up of 400 calls and N calls
by h2load (4 connections × 10 streams; ``--lone``: 1 × 1, each call alone in its loop passes as at a
low fixed rate), then SIGTERM; and the same with 3N calls. (I(3N) − I(N))
/ 2N is what one call adds, start-up and shutdown cancelled (the timer ticks of the longer run's
extra seconds are not: well under 1%). Unlike CPU time, the count does not move with the
load of a shared machine (bench_grpc.py's CPU figures vary ±20% between identical rounds
there), so a 1% change shows; it weighs a cache miss like an add. ``--baseline DIR`` runs the
sidecar of another source tree (built in place) the same way. Which functions: ``--tool
callgrind --out DIR`` keeps both runs' callgrind.out files there (``callgrind_annotate`` each,
and subtract per function: that is how the figures in docs/figures-peers.md were split).
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
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_grpc import grpc_upstream, run_h2load  # noqa: E402
from bench_proxy import ROOT, free_port, wait_port  # noqa: E402


def run(root: Path, tmp: Path, up_port: int, h1_port: int, calls: int, get: bool, tool: str, lone: bool = False) -> int:
    """Instructions (Ir) of one sidecar process: start-up, 400 warm-up calls, ``calls`` calls, shutdown."""
    port = free_port()
    placement = tmp / "placement.toml"
    placement.write_text(f'[nodes]\ng = "h2c://127.0.0.1:{up_port}"\nh = "http://127.0.0.1:{h1_port}"\n\n'
                         f'[partitions]\nt1 = "g"\nt2 = "h"\n')
    out = tmp / f"{tool}.{root.name}.{calls}.out"
    opts = ["--cache-sim=no"] if tool == "cachegrind" else []
    argv = ["valgrind", f"--tool={tool}", *opts, f"--{tool}-out-file={out}",
            sys.executable, "-m", "sidecar", "--placement", str(placement), "--listen", f"127.0.0.1:{port}",
            "--admin", f"127.0.0.1:{free_port()}", "--control", f"127.0.0.1:{free_port()}", "--workers", "1"]
    logf = tmp / f"sidecar.{root.name}.log"
    log = open(logf, "w")
    p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=root, start_new_session=True,
                         env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0"})
    try:
        wait_port(port, timeout=600)
        url = f"http://127.0.0.1:{port}/" + ("kv/k" if get else "kv.v1.Store/Put")
        conns, streams = (1, 1) if lone else (4, 10)
        run_h2load(url, 400, conns, streams, tmp, grpc=not get)   # warm-up: connections, caches, first calls
        r = run_h2load(url, calls, conns, streams, tmp, grpc=not get)
        if r["ok"] != calls:
            raise RuntimeError(f"{r['ok']} of {calls} calls succeeded")
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(300)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        log.close()
    text = out.read_text(errors="replace")
    m = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
    if m is None:
        raise RuntimeError(f"no totals in {out}: {logf.read_text()[-2000:]}")
    return int(m.group(1))


def count(root: Path, tmp: Path, up_port: int, h1_port: int, calls: int, get: bool, tool: str,
          lone: bool = False) -> tuple[float, str]:
    """Instructions per call: (I(3N) − I(N)) / 2N, and the build the sidecar said it ran."""
    one = run(root, tmp, up_port, h1_port, calls, get, tool, lone)
    three = run(root, tmp, up_port, h1_port, 3 * calls, get, tool, lone)
    log = (tmp / f"sidecar.{root.name}.log").read_text()
    build = re.search(r"build=(.*)", log)
    return (three - one) / (2 * calls), build.group(1) if build else "?"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", type=Path, metavar="DIR", help="another source tree, built in place")
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--get", action="store_true", help="plain HTTP/2 GETs instead of gRPC unary POSTs")
    ap.add_argument("--tool", default="cachegrind", choices=("cachegrind", "callgrind"),
                    help="callgrind: slower, keeps per-function counts (the out files are printed)")
    ap.add_argument("--lone", action="store_true",
                    help="one connection, one call in flight: each call alone in its loop passes, as at a low "
                         "fixed rate (bench_grpc_latency), where nothing is shared with other calls")
    ap.add_argument("--out", type=Path, metavar="DIR", help="keep the valgrind output files here")
    a = ap.parse_args()
    for tool in ("valgrind", "h2load"):
        if not shutil.which(tool):
            print(f"bench_grpc_instr: {tool} not found (Debian: valgrind, nghttp2-client)", file=sys.stderr)
            return 2
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    trees = [("this", ROOT)] + ([("base", a.baseline.resolve())] if a.baseline is not None else [])
    res = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d) if a.out is None else a.out
        tmp.mkdir(parents=True, exist_ok=True)
        up = grpc_upstream(tmp, nginx)
        try:
            for label, root in trees:
                t0 = time.monotonic()
                res[label], build = count(root, tmp, up.port, up.h1, a.calls, a.get, a.tool, a.lone)  # type: ignore[attr-defined]
                print(f"{label:5s} {root}: {res[label]:,.0f} instructions per {'GET' if a.get else 'gRPC call'}{' (lone)' if a.lone else ''} "
                      f"({time.monotonic() - t0:.0f}s; build {build})", flush=True)
        finally:
            up.stop()
    if "base" in res:
        print(f"this / base: {res['this'] / res['base']:.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
