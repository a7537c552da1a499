"""CPU per gRPC unary call through the sidecar, against nginx's ``grpc_pass``,
with the HTTP/1.1 figure beside it.

    python bench/bench_grpc.py [--requests 30000] [--connections 16] [--streams 10] [--seconds 5] [--rounds 1] [--skip-tls]
                               [--baseline DIR] [--only nginx,haproxy,bare-h2,sidecar,base]

One run, one machine: an nginx upstream answers gRPC-shaped unary calls on an
h2c port (HEADERS+DATA, then ``grpc-status: 0`` trailers) and HTTP/1.1 on
another. h2load drives POSTs with ``content-type: application/grpc`` and
``te: trailers`` (16 connections × 10 concurrent streams by default, a 64-byte
message) through, in turn, nginx ``grpc_pass``, HAProxy (``proto h2`` both sides) and
Caddy (``reverse_proxy h2c://``) from bench/peers/ (skipped with one line if not installed),
and the sidecar (node
``h2c://``, gated write: resolve, admit, stamp, in-flight, access log) on its compiled
HTTP/2 engine (libnghttp2 through ngh2) and, as ``sidecar-h2py``, on pure-Python h2
(``EPOCHGATE_PURE_PYTHON=proxy.h2``: the before/after of issue 30 in one run). h2load also
sends plain HTTP/2 GETs of the same h2c path (``h2 GET``). wrk
drives the same POST over HTTP/1.1 through nginx ``proxy_pass``, the peers and the
sidecar's HTTP/1.1 path (node ``http://``). Each cell: req/s and the proxy's
CPU time per request (utime+stime of its process group over requests done).
Ratios printed: sidecar/nginx per protocol, and the sidecar's h2 path against
its HTTP/1.1 path. Noisy on a shared machine: compare the ratios.

``bare-h2`` is the floor for any Python gRPC forwarder on this stack (``_bare_h2_forwarder.py``:
uvloop + libnghttp2 through ngh2, the sidecar's HTTP/2 library; one upstream h2c connection, streams
mapped 1:1, no gate, metrics or access log), and ``bare-h2c`` the same script compiled by Cython as it
stands (``_compiled_copy.py``: the interpreter's bytecode loop gone, as in the sidecar's compiled
build): their gRPC and h2 GET cells only; ``bare-h1`` / ``bare-h1c`` are bench_proxy's
``bare-forwarder`` (uvloop + httptools), as it stands and compiled: the HTTP/1.1 cell only.
``cng-h2`` is bare-h2 with libnghttp2 driven from C (``_cng_forwarder.pyx``: Cython calling its C API,
no Python object per frame or header; built here, needs Debian libnghttp2-dev); ``ch1`` is bare-h1
with llhttp driven from C (``_ch1_forwarder.pyx``: the HTTP/1.1 cell only). The
bare forwarders and the sidecar are printed over nginx and HAProxy per round (the rounds
interleave every target), and the sidecar over the floor; the table gives each cell's range over
rounds.

``--baseline DIR`` adds the sidecar of another source tree (e.g. a worktree of main built with
``setup.py build_ext --inplace``) as the ``base`` target, in the same interleaved rounds, and prints
this tree's sidecar against it per protocol; ``--only`` picks targets by name.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_proxy  # noqa: E402
from _compiled_copy import ch1_argv, compiled_argv  # noqa: E402
from _peers import caddy_proc, haproxy_proc, missing  # noqa: E402
from bench_proxy import ROOT, Proc, _median, free_port, nginx_conf, run_wrk  # noqa: E402


def make_cert(tmp: Path) -> tuple[str, str]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return str(cert), str(key)


def grpc_args(tmp: Path) -> list[str]:
    """h2load's arguments for one gRPC unary request: a 64-byte length-prefixed message, gRPC's headers."""
    data = tmp / "msg.bin"
    if not data.exists():
        data.write_bytes(b"\x00" + (59).to_bytes(4, "big") + b"m" * 59)  # one length-prefixed gRPC message
    return ["-d", str(data), "-H", "content-type: application/grpc", "-H", "te: trailers"]


def grpc_upstream(tmp: Path, nginx: str) -> Proc:
    """nginx answering gRPC-shaped unary calls on h2c (``.port``; HEADERS+DATA, then ``grpc-status: 0``
    trailers) and HTTP/1.1 on ``.h1``; access log off."""
    h2_port, h1_port = free_port(), free_port()
    conf = nginx_conf(tmp, "upstream", h2_port, f"""
  access_log off;
  server {{ listen 127.0.0.1:{h2_port} http2;
    location / {{ add_trailer grpc-status 0 always; add_trailer grpc-message "" always;
                 default_type application/grpc; return 200 "ok"; }} }}
  server {{ listen 127.0.0.1:{h1_port}; location / {{ return 200 "ok"; }} }}
""")
    p = Proc("upstream", [nginx, "-c", str(conf), "-p", str(tmp)], h2_port, tmp)
    p.h1 = h1_port  # type: ignore[attr-defined]
    return p


def nginx_grpc_proxy(tmp: Path, nginx: str, h2_port: int, h1_port: int, keepalive: int = 64,
                     workers: int = 1) -> Proc:
    """nginx ``grpc_pass`` on ``.port`` and ``proxy_pass`` (HTTP/1.1) on ``.h1``; access log on, buffered;
    ``keepalive`` idle upstream connections kept per upstream; ``workers`` share the listening sockets."""
    g, h = free_port(), free_port()
    name = "nginx-proxy" if workers == 1 else f"nginx-proxy-{workers}w"
    c = nginx_conf(tmp, name, g, f"""
  access_log {tmp}/{name}/access.log combined buffer=64k flush=1s;
  upstream h1 {{ server 127.0.0.1:{h1_port}; keepalive {keepalive}; }}
  upstream g {{ server 127.0.0.1:{h2_port}; keepalive {keepalive}; }}
  server {{ listen 127.0.0.1:{g} http2; location / {{ grpc_pass grpc://g; }} }}
  server {{ listen 127.0.0.1:{h}; location / {{ proxy_pass http://h1; proxy_http_version 1.1;
                                             proxy_set_header Connection ""; }} }}
""", workers=workers)
    p = Proc("nginx" if workers == 1 else f"nginx-{workers}w", [nginx, "-c", str(c), "-p", str(tmp)], g, tmp)
    p.h1 = h  # type: ignore[attr-defined]
    return p


def grpc_sidecar(tmp: Path, h2_port: int, h1_port: int, tls: bool = False, env: dict[str, str] | None = None,
                 name: str = "sidecar", workers: int = 1) -> Proc:
    """The sidecar, ``workers`` workers (default 1): partition ``t1`` on node ``h2c://`` (gRPC, ``.port``), ``t2`` on ``http://``
    (``.h1`` is the same listener); gating, metrics and the access log on (defaults)."""
    port = free_port()
    placement = tmp / "placement.toml"
    placement.write_text(f'[nodes]\ng = "h2c://127.0.0.1:{h2_port}"\nh = "http://127.0.0.1:{h1_port}"\n\n'
                         f'[partitions]\nt1 = "g"\nt2 = "h"\n')
    argv = [sys.executable, "-m", "sidecar", "--placement", str(placement), "--listen", f"127.0.0.1:{port}",
            "--admin", f"127.0.0.1:{free_port()}", "--control", f"127.0.0.1:{free_port()}",
            "--workers", str(workers)]
    if tls:
        cert, key = make_cert(tmp)
        argv += ["--tls-cert", cert, "--tls-key", key]
    p = Proc("sidecar-tls" if tls else name, argv, port, tmp,
             env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", **(env or {})})
    time.sleep(1.0 if workers > 1 else 0.3)  # all workers listening
    p.h1 = port  # type: ignore[attr-defined]
    return p


def sidecar_from(root: Path, tmp: Path, h2: int, h1: int, name: str, **kw) -> Proc:
    """``grpc_sidecar`` run from another source tree: its PYTHONPATH and cwd (``python -m`` puts
    the cwd first on sys.path) both come from the bench modules' ROOT, swapped for the call."""
    global ROOT
    saved = ROOT, bench_proxy.ROOT
    ROOT = bench_proxy.ROOT = root
    try:
        return grpc_sidecar(tmp, h2, h1, name=name, **kw)
    finally:
        ROOT, bench_proxy.ROOT = saved


def bare(tmp: Path, kind: str, up_port: int, compiled: bool = False) -> Proc | None:
    """A floor for a Python forwarder as a target: ``kind`` "h2" is ``_bare_h2_forwarder.py`` (uvloop + libnghttp2
    through ngh2, one upstream h2c connection, no gate) on ``.port``, ``.h1`` None; "h1" is bench_proxy's
    ``bare-forwarder`` (``_bare_forwarder.py``: uvloop + httptools) on ``.h1``, ``.port`` None. ``compiled``: the
    script compiled by Cython (``_compiled_copy.py``; None when it cannot be built)."""
    script = ROOT / "bench" / ("_bare_h2_forwarder.py" if kind == "h2" else "_bare_forwarder.py")
    name = f"bare-{kind}" + ("c" if compiled else "")
    argv = compiled_argv(script, tmp / name) if compiled else [sys.executable, str(script)]
    if argv is None:
        return None
    port = free_port()
    p = Proc(name, [*argv, str(port), str(up_port)], port, tmp)
    p.h1 = None if kind == "h2" else port  # type: ignore[attr-defined]
    if kind == "h1":
        p.port = None  # type: ignore[assignment]
    return p


def bare_h2(tmp: Path, h2_port: int, compiled: bool = False) -> Proc | None:
    return bare(tmp, "h2", h2_port, compiled)


def cng_h2(tmp: Path, h2_port: int) -> Proc | None:
    """``cng-h2``: ``_cng_forwarder.pyx``, bare-h2's forwarder with libnghttp2 driven from C (Cython, no Python
    object per frame or header; docs/figures-peers.md, stop 37). None when it cannot be built (libnghttp2's
    headers, Debian libnghttp2-dev, or a C compiler missing: said on stderr)."""
    argv = compiled_argv(ROOT / "bench" / "_cng_forwarder.pyx", tmp / "cng-h2")
    if argv is None:
        return None
    port = free_port()
    p = Proc("cng-h2", [*argv, str(port), str(h2_port)], port, tmp)
    p.h1 = None  # type: ignore[attr-defined]
    return p


def ch1(tmp: Path, h1_port: int) -> Proc | None:
    """``ch1``: ``_ch1_forwarder.pyx``, bare-h1's forwarder with llhttp driven from C (docs/figures-peers.md, stop 38),
    on ``.h1``; None when it cannot be built (said on stderr)."""
    argv = ch1_argv(tmp / "ch1")
    if argv is None:
        return None
    port = free_port()
    p = Proc("ch1", [*argv, str(port), str(h1_port)], port, tmp)
    p.h1 = port  # type: ignore[attr-defined]
    p.port = None  # type: ignore[assignment]
    return p


def group_sys_s(pgid: int) -> float:
    """stime (CPU in the kernel: the socket calls every forwarder makes) of a process group, in seconds."""
    total = 0
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:  # field 5: pgrp
                total += int(fields[12])  # field 15: stime
    return total / bench_proxy.TICK


def grpc_peer(start, tmp: Path, h2_port: int, h1_port: int) -> Proc:
    """HAProxy or Caddy (bench/_peers.py) with its gRPC frontend on ``.port`` and HTTP/1.1 on ``.h1``."""
    p = start(tmp, free_port(), h1_port, h2_port)
    p.h1, p.port = p.port, p.h2  # type: ignore[attr-defined]  # h2load drives .port
    return p


def run_h2load(url: str, n: int, conns: int, streams: int, tmp: Path, grpc: bool = True, h1: bool = False) -> dict:
    """gRPC unary POSTs (``grpc``), or plain HTTP/2 GETs of the same path (``h1``: HTTP/1.1 GETs, ``streams``
    pipelined per connection)."""
    body = grpc_args(tmp) if grpc else []
    out = subprocess.run(["h2load", *(["--h1"] if h1 else []), "-n", str(n), "-c", str(conns), "-m", str(streams), *body,
                          "-H", "x-partition-key: t1", url], capture_output=True, text=True, timeout=300).stdout
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
    if m is None:
        raise RuntimeError(f"h2load output not understood:\n{out}")
    rps = float(re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out).group(1))
    two = re.search(r"status codes: (\d+) 2xx", out)
    return {"reqs": int(m.group(3)), "rps": rps, "non2xx": int(m.group(3)) - (int(two.group(1)) if two else 0),
            "ok": int(m.group(4)), "failed": int(m.group(5))}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=30000, help="h2load requests per cell")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--streams", type=int, default=10, help="h2load concurrent streams per connection")
    ap.add_argument("--seconds", type=float, default=5, help="wrk duration per HTTP/1.1 cell")
    ap.add_argument("--handshakes", type=int, default=500, help="TLS connections (one call each)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run the targets this many times, interleaved; the table shows medians (default 1)")
    ap.add_argument("--skip-tls", action="store_true", help="leave out the sidecar's TLS cells")
    ap.add_argument("--baseline", type=Path, metavar="DIR",
                    help="also run the sidecar of this source tree (built in place) as target 'base'")
    ap.add_argument("--only", help="comma-separated targets to run (nginx, haproxy, caddy, bare-h2, bare-h2c, cng-h2, bare-h1, bare-h1c, ch1, sidecar, sidecar-h2py, base)")
    a = ap.parse_args()
    if a.baseline is not None and not (a.baseline / "sidecar" / "__main__.py").is_file():
        ap.error(f"--baseline: no sidecar/__main__.py under {a.baseline}")
    for tool in ("h2load", "wrk", "nginx"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            print(f"{tool} not installed", file=sys.stderr)
            return 2
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    procs: list[Proc] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        up = grpc_upstream(tmp, nginx)
        procs.append(up)
        h2_port, h1_port = up.port, up.h1  # type: ignore[attr-defined]
        rows = []
        try:
            def nginx_proxy() -> Proc:
                return nginx_grpc_proxy(tmp, nginx, h2_port, h1_port)

            def sidecar(tls: bool = False, env: dict[str, str] | None = None, name: str = "sidecar") -> Proc:
                return grpc_sidecar(tmp, h2_port, h1_port, tls, env, name)

            def peer(start):
                return lambda: grpc_peer(start, tmp, h2_port, h1_port)

            targets = [("nginx", nginx_proxy), ("haproxy", peer(haproxy_proc)), ("caddy", peer(caddy_proc)),
                       ("bare-h2", lambda: bare_h2(tmp, h2_port)),
                       ("bare-h2c", lambda: bare_h2(tmp, h2_port, compiled=True)),
                       ("cng-h2", lambda: cng_h2(tmp, h2_port)),
                       ("bare-h1", lambda: bare(tmp, "h1", h1_port)), ("bare-h1c", lambda: bare(tmp, "h1", h1_port, True)),
                       ("ch1", lambda: ch1(tmp, h1_port)),
                       ("sidecar", sidecar)]
            if importlib.util.find_spec("ngh2") is not None:  # the HTTP/2 engine's before/after in the same run
                targets.append(("sidecar-h2py", lambda: sidecar(env={"EPOCHGATE_PURE_PYTHON": "proxy.h2"},
                                                                name="sidecar-h2py")))
            else:
                print("bench_grpc: the sidecar runs HTTP/2 on pure-Python h2 (ngh2 not installed: "
                      "pip install 'epochgate[ngh2]')", file=sys.stderr)
            if importlib.util.find_spec("ngh2") is None:
                targets = [t for t in targets if not t[0].startswith("bare-h2")]
            if a.baseline is not None:
                base_root = a.baseline.resolve()
                targets.append(("base", lambda: sidecar_from(base_root, tmp, h2_port, h1_port, "base")))
            if a.only:
                targets = [t for t in targets if t[0] in a.only.split(",")]
            for name in ("haproxy", "caddy"):  # a peer not installed: one line, and the rest runs
                if why := missing(name):
                    print(f"bench_grpc: {why}", file=sys.stderr)
                    targets = [t for t in targets if t[0] != name]
            for rnd, (name, start) in ((i, t) for i in range(a.rounds) for t in targets):
                p = start()
                if p is None:  # (bare-h2c, cng-h2, ch1: Cython could not build it, said on stderr)
                    continue
                procs.append(p)
                if p.port is not None:  # (None: bare-h1, an HTTP/1.1 forwarder only)
                    run_h2load(f"http://127.0.0.1:{p.port}/kv.v1.Store/Put", 2000, a.connections, a.streams, tmp)  # warm
                    c0, k0 = p.cpu(), group_sys_s(p.p.pid)
                    r = run_h2load(f"http://127.0.0.1:{p.port}/kv.v1.Store/Put", a.requests, a.connections, a.streams,
                                   tmp)
                    r.update(name=name, proto="h2 (gRPC unary)", cpu_us=(p.cpu() - c0) / max(r["reqs"], 1) * 1e6,
                             sys_us=(group_sys_s(p.p.pid) - k0) / max(r["reqs"], 1) * 1e6)
                    rows.append(r)
                    print(f"  {rnd + 1} {name:8s} gRPC {r['rps']:.0f} req/s {r['cpu_us']:.1f} µs", file=sys.stderr,
                          flush=True)
                    c0 = p.cpu()
                    r = run_h2load(f"http://127.0.0.1:{p.port}/kv/k", a.requests, a.connections, a.streams, tmp,
                                   grpc=False)
                    r.update(name=name, proto="h2 GET", cpu_us=(p.cpu() - c0) / max(r["reqs"], 1) * 1e6)
                    rows.append(r)
                if p.h1 is None:  # (None: bare-h2, an h2c forwarder only)
                    p.stop()
                    procs.remove(p)
                    continue
                (tmp / "post.lua").write_text('wrk.method = "POST"\nwrk.body = string.rep("m", 64)\n'
                                              'wrk.headers["X-Partition-Key"] = "t2"\n')
                h1url = f"http://127.0.0.1:{p.h1}/kv.v1.Store/Put"  # type: ignore[attr-defined]
                c0 = p.cpu()
                r = run_wrk(h1url, a.seconds, a.connections * 2, True, tmp)
                r.update(name=name, proto="HTTP/1.1 POST", cpu_us=(p.cpu() - c0) / max(r["reqs"], 1) * 1e6)
                rows.append(r)
                p.stop()
                procs.remove(p)
            # TLS on the listener (ALPN h2): per request on kept connections, and one handshake per call
            rows = median_rows(rows)
            if a.skip_tls:
                return report(rows)
            p = sidecar(tls=True)
            procs.append(p)
            url = f"https://127.0.0.1:{p.port}/kv.v1.Store/Put"
            run_h2load(url, 2000, a.connections, a.streams, tmp)
            c0 = p.cpu()
            r = run_h2load(url, a.requests, a.connections, a.streams, tmp)
            r.update(name="sidecar", proto="h2 over TLS", cpu_us=(p.cpu() - c0) / max(r["reqs"], 1) * 1e6)
            rows.append(r)
            c0 = p.cpu()
            r = run_h2load(url, a.handshakes, a.handshakes, 1, tmp)  # one call per connection
            r.update(name="sidecar", proto="TLS conn per call", cpu_us=(p.cpu() - c0) / max(r["reqs"], 1) * 1e6)
            rows.append(r)
            p.stop()
            procs.remove(p)
        finally:
            for p in procs:
                p.stop()
    return report(rows)


def median_rows(rows: list[dict]) -> list[dict]:
    """One row per target and protocol: the median of its rounds (req/s and CPU alike)."""
    cells: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        cells.setdefault((r["name"], r["proto"]), []).append(r)
    return [dict(rs[0], rps=_median([r["rps"] for r in rs]), cpu_us=_median([r["cpu_us"] for r in rs]),
                 cpu_rounds=[r["cpu_us"] for r in rs], sys_us=_median([r.get("sys_us", 0.0) for r in rs]), failed=sum(r.get("failed", 0) for r in rs),
                 non2xx=sum(r["non2xx"] for r in rs), rounds=len(rs)) for rs in cells.values()]


def round_ratios(rows: list[dict], name: str, base: str, proto: str) -> list[float]:
    """``name``'s CPU per request over ``base``'s, within each round (rows from ``median_rows``;
    rounds interleave every target, so the i-th figures of two targets share the machine's state)."""
    cell = {r["name"]: r["cpu_rounds"] for r in rows if r["proto"] == proto}
    if name not in cell or base not in cell:
        return []
    return [x / y for x, y in zip(cell[name], cell[base]) if y > 0]


def report(rows: list[dict]) -> int:
    print(f"{len(rows) and rows[0].get('rounds', 1)} interleaved round(s), medians; {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    base = {r["proto"]: r["cpu_us"] for r in rows if r["name"] == "nginx"}
    print(f"{'proxy':10s} {'protocol':18s} {'req/s':>9s} {'CPU µs/req':>11s} {'rounds min-max':>15s} {'x nginx':>8s} "
          f"{'non-2xx':>8s} {'failed':>7s}  (gRPC: of which in the kernel)")
    for r in rows:
        ratio = f"{r['cpu_us'] / base[r['proto']]:8.2f}" if r["proto"] in base else f"{'-':>8s}"
        rng = f"{min(r['cpu_rounds']):.1f}-{max(r['cpu_rounds']):.1f}" if "cpu_rounds" in r else "-"
        print(f"{r['name']:10s} {r['proto']:18s} {r['rps']:9.0f} {r['cpu_us']:11.1f} {rng:>15s} {ratio} "
              f"{r['non2xx']:8d} {r.get('failed', 0):7d}" + (f"  {r['sys_us']:.1f}" if r.get("sys_us") else ""))
    g = "h2 (gRPC unary)"
    for proto, names in ((g, ("bare-h2", "bare-h2c", "cng-h2", "sidecar")), ("HTTP/1.1 POST", ("bare-h1", "bare-h1c", "ch1", "sidecar"))):
        for name in names:
            for peer in ("nginx", "haproxy"):
                if xs := round_ratios(rows, name, peer, proto):
                    print(f"{name} / {peer}, {proto} CPU per request, per round: {' '.join(f'{x:.2f}' for x in xs)} "
                          f"(median {_median(xs):.2f}x)")
    if xs := round_ratios(rows, "cng-h2", "bare-h2", g):
        print(f"cng-h2 / bare-h2 (libnghttp2 driven from C, over through ngh2), {g}, per round: "
              f"{' '.join(f'{x:.2f}' for x in xs)} (median {_median(xs):.2f}x)")
    for floor in ("bare-h2", "bare-h2c"):
        if xs := round_ratios(rows, "sidecar", floor, g):
            print(f"sidecar / {floor} (the gate's own cost over the floor), {g}, per round: "
                  f"{' '.join(f'{x:.2f}' for x in xs)} (median {_median(xs):.2f}x)")
    sc = {r["proto"]: r["cpu_us"] for r in rows if r["name"] == "sidecar"}
    py = {r["proto"]: r["cpu_us"] for r in rows if r["name"] == "sidecar-h2py"}
    for proto in py:
        print(f"sidecar on libnghttp2 / on pure h2, {proto}: {sc[proto] / py[proto]:.2f}x")
    bl = {r["proto"]: r["cpu_us"] for r in rows if r["name"] == "base"}
    for proto in bl:
        if proto in sc:
            print(f"sidecar / base (--baseline), {proto}: {sc[proto] / bl[proto]:.3f}x")
    ng = base
    if not sc or not ng:
        return 0
    print(f"\nsidecar h2 / sidecar HTTP/1.1 CPU per request: {sc['h2 (gRPC unary)'] / sc['HTTP/1.1 POST']:.2f}x "
          f"(nginx: {ng['h2 (gRPC unary)'] / ng['HTTP/1.1 POST']:.2f}x)")
    if "TLS conn per call" not in sc:
        return 0
    print(f"TLS on the listener: +{sc['h2 over TLS'] - sc['h2 (gRPC unary)']:.1f} µs per call on kept connections "
          f"({sc['h2 over TLS'] / sc['h2 (gRPC unary)']:.2f}x); a connection per call costs "
          f"{sc['TLS conn per call']:.0f} µs (handshake + connection set-up + one call)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
