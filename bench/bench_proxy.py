"""What the sidecar costs per request, against nginx, HAProxy, Caddy and a minimal aiohttp proxy.

    python bench/bench_proxy.py [--seconds 5] [--connections 32]

One run: an nginx upstream answering 1 KiB; then wrk drives, for GET and POST
(1 KiB body), in turn: the upstream directly, nginx as a plain reverse proxy
(keep-alive to the upstream; config generated into a temp dir, loopback ports),
the peers a user would pick instead, HAProxy and Caddy (one thread each, access
log on, keep-alive pools; configs committed in bench/peers/, started by
bench/_peers.py; a peer not installed is skipped with one line), a minimal aiohttp proxy (server + ClientSession), and
a bare asyncio.Protocol + httptools forwarder on uvloop (``_bare_forwarder.py``,
the floor for any Python data path; ``ch1``: that floor with llhttp driven from C, ``_ch1_forwarder.pyx``,
docs/figures-peers.md stop 38), and the sidecar with 1 and 2 workers (gating, metrics and access log on; POST is
a gated write). nginx also runs with 2 workers (its default shared listening socket, and
``reuseport``), so a "2w/1w" line can show what a second worker costs nginx on the same
machine beside what it costs the sidecar. For each cell it prints req/s, p50/p99 latency and the proxy's
CPU time per request (utime+stime of the proxy's whole process group from
/proc, divided by the requests wrk completed), and the ratio to nginx's
CPU-µs/request measured in the same run; for multi-process targets the CPU split between the
workers (the parent — nginx's master, the sidecar's supervisor — is counted in the total,
not in the split). Figures are noisy on a shared
machine: compare the ratios, not the absolute numbers.

Tracing (issue 28, docs/tracing.md): ``sidecar-1w-trace0`` runs the sidecar with
``--trace-otlp-endpoint`` at ``--trace-sample-ratio 0`` (every request sampled out: the
fixed cost), ``sidecar-1w-trace1`` at ratio 1.0 (every request traced and exported to a
local OTLP/HTTP sink, a separate process not counted); the "trace/off" lines give their
CPU-µs/request against ``sidecar-1w`` (tracing off) within each round:

    python bench/bench_proxy.py --only sidecar-1w,sidecar-1w-trace0,sidecar-1w-trace1 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")
BODY = "x" * 1024

AIOHTTP_PROXY = r'''
import sys
from aiohttp import web, ClientSession, TCPConnector
UP = sys.argv[2]
async def handler(request):
    body = await request.read()
    hdrs = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "connection", "content-length", "transfer-encoding")}
    async with request.app["s"].request(request.method, UP + request.path_qs, headers=hdrs, data=body) as r:
        data = await r.read()
        return web.Response(status=r.status, body=data, headers={"Content-Type": r.headers.get("Content-Type", "text/plain")})
async def start(app):
    app["s"] = ClientSession(connector=TCPConnector(limit=256))
async def stop(app):
    await app["s"].close()
app = web.Application(); app.on_startup.append(start); app.on_cleanup.append(stop)
app.router.add_route("*", "/{tail:.*}", handler)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
'''

# an OTLP/HTTP sink for the tracing targets: reads each export and answers an empty
# ExportTraceServiceResponse (the empty protobuf message), counting spans by bytes only
OTLP_SINK = r'''
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 15) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} not listening")


def group_cpu_s(pgid: int) -> float:
    """utime+stime of every live process in a process group, in seconds."""
    return sum(group_cpu_by_pid(pgid).values())


def group_cpu_by_pid(pgid: int) -> dict[int, float]:
    """utime+stime per live process of a process group, in seconds."""
    out: dict[int, float] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if int(fields[2]) == pgid:  # field 5: pgrp
            out[int(d)] = (int(fields[11]) + int(fields[12])) / TICK  # fields 14, 15: utime, stime
    return out


class Proc:
    def __init__(self, name: str, argv: list[str], port: int, tmp: Path, **kw) -> None:
        self.name = name
        self.port = port
        self.log = open(tmp / f"{name}.log", "w")
        self.p = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
                                  cwd=ROOT, **kw)
        wait_port(port)

    def cpu(self) -> float:
        return group_cpu_s(self.p.pid)

    def stop(self) -> None:
        try:
            os.killpg(self.p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait()
        self.log.close()


def nginx_conf(tmp: Path, name: str, port: int, body: str, workers: int = 1) -> Path:
    d = tmp / name
    d.mkdir(exist_ok=True)  # the same target again in a later round
    conf = d / "nginx.conf"
    conf.write_text(f"""
worker_processes {workers};
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
{"user root;" if os.geteuid() == 0 else ""}
events {{ worker_connections 4096; }}
http {{
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  keepalive_requests 1000000;
  {body}
}}
""")
    return conf


def nginx_upstream(tmp: Path, nginx: str) -> Proc:
    """The upstream every target forwards to: nginx answering 1 KiB, access log off."""
    port = free_port()
    conf = nginx_conf(tmp, "upstream", port, f"""
  access_log off;
  server {{ listen 127.0.0.1:{port}; location / {{ default_type text/plain; return 200 "{BODY}"; }} }}""")
    return Proc("upstream", [nginx, "-c", str(conf), "-p", str(tmp)], port, tmp)


def nginx_proxy(tmp: Path, nginx: str, port: int, up_port: int, workers: int = 1, reuseport: bool = False,
                keepalive: int = 64) -> Proc:
    """nginx as a plain reverse proxy: keep-alive to the upstream, access log on but buffered.

    With ``workers`` > 1 the workers share one listening socket (nginx's default: no
    ``reuseport``, ``accept_mutex off``, EPOLLEXCLUSIVE wake-ups), or with ``reuseport`` one
    SO_REUSEPORT socket each (the kernel hashes connections over them, as for the sidecar).
    ``keepalive``: idle upstream connections nginx keeps; with more client connections in
    flight than that, nginx opens and closes upstream connections per request."""
    name = ("nginx-proxy" if workers == 1 else f"nginx-proxy-{workers}w") + ("-rp" if reuseport else "")
    c = nginx_conf(tmp, name, port, f"""
  access_log {tmp}/{name}/access.log combined buffer=64k flush=1s;
  upstream up {{ server 127.0.0.1:{up_port}; keepalive {keepalive}; }}
  server {{ listen 127.0.0.1:{port}{" reuseport" if reuseport else ""};
    location / {{ proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}""",
                   workers=workers)
    return Proc(name, [nginx, "-c", str(c), "-p", str(tmp)], port, tmp)


def sidecar_proc(tmp: Path, port: int, up_port: int, workers: int = 1, pure: bool = False,
                 extra_env: dict[str, str] | None = None, extra_args: tuple[str, ...] = ()) -> Proc:
    """The sidecar, embedded store, one partition ``t1`` on the upstream; gating, metrics and
    the access log on (defaults). ``pure``: the same source as plain Python (sidecar/_build.py)."""
    placement = tmp / "placement.toml"
    if not placement.exists():
        placement.write_text(f'[nodes]\na = "http://127.0.0.1:{up_port}"\n\n[partitions]\nt1 = "a"\n')
    argv = [sys.executable, "-m", "sidecar", "--placement", str(placement), "--listen", f"127.0.0.1:{port}",
            "--admin", f"127.0.0.1:{free_port()}", "--control", f"127.0.0.1:{free_port()}",
            "--workers", str(workers), *extra_args]
    env = dict(os.environ, PYTHONPATH=str(ROOT), **(extra_env or {}))
    if pure:
        env["EPOCHGATE_PURE_PYTHON"] = "1"
    else:
        env.pop("EPOCHGATE_PURE_PYTHON", None)
    p = Proc(f"sidecar-{workers}w{'-pure' if pure else ''}", argv, port, tmp, env=env)
    time.sleep(1.0 if workers > 1 else 0.3)  # all workers listening
    return p


def run_wrk(url: str, seconds: float, conns: int, post: bool, tmp: Path) -> dict:
    script = tmp / ("post.lua" if post else "get.lua")
    if not script.exists():
        lines = ['wrk.headers["X-Partition-Key"] = "t1"']
        if post:
            lines += ['wrk.method = "POST"', f'wrk.body = string.rep("x", 1024)',
                      'wrk.headers["Content-Type"] = "application/octet-stream"']
        script.write_text("\n".join(lines) + "\n")
    out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{max(1, round(seconds))}s", "--latency", "-s", str(script), url],
                         capture_output=True, text=True, timeout=seconds + 30).stdout
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def lat(pct: str) -> float:
        m = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)", out)
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v if unit == "ms" else v * 1000

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"reqs": reqs, "rps": rps, "p50": lat("50"), "p99": lat("99"),
            "non2xx": int(errors.group(1)) if errors else 0}


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    return (xs[(len(xs) - 1) // 2] + xs[len(xs) // 2]) / 2


def print_table(rows: list[dict], a: argparse.Namespace) -> None:
    """One line per target and method (the median over rounds), then the 2-worker lines."""
    cells: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        cells.setdefault((r["name"], r["method"]), []).append(r)
    med = {k: {f: _median([r[f] for r in rs]) for f in ("rps", "p50", "p99", "cpu_us", "parent_us")}
           | {"non2xx": sum(r["non2xx"] for r in rs), "split": " ".join(r["split"] for r in rs if r["split"]),
              "is_upstream": rs[0]["is_upstream"]} for k, rs in cells.items()}
    base = {m: v["cpu_us"] for (name, m), v in med.items() if name == "nginx"}
    rounds = f", median of {a.rounds} interleaved rounds" if a.rounds > 1 else ""
    print(f"\nwrk -t1 -c{a.connections} -d{a.seconds:g}s, 1 KiB responses, POST bodies 1 KiB; {os.cpu_count()} CPUs"
          + rounds)
    print(f"{'target':18s} {'method':6s} {'req/s':>9s} {'p50 ms':>8s} {'p99 ms':>8s} {'CPU-µs/req':>11s} "
          f"{'x nginx':>8s} {'non-2xx':>8s}  worker CPU split")
    for (name, method), r in med.items():
        cpu = f"{r['cpu_us']:.1f}" + ("*" if r["is_upstream"] else "")
        ratio = "-" if r["is_upstream"] else f"{r['cpu_us'] / base[method]:.2f}"
        print(f"{name:18s} {method:6s} {r['rps']:9.0f} {r['p50']:8.2f} {r['p99']:8.2f} {cpu:>11s} "
              f"{ratio:>8s} {r['non2xx']:8d}  {r['split']}")
    print("* direct: CPU of the upstream itself (no proxy in the path)")
    for name in ("haproxy", "bare-forwarder", "ch1", "sidecar-1w"):  # the per-round spread behind the medians
        for method in ("GET", "POST"):
            if a.rounds > 1 and (name, method) in cells and ("nginx", method) in cells:
                xs = [r["cpu_us"] / n["cpu_us"] for r, n in zip(cells[name, method], cells["nginx", method])]
                print(f"x nginx per round {name:18s} {method:4s} {', '.join(f'{x:.2f}' for x in xs)}")
    for one, two in (("nginx", "nginx-2w"), ("nginx", "nginx-2w-reuseport"), ("sidecar-1w", "sidecar-2w")):
        for method in ("GET", "POST"):
            if (one, method) not in cells or (two, method) not in cells:
                continue
            per = [(r2["cpu_us"] / r1["cpu_us"], r2["second"] or 0.0, r2["parent_us"])
                   for r1, r2 in zip(cells[one, method], cells[two, method])]  # within each round
            ratios = [x[0] for x in per]
            spread = f" (rounds {min(ratios):.2f}-{max(ratios):.2f})" if len(per) > 1 else ""
            print(f"2w/1w {two:18s} {method:4s} CPU-µs/req {_median(ratios):.2f}x{spread}, second worker's share "
                  f"{', '.join(f'{100 * x[1]:.0f}%' for x in per)}; parent process "
                  f"{_median([x[2] for x in per]):.1f} µs/req")
    for traced in ("sidecar-1w-trace0", "sidecar-1w-trace1"):
        for method in ("GET", "POST"):
            if ("sidecar-1w", method) not in cells or (traced, method) not in cells:
                continue
            pairs = list(zip(cells["sidecar-1w", method], cells[traced, method]))  # within each round
            ratios = [r2["cpu_us"] / r1["cpu_us"] for r1, r2 in pairs]
            extra = [r2["cpu_us"] - r1["cpu_us"] for r1, r2 in pairs]
            spread = f" (rounds {min(ratios):.2f}-{max(ratios):.2f})" if len(pairs) > 1 else ""
            print(f"trace/off {traced:18s} {method:4s} CPU-µs/req {_median(ratios):.2f}x{spread}, "
                  f"+{_median(extra):.1f} µs/req")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--only", help="comma-separated subset of targets")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run the targets this many times, interleaved; the table shows medians (default 1)")
    a = ap.parse_args()
    if a.rounds < 1:
        ap.error("--rounds must be ≥ 1")
    for tool in ("wrk", "nginx"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            print(f"bench_proxy: {tool} not found (apt-get install {tool})", file=sys.stderr)
            return 2
    from _peers import caddy_proc, haproxy_proc, missing  # here: _peers imports this module
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    tmp = Path(tempfile.mkdtemp(prefix="bench-proxy-"))
    procs: list[Proc] = []
    try:
        procs.append(nginx_upstream(tmp, nginx))
        up_port = procs[0].port
        upstream_url = f"http://127.0.0.1:{up_port}"

        def aiohttp_proxy(port: int) -> Proc:
            script = tmp / "aiohttp_proxy.py"
            script.write_text(AIOHTTP_PROXY)
            return Proc("aiohttp", [sys.executable, str(script), str(port), upstream_url], port, tmp)

        def bare(port: int) -> Proc:
            return Proc("bare", [sys.executable, str(ROOT / "bench" / "_bare_forwarder.py"), str(port), str(up_port)],
                        port, tmp)

        def ch1(port: int) -> Proc:
            from _compiled_copy import ch1_argv  # here: only this target builds anything
            argv = ch1_argv(tmp / "ch1")
            if argv is None:
                raise RuntimeError("ch1: bench/_ch1_forwarder.pyx could not be built (said above)")
            return Proc("ch1", [*argv, str(port), str(up_port)], port, tmp)

        def sidecar(workers: int, pure: bool = False, trace_ratio: float | None = None):
            if trace_ratio is None:
                return lambda port: sidecar_proc(tmp, port, up_port, workers, pure)

            def traced(port: int) -> Proc:
                if not sink:
                    script = tmp / "otlp_sink.py"
                    script.write_text(OTLP_SINK)
                    sport = free_port()
                    sink.append(Proc("otlp-sink", [sys.executable, str(script), str(sport)], sport, tmp))
                    procs.append(sink[0])
                return sidecar_proc(tmp, port, up_port, workers, pure, extra_args=(
                    "--trace-otlp-endpoint", f"http://127.0.0.1:{sink[0].port}", "--trace-sample-ratio", str(trace_ratio)))
            return traced

        sink: list[Proc] = []

        def nginx_n(workers: int, reuseport: bool = False):
            return lambda port: nginx_proxy(tmp, nginx, port, up_port, workers, reuseport)

        targets = [("direct", None), ("nginx", nginx_n(1)), ("nginx-2w", nginx_n(2)),
                   ("nginx-2w-reuseport", nginx_n(2, reuseport=True)),
                   ("haproxy", lambda port: haproxy_proc(tmp, port, up_port)),
                   ("caddy", lambda port: caddy_proc(tmp, port, up_port)),
                   ("aiohttp-proxy", aiohttp_proxy), ("bare-forwarder", bare), ("ch1", ch1), ("sidecar-1w", sidecar(1)),
                   ("sidecar-1w-pure", sidecar(1, pure=True)), ("sidecar-2w", sidecar(2)),
                   ("sidecar-1w-trace0", sidecar(1, trace_ratio=0.0)), ("sidecar-1w-trace1", sidecar(1, trace_ratio=1.0))]
        if a.only:
            keep = set(a.only.split(",")) | {"nginx"}
            targets = [t for t in targets if t[0] in keep]
        for peer in ("haproxy", "caddy"):  # a peer not installed: one line, and the rest runs
            if any(t[0] == peer for t in targets) and (why := missing(peer)):
                print(f"bench_proxy: {why}", file=sys.stderr)
                targets = [t for t in targets if t[0] != peer]
        rows = []
        for rnd, (name, factory) in ((i, t) for i in range(a.rounds) for t in targets):
            proc = None
            port = up_port
            if factory is not None:
                port = free_port()
                proc = factory(port)
            url = f"http://127.0.0.1:{port}/kv/bench"
            try:
                run_wrk(url, 1.0, a.connections, False, tmp)  # warm-up: connections, pools, JIT-less caches
                for post in (False, True):
                    owner = proc or procs[0]
                    p0 = group_cpu_by_pid(owner.p.pid)
                    r = run_wrk(url, a.seconds, a.connections, post, tmp)
                    p1 = group_cpu_by_pid(owner.p.pid)
                    deltas = {pid: p1[pid] - p0.get(pid, 0.0) for pid in p1}
                    busy = sorted((d for pid, d in deltas.items() if pid != owner.p.pid or len(deltas) == 1),
                                  reverse=True)
                    parent = deltas.get(owner.p.pid, 0.0) if len(deltas) > 1 else 0.0  # nginx master, supervisor
                    r.update(name=name, method="POST" if post else "GET", round=rnd,
                             cpu_us=sum(deltas.values()) * 1e6 / max(1, r["reqs"]), is_upstream=proc is None,
                             parent_us=parent * 1e6 / max(1, r["reqs"]),
                             second=busy[1] / max(1e-9, sum(busy)) if len(busy) > 1 else None,
                             split="/".join(f"{100 * d / max(1e-9, sum(busy)):.0f}%" for d in busy)
                             if len(busy) > 1 else "")
                    rows.append(r)
                    print(f"  {rnd + 1} {name:18s} {r['method']:4s} done: {r['rps']:.0f} req/s", file=sys.stderr, flush=True)
            finally:
                if proc is not None:
                    proc.stop()
        print_table(rows, a)
    finally:
        for p in procs:
            p.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
