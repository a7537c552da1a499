"""Where the sidecar's CPU goes per gRPC unary call: profile_proxy.py's sampling profile under h2load.

    python bench/profile_grpc.py [--seconds 4] [--pure] [--get] [--top 40] [--root DIR]

bench_grpc.py's set-up (nginx answering gRPC-shaped unary calls on h2c, a 1-worker sidecar with
partition ``t1`` on node ``h2c://``); h2load drives gRPC unary POSTs (``--get``: plain HTTP/2
GETs) while ``perf record --call-graph dwarf`` samples the sidecar; the summary is
profile_proxy.py's (kernel share, user-space samples by innermost sidecar frame, leaf symbols).
``--root DIR`` profiles the sidecar of another source tree (built in place).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_grpc  # noqa: E402
import bench_proxy  # noqa: E402
from bench_grpc import grpc_sidecar, grpc_upstream, run_h2load  # noqa: E402
from profile_proxy import aggregate  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--requests", type=int, default=200000, help="h2load requests (cut at --seconds)")
    ap.add_argument("--pure", action="store_true", help="the plain-Python build (EPOCHGATE_PURE_PYTHON=1)")
    ap.add_argument("--get", action="store_true", help="plain HTTP/2 GETs instead of gRPC unary POSTs")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--root", type=Path, default=None, help="the source tree whose sidecar runs")
    a = ap.parse_args()
    perf, nginx = shutil.which("perf"), shutil.which("nginx") or "/usr/sbin/nginx"
    if not perf or not shutil.which("h2load"):
        print("profile_grpc: perf and h2load are needed", file=sys.stderr)
        return 2
    if a.root is not None:
        bench_grpc.ROOT = bench_proxy.ROOT = a.root.resolve()   # (PYTHONPATH and cwd)
    tmp = Path(tempfile.mkdtemp(prefix="profile-grpc-"))
    procs = []
    try:
        up = grpc_upstream(tmp, nginx)
        procs.append(up)
        env = {"EPOCHGATE_PURE_PYTHON": "1"} if a.pure else None
        sc = grpc_sidecar(tmp, up.port, up.h1, env=env)  # type: ignore[attr-defined]
        procs.append(sc)
        url = f"http://127.0.0.1:{sc.port}/" + ("kv/k" if a.get else "kv.v1.Store/Put")
        run_h2load(url, 3000, 16, 10, tmp, grpc=not a.get)  # warm-up
        data = tmp / "perf.data"
        rec = subprocess.Popen([perf, "record", "-q", "-F", "999", "--call-graph", "dwarf,8192", "-p",
                                str(sc.p.pid), "-o", str(data), "--", "sleep", str(a.seconds)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        load = threading.Thread(target=run_h2load, args=(url, a.requests, 16, 10, tmp, not a.get), daemon=True)
        load.start()
        rec.wait(timeout=a.seconds + 60)
        sc.stop()   # (ends the load)
        procs.remove(sc)
        script = subprocess.run([perf, "script", "-i", str(data)], capture_output=True, text=True,
                                timeout=600).stdout
        print(f"{'h2 GET' if a.get else 'gRPC unary'}, h2load -c16 -m10, {a.seconds:g}s under perf; "
              f"build: {'pure' if a.pure else 'compiled if built'}\n")
        print(aggregate(script, a.top))
    finally:
        for p in reversed(procs):
            p.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
