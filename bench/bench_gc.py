"""What one full garbage collection costs the sidecar's event loop, with and without the
start-up heap frozen (``sidecar._loop.settle_heap``).

    python bench/bench_gc.py [--connections 1000] [--repeat 5]

Each variant is a fresh process running the real sidecar (``python -m sidecar`` code path,
embedded store, 1 worker) with a probe thread beside it. Once the sidecar answers, a client
process opens ``--connections`` keep-alive connections (one request each, left open), then the
probe times ``gc.collect()`` (a full pass: the pause every full collection puts on the loop)
``--repeat`` times. The baseline replaces ``settle_heap`` with a no-op. Prints tracked
objects, frozen objects and the pause of each variant, and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_proxy import BODY, free_port, nginx_upstream, wait_port  # noqa: E402

CHILD = r'''
import gc, json, os, runpy, sys, threading, time
freeze, port, ready_file, go_file, repeat = sys.argv[1] == "1", sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
import sidecar._loop as L
if not freeze:
    L.settle_heap = lambda: None
def probe():
    while not os.path.exists(go_file):
        time.sleep(0.05)
    ts = []
    for _ in range(repeat):
        t = time.perf_counter(); gc.collect(); ts.append(time.perf_counter() - t)
    out = {"tracked": len(gc.get_objects()), "frozen": gc.get_freeze_count(), "ms": sorted(1000 * x for x in ts)}
    with open(ready_file, "w") as f:
        json.dump(out, f)
threading.Thread(target=probe, daemon=True).start()
sys.argv = ["sidecar"] + sys.argv[6:]
runpy.run_module("sidecar", run_name="__main__")
'''


def run(freeze: bool, placement: Path, tmp: Path, conns: int, repeat: int) -> dict:
    port = free_port()
    out, go = tmp / f"out-{freeze}.json", tmp / f"go-{freeze}"
    argv = [sys.executable, "-c", CHILD, "1" if freeze else "0", str(port), str(out), str(go), str(repeat),
            "--placement", str(placement), "--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{free_port()}",
            "--control", f"127.0.0.1:{free_port()}", "--workers", "1", "--no-access-log"]
    p = subprocess.Popen(argv, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    socks = []
    try:
        wait_port(port)
        req = b"GET /kv/x HTTP/1.1\r\nHost: b\r\nX-Partition-Key: t1\r\n\r\n"
        for _ in range(conns):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(req)
            socks.append(s)
        for s in socks:
            s.settimeout(10)
            got = b""
            while len(got) < len(BODY):
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
        go.touch()
        end = time.monotonic() + 60
        while not out.exists() and time.monotonic() < end:
            time.sleep(0.05)
        return json.loads(out.read_text())
    finally:
        for s in socks:
            s.close()
        p.terminate()
        p.wait(10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-gc-"))
    up = nginx_upstream(tmp, shutil.which("nginx") or "/usr/sbin/nginx")
    try:
        placement = tmp / "placement.toml"
        placement.write_text(f'[nodes]\na = "http://127.0.0.1:{up.port}"\n\n[partitions]\nt1 = "a"\n')
        rows = {v: run(v, placement, tmp, a.connections, a.repeat) for v in (False, True)}
    finally:
        up.stop()
    print(f"full gc.collect() in the running sidecar, {a.connections} idle keep-alive connections, "
          f"{a.repeat} passes each")
    for v, name in ((False, "no freeze (baseline)"), (True, "settle_heap (collect + freeze)")):
        r = rows[v]
        ms = r["ms"]
        print(f"  {name:32s} tracked {r['tracked']:7d}  frozen {r['frozen']:7d}  pause min {ms[0]:.2f} ms  "
              f"median {ms[len(ms) // 2]:.2f} ms  max {ms[-1]:.2f} ms")
    b, c = rows[False]["ms"], rows[True]["ms"]
    print(f"  median pause ratio, frozen / baseline: {c[len(c) // 2] / max(1e-9, b[len(b) // 2]):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
