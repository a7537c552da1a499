"""Server-streaming gRPC messages per CPU-second through the sidecar, beside nginx, HAProxy and Caddy.

    python bench/bench_grpc_stream.py [--calls 200] [--messages 1000] [--size 64] [--rounds 3] [--connections 4] [--streams 2] [--no-bare]

One run, one machine (issue 30): a grpcio server (``_grpc_stream_server.py``) answers each call to
``/bench.Stream/Many`` with ``--messages`` messages of ``--size`` bytes, each message in its own DATA
frame (grpcio's framing). h2load sends the calls (the 64-byte request of bench_grpc.py,
``--connections`` x ``--streams`` calls in flight) directly and through, in turn: nginx
``grpc_pass`` (access log on, buffered; keep-alive 64), HAProxy (``proto h2`` both sides) and Caddy
(``reverse_proxy h2c://``) from bench/peers/ (one thread each, access log on; skipped with one line
if not installed), and the sidecar with 1 worker on its compiled HTTP/2 engine (node ``h2c://``,
partition ``t1``: every call is resolved, admitted as a gated write, stamped and logged);
``--h2py`` adds the sidecar on pure-Python h2; ``bare-h2`` (``--no-bare`` leaves it out) is
bench_grpc's floor for any Python gRPC forwarder. Targets are interleaved over ``--rounds`` rounds.

Per cell: the proxy's CPU (utime+stime of its process group) over the messages delivered (calls
done x messages per call), as µs per message and messages per CPU-second; the messages per second
delivered (bounded by the Python upstream, the same for every target: this is not a saturation
figure); the upstream's own CPU per message. Before the rounds, one call through each target is
read frame by frame with ``nghttp -nv``: the DATA frames and bytes the client received (a proxy
that coalesces frames does less work per message, so this is printed beside the cost) and the
``grpc-status`` trailer — a target that loses messages or the trailer is reported, not counted.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peers import binary, caddy_proc, haproxy_proc, missing, stop_targets, tools_missing  # noqa: E402
from bench_grpc import bare_h2, grpc_args, grpc_peer, grpc_sidecar, nginx_grpc_proxy, run_h2load  # noqa: E402
from bench_proxy import ROOT, Proc, _median, free_port  # noqa: E402

PATH = "/bench.Stream/Many"


def one_call(url: str, tmp: Path) -> dict:
    """One call read frame by frame (nghttp -nv): DATA frames, DATA bytes, the grpc-status trailer."""
    out = subprocess.run(["nghttp", "-nv", *grpc_args(tmp), "-H", "x-partition-key: t1", url], capture_output=True, text=True, timeout=60).stdout
    lengths = [int(x) for x in re.findall(r"recv DATA frame <length=(\d+)", out)]
    status = re.findall(r"recv \(stream_id=\d+\) grpc-status: (\S+)", out)
    return {"frames": len(lengths), "bytes": sum(lengths), "grpc_status": status[-1] if status else "none"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=200, help="calls per cell (default 200)")
    ap.add_argument("--messages", type=int, default=1000, help="messages per call (default 1000)")
    ap.add_argument("--size", type=int, default=64, help="bytes per message (default 64)")
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--streams", type=int, default=2, help="calls in flight per connection (default 2)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the table shows medians (default 3)")
    ap.add_argument("--no-bare", dest="bare", action="store_false",
                    help="leave out bare-h2, the floor for a Python gRPC forwarder (bench/_bare_h2_forwarder.py)")
    ap.add_argument("--h2py", action="store_true", help="also the sidecar on pure-Python h2")
    a = ap.parse_args()
    if min(a.calls, a.messages, a.size, a.connections, a.streams, a.rounds) < 1:
        ap.error("every count must be ≥ 1")
    if tools_missing("bench_grpc_stream", "h2load", "nghttp", "nginx"):
        return 2
    nginx = binary("nginx")
    tmp = Path(tempfile.mkdtemp(prefix="bench-grpc-stream-"))
    procs: dict[str, Proc | None] = {}
    upstream = None
    try:
        up = free_port()
        upstream = Proc("grpc-stream-upstream", [sys.executable, str(ROOT / "bench" / "_grpc_stream_server.py"),
                                                 str(up), str(a.messages), str(a.size)], up, tmp)
        h1 = free_port()  # no HTTP/1.1 upstream: the targets' HTTP/1.1 sides are not used here
        procs["direct"] = None
        procs["nginx"] = nginx_grpc_proxy(tmp, nginx, up, h1)
        for peer, start in (("haproxy", haproxy_proc), ("caddy", caddy_proc)):
            if why := missing(peer):
                print(f"bench_grpc_stream: {why}", file=sys.stderr)
            else:
                procs[peer] = grpc_peer(start, tmp, up, h1)
        if a.bare and importlib.util.find_spec("ngh2") is not None:
            procs["bare-h2"] = bare_h2(tmp, up)
        procs["sidecar"] = grpc_sidecar(tmp, up, h1)
        if a.h2py:
            procs["sidecar-h2py"] = grpc_sidecar(tmp, up, h1, env={"EPOCHGATE_PURE_PYTHON": "proxy.h2"},
                                                 name="sidecar-h2py")

        def url(name: str) -> str:
            p = procs[name]
            return f"http://127.0.0.1:{p.port if p else up}{PATH}"

        grpc_args(tmp)  # writes msg.bin
        shape = {name: one_call(url(name), tmp) for name in procs}
        for name in procs:  # warm-up: connections, pools
            run_h2load(url(name), max(4, a.calls // 10), a.connections, a.streams, tmp)
        rows: dict[str, list[dict]] = {}
        for rnd in range(a.rounds):
            for name, proc in procs.items():
                c0 = proc.cpu() if proc else 0.0
                u0 = upstream.cpu()
                t0 = os.times().elapsed
                r = run_h2load(url(name), a.calls, a.connections, a.streams, tmp)
                wall = os.times().elapsed - t0
                msgs = r["ok"] * a.messages  # calls h2load saw end well (a reset stream is "failed")
                r.update(cpu_us=(proc.cpu() - c0) * 1e6 / max(msgs, 1) if proc else float("nan"),
                         up_us=(upstream.cpu() - u0) * 1e6 / max(msgs, 1), mps=msgs / max(wall, 1e-9), msgs=msgs)
                rows.setdefault(name, []).append(r)
                print(f"  {rnd + 1} {name:12s} {r['mps']:.0f} msg/s, proxy {r['cpu_us']:.2f} µs/msg, "
                      f"upstream {r['up_us']:.2f} µs/msg", file=sys.stderr, flush=True)
        report(a, rows, shape)
    except (RuntimeError, TimeoutError, subprocess.TimeoutExpired, AttributeError) as exc:
        print(f"bench_grpc_stream: {type(exc).__name__}: {exc} (logs were in {tmp})", file=sys.stderr)
        return 1
    finally:
        stop_targets(procs, upstream, tmp)
    return 0


def report(a, rows: dict[str, list[dict]], shape: dict[str, dict]) -> None:
    want = a.messages * (5 + a.size)
    print(f"\nserver streaming: {a.messages} messages x {a.size} B per call, {a.calls} calls per cell, h2load "
          f"-c{a.connections} -m{a.streams}; medians of {a.rounds} interleaved rounds (range); {os.cpu_count()} CPUs, "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"{'target':12s} {'µs CPU/msg':>20s} {'x nginx':>16s} {'msgs/CPU-s':>10s} {'msgs/s':>8s} "
          f"{'upstream µs/msg':>15s} {'DATA frames/call':>16s} {'bytes/call':>10s} {'grpc-status':>11s} {'non-2xx':>7s} {'failed':>6s}")
    nginx = rows.get("nginx")
    for name, rs in rows.items():
        cpu = [r["cpu_us"] for r in rs]
        s = shape[name]
        if name == "direct":
            cell, x, per_s = "-", "-", "-"
        else:
            cell = f"{_median(cpu):.2f} ({min(cpu):.2f}-{max(cpu):.2f})"
            xs = [r["cpu_us"] / n["cpu_us"] for r, n in zip(rs, nginx)] if nginx else []
            x = f"{_median(xs):.2f} ({min(xs):.2f}-{max(xs):.2f})" if xs else "-"
            per_s = f"{1e6 / _median(cpu):.0f}"
        ok = "" if s["bytes"] == want and s["grpc_status"] == "0" else f"  MISMATCH: expected {want} bytes, status 0"
        print(f"{name:12s} {cell:>20s} {x:>16s} {per_s:>10s} {_median([r['mps'] for r in rs]):8.0f} "
              f"{_median([r['up_us'] for r in rs]):15.2f} {s['frames']:16d} {s['bytes']:10d} {s['grpc_status']:>11s} "
              f"{sum(r['non2xx'] for r in rs):7d} {sum(r['failed'] for r in rs):6d}{ok}")
    print("µs CPU/msg: the proxy's CPU over messages delivered (direct: no proxy). x nginx: per round, against nginx "
          "in the same round. msgs/s: bounded by the grpcio upstream (not a saturation figure). DATA frames/call and "
          "bytes/call: one call read with nghttp -nv. failed: calls h2load counted failed (a stream reset, say).")


if __name__ == "__main__":
    sys.exit(main())
