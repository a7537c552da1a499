"""What one sidecar costs in memory: RSS idle, with 1,000 idle keep-alive connections, under load.

    python bench/bench_rss.py [--connections 1000] [--seconds 5] [--pure]

One run on the embedded store (a placement file, ``--workers 1``, gating, metrics and
access log on) behind an nginx upstream answering 1 KiB. Prints the sidecar's resident
memory (VmRSS of its whole process group, from /proc) and thread count: idle after
start-up; after N client connections each sent one request and stay open (keep-alive,
idle); the peak while wrk drives 32 connections for ``--seconds``; and after one
HTTP/2 (h2c) request, which loads the HTTP/2 engine on first use; after ``--h2-requests``
more over 10 connections x 10 streams (h2load) -- these two are issue 30's "idle RSS
<= 40 MiB with the compiled HTTP/2 part loaded"; and after one control-API call
(``partitions list``), which loads the gRPC API and the embedded migration controller
behind the lazy control listener (sidecar/api/lazy.py). Beside
it, the same measurements' baselines in this run: a bare interpreter, and one that
imported uvloop + httptools (the floor for a Python data path). ``--pure`` runs the
plain-Python build (EPOCHGATE_PURE_PYTHON=1).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_proxy import BODY, ROOT, Proc, free_port, nginx_upstream, run_wrk  # noqa: E402

PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def group_mem(pgid: int) -> tuple[float, int, int]:
    """(RSS MiB, threads, processes) over a process group."""
    rss_kb = threads = procs = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
            fields = stat[stat.rfind(")") + 2:].split()
            if int(fields[2]) != pgid:
                continue
            status = Path(f"/proc/{d}/status").read_text()
        except OSError:
            continue
        procs += 1
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                rss_kb += int(line.split()[1])
            elif line.startswith("Threads:"):
                threads += int(line.split()[1])
    return rss_kb / 1024, threads, procs


def baseline_rss(code: str) -> float:
    """RSS (MiB) of a fresh interpreter after running ``code``."""
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys\n"
                          "print([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1])"],
                         capture_output=True, text=True, check=True).stdout
    return int(out.strip()) / 1024


def open_keepalive(port: int, n: int) -> list[socket.socket]:
    """n connections, each with one answered request, left open and idle."""
    socks = []
    req = b"GET /kv/x HTTP/1.1\r\nHost: b\r\nX-Partition-Key: t1\r\n\r\n"
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(req)
        socks.append(s)
    for s in socks:  # read each answer (1 KiB body + head): the request completed, the connection stays
        s.settimeout(10)
        got = b""
        while b"\r\n\r\n" not in got or len(got.split(b"\r\n\r\n", 1)[1]) < len(BODY):
            chunk = s.recv(65536)
            if not chunk:
                raise RuntimeError("sidecar closed a keep-alive connection")
            got += chunk
        if not got.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"unexpected answer: {got[:80]!r}")
    return socks


def h2load(url: str, n: int, clients: int, streams: int) -> str:
    """Drive ``n`` h2c (prior knowledge) GETs; returns "N 2xx"; raises unless every answer is a 2xx."""
    out = subprocess.run(["h2load", f"-n{n}", f"-c{clients}", f"-m{streams}", "-H", "x-partition-key: t1", url],
                         capture_output=True, text=True, timeout=120).stdout
    m = re.search(r"status codes: (\d+) 2xx", out)
    ok = int(m.group(1)) if m else 0
    if ok != n:
        raise RuntimeError(f"h2load: {ok} of {n} answers were 2xx:\n{out[-600:]}")
    return f"{ok} 2xx"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--pure", action="store_true", help="run the plain-Python build")
    ap.add_argument("--h2-requests", type=int, default=20000, help="HTTP/2 requests after the first (0: skip)")
    a = ap.parse_args()
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not shutil.which("wrk") or not shutil.which("h2load") or not Path(nginx).exists():
        print("bench_rss: needs wrk, h2load (Debian nghttp2-client) and nginx", file=sys.stderr)
        return 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * a.connections + 256)), hard))
    tmp = Path(tempfile.mkdtemp(prefix="bench-rss-"))
    up = sc = None
    socks: list[socket.socket] = []
    try:
        up = nginx_upstream(tmp, nginx)
        up_port = up.port
        placement = tmp / "placement.toml"
        placement.write_text(f'[nodes]\na = "http://127.0.0.1:{up_port}"\n\n[partitions]\nt1 = "a"\n')
        port = free_port()
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        env.pop("EPOCHGATE_PURE_PYTHON", None)
        if a.pure:
            env["EPOCHGATE_PURE_PYTHON"] = "1"
        control = f"127.0.0.1:{free_port()}"
        argv = [sys.executable, "-m", "sidecar", "--placement", str(placement), "--listen", f"127.0.0.1:{port}",
                "--admin", f"127.0.0.1:{free_port()}", "--control", control, "--workers", "1"]
        sc = Proc("sidecar", argv, port, tmp, env=env)
        time.sleep(1.0)
        pg = sc.p.pid
        idle = group_mem(pg)
        socks = open_keepalive(port, a.connections)
        time.sleep(0.5)
        conns = group_mem(pg)
        for s in socks:
            s.close()
        socks = []
        peak = [0.0, 0, 0]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.1):
                m = group_mem(pg)
                if m[0] > peak[0]:
                    peak[:] = m

        t = threading.Thread(target=sample)
        t.start()
        r = run_wrk(f"http://127.0.0.1:{port}/kv/bench", a.seconds, 32, False, tmp)
        stop.set()
        t.join()
        url = f"http://127.0.0.1:{port}/kv/bench"
        h2_first = h2load(url, 1, 1, 1)
        time.sleep(0.5)
        h2 = group_mem(pg)
        h2_many = h2_after = None
        if a.h2_requests:
            h2_many = h2load(url, a.h2_requests, 10, 10)
            time.sleep(0.5)
            h2_after = group_mem(pg)
        cli = subprocess.run([sys.executable, "-m", "sidecar", "partitions", "list", "--control", control],
                             env=env, capture_output=True, text=True, timeout=60)
        if cli.returncode != 0:
            raise RuntimeError(f"control call failed: {cli.stderr.strip()}")
        time.sleep(0.5)
        ctl = group_mem(pg)
        build = next((ln.split(" build=", 1)[1].split(" h2=")[0].strip() for ln in (tmp / "sidecar.log").read_text().splitlines()
                      if " build=" in ln), "?")
        engine = next((ln.split(" h2=", 1)[1].strip() for ln in (tmp / "sidecar.log").read_text().splitlines()
                       if " h2=" in ln), "?")
        bare = baseline_rss("pass")
        floor = baseline_rss("import asyncio, uvloop, httptools; uvloop.new_event_loop()")
        print(f"sidecar --workers 1, embedded store, build: {build}")
        print(f"{'state':38s} {'RSS MiB':>8s} {'threads':>8s} {'procs':>6s}")
        print(f"{'idle':38s} {idle[0]:8.1f} {idle[1]:8d} {idle[2]:6d}")
        print(f"{f'{a.connections} idle keep-alive connections':38s} {conns[0]:8.1f} {conns[1]:8d} {conns[2]:6d}"
              f"   (+{(conns[0] - idle[0]) * 1024 / max(1, a.connections):.1f} KiB per connection)")
        load = f"peak under wrk -c32 ({r['rps']:.0f} req/s)"
        print(f"{load:38s} {peak[0]:8.1f} {peak[1]:8d} {peak[2]:6d}")
        print(f"{'after the first HTTP/2 request':38s} {h2[0]:8.1f} {h2[1]:8d} {h2[2]:6d}   ({h2_first})")
        if h2_after is not None:
            row = f"after {a.h2_requests} more HTTP/2 requests"
            print(f"{row:38s} {h2_after[0]:8.1f} {h2_after[1]:8d} {h2_after[2]:6d}   ({h2_many})")
        print(f"{'after the first control call':38s} {ctl[0]:8.1f} {ctl[1]:8d} {ctl[2]:6d}")
        print(f"HTTP/2 engine: {engine}")
        print(f"baselines in this run: bare python {bare:.1f} MiB; python + asyncio/uvloop/httptools {floor:.1f} MiB")
    finally:
        for s in socks:
            s.close()
        for p in (sc, up):
            if p is not None:
                p.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
