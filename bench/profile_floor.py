"""Where a gRPC unary call's CPU goes in the bare h2c forwarder (the floor), HAProxy and the sidecar:
``perf`` samples by shared object (kernel, libpython, libnghttp2, ngh2, uvloop ...).

    python bench/profile_floor.py [--targets bare-h2,cng-h2,haproxy,sidecar] [--calls 60000] [--freq 4000]

bench_grpc.py's set-up (nginx answering gRPC-shaped unary calls on h2c, h2load 16 connections x 10
streams, a 64-byte message); each target alone, after a warm-up, under ``perf record -p PID``
(every thread of the proxy's process) for the calls; then ``perf report --sort dso``. Prints the
share of samples per shared object, the µs of CPU per call each share is (the proxy's CPU time over
the calls, as bench_grpc), and the same grouped as: the kernel (socket calls: what every forwarder
pays), libnghttp2 itself (by its symbols: ngh2 links it into its extension), the rest of the ngh2
binding, the event loop (uvloop/libuv), the interpreter
(libpython and the CPython objects it allocates), the rest. Needs ``perf`` (linux-perf) and root or
``perf_event_paranoid`` ≤ 1. Samples are noisy on a shared machine like everything else here; the
shares move less than the µs.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peers import haproxy_proc, missing  # noqa: E402
from bench_grpc import bare_h2, cng_h2, grpc_peer, grpc_sidecar, grpc_upstream, run_h2load  # noqa: E402
from bench_proxy import Proc  # noqa: E402

GROUPS = (("kernel", ("[kernel", "[vdso")), ("ngh2 binding", ("_core.cpython", "events.cpython")),
          ("event loop", ("loop.cpython", "libuv")), ("interpreter", ("libpython", "python3")),
          ("libc", ("libc.so", "libc-", "ld-linux")))


def group_of(dso: str, sym: str) -> str:
    """A sample's group: libnghttp2 by its symbols' prefix (ngh2 links it into ``_core``), else by object."""
    if sym.startswith(("nghttp2_", "session_", "hd_", "inflate_", "deflate_")) or "libnghttp2" in dso:
        return "libnghttp2"
    for name, keys in GROUPS:
        if any(k in dso for k in keys):
            return name
    return "other"


def dso_shares(report: str) -> dict[tuple[str, str], float]:
    """``perf report --sort dso,sym --stdio`` → {(shared object, symbol): % of samples}."""
    out: dict[tuple[str, str], float] = {}
    for line in report.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[.\]\s+(.*?)\s*$", line)
        if m:
            key = (m.group(2), m.group(3))
            out[key] = out.get(key, 0.0) + float(m.group(1))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", default="bare-h2,haproxy,sidecar")
    ap.add_argument("--calls", type=int, default=60000)
    ap.add_argument("--freq", type=int, default=4000, help="perf samples per second (default 4000)")
    a = ap.parse_args()
    for tool in ("perf", "h2load", "nginx"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            print(f"profile_floor: {tool} not found", file=sys.stderr)
            return 2
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        up = grpc_upstream(tmp, nginx)
        h2, h1 = up.port, up.h1  # type: ignore[attr-defined]
        starts = {"bare-h2": lambda: bare_h2(tmp, h2), "bare-h2c": lambda: bare_h2(tmp, h2, compiled=True),
                  "cng-h2": lambda: cng_h2(tmp, h2),
                  "haproxy": lambda: None if missing("haproxy") else grpc_peer(haproxy_proc, tmp, h2, h1),
                  "sidecar": lambda: grpc_sidecar(tmp, h2, h1)}
        try:
            for name in a.targets.split(","):
                p: Proc | None = starts[name]()
                if p is None:
                    print(f"profile_floor: {name} not available", file=sys.stderr)
                    continue
                try:
                    url = f"http://127.0.0.1:{p.port}/kv.v1.Store/Put"
                    run_h2load(url, 4000, 16, 10, tmp)
                    data = tmp / f"perf.{name}.data"
                    rec = subprocess.Popen(["perf", "record", "-q", "-F", str(a.freq), "-o", str(data), "-p",
                                            str(p.p.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                    c0 = p.cpu()
                    r = run_h2load(url, a.calls, 16, 10, tmp)
                    cpu_us = (p.cpu() - c0) / max(r["reqs"], 1) * 1e6
                    rec.send_signal(2)  # SIGINT: perf writes its file
                    rec.wait(60)
                    rep = subprocess.run(["perf", "report", "-i", str(data), "--sort", "dso,sym", "--stdio"],
                                         capture_output=True, text=True, timeout=300).stdout
                finally:
                    p.stop()
                shares = dso_shares(rep)
                groups: dict[str, float] = {}
                objects: dict[str, float] = {}
                for (dso, sym), pct in shares.items():
                    groups[group_of(dso, sym)] = groups.get(group_of(dso, sym), 0.0) + pct
                    objects[dso] = objects.get(dso, 0.0) + pct
                print(f"\n{name}: {r['reqs']} calls, {r['rps']:.0f} calls/s, {cpu_us:.1f} µs CPU per call")
                for g, pct in sorted(groups.items(), key=lambda kv: -kv[1]):
                    print(f"  {g:14s} {pct:5.1f}%  {cpu_us * pct / 100:5.1f} µs")
                print("  by shared object: " + ", ".join(f"{k} {v:.1f}%" for k, v in
                                                         sorted(objects.items(), key=lambda kv: -kv[1])[:8]))
                print("  top symbols: " + ", ".join(f"{sym} {v:.1f}%" for (_, sym), v in
                                                    sorted(shares.items(), key=lambda kv: -kv[1])[:12]))
        finally:
            up.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
