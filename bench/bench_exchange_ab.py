"""The data path's own CPU per request, without sockets: this checkout against another.

    python bench/bench_exchange_ab.py [--baseline DIR] [--rounds 8] [--requests 20000]
    python bench/bench_exchange_ab.py --baseline pure   # this checkout: compiled vs plain Python
    python bench/bench_exchange_ab.py --baseline DIR --hash-slots 8   # keys routed to hash slots

Drives keep-alive GETs and 1 KiB PUTs (gated writes) through the sidecar's
exchange over the fake transports of ``tests/_fake_transport.py`` (same
parsers, router, gate, pool and stats as in production; no syscalls, no wrk,
no other process), so what it measures is the Python cost of one request in
the data path — the part a refactor of the exchange can change — with far less
noise than ``bench_proxy.py`` on a shared machine. With ``--baseline DIR``
(another checkout, e.g. ``git archive <commit> | tar -x -C DIR``) each round
runs a fresh process per tree, alternating, and prints the median CPU-µs per
request of each and the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "tests" / "_fake_transport.py"


def measure(n: int, hash_slots: int = 0) -> dict[str, float]:
    """In this process (``sys.path`` already points at the tree under test)."""
    import gate

    if not hasattr(gate, "InflightTracker"):     # trees from before the tracker moved into gate
        from sidecar._inflight import InflightTracker
        gate.InflightTracker = InflightTracker
    spec = importlib.util.spec_from_file_location("_fake_transport", HARNESS)
    fake = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fake)

    async def run() -> dict[str, float]:
        if hash_slots:   # partition = the key's hash slot (--hash-slots): the per-slot count runs
            h = fake.Harness(gate.PlacementTable({f"slot-{i}": "a" for i in range(hash_slots)}), hash_slots=hash_slots)
        else:
            h = fake.Harness(gate.PlacementTable({"t1": "a"}))
        c = h.client()
        out = {}
        for method, body in (("GET", b""), ("PUT", b"x" * 1024)):
            req, resp = fake.request(method, body=body), fake.response(200, b"y" * 1024)
            c.send(req)
            await fake.settle()
            up = h.pool.opened[0]
            up.reply(resp)
            t0 = time.process_time()
            for _ in range(n):
                c.send(req)
                up.reply(resp)
            out[method] = (time.process_time() - t0) / n * 1e6
            assert c.take().count(b"HTTP/1.1 200 ") == n + 1, "a request did not complete"
            up.take()
        h.close()
        return out

    try:
        import uvloop
        return uvloop.run(run())
    except ImportError:
        return asyncio.run(run())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", type=Path,
                    help="another checkout to compare against, or 'pure': this one as plain Python")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--hash-slots", type=int, default=0, metavar="N", help="route keys to N hash slots")
    ap.add_argument("--tree", type=Path, help=argparse.SUPPRESS)   # child mode: measure this tree
    a = ap.parse_args()
    if a.tree is not None:
        sys.path.insert(0, str(a.tree))
        r = measure(a.requests, a.hash_slots)
        import sidecar._build as build

        print(f"{r['GET']:.4f} {r['PUT']:.4f} {build.describe().split(' ', 1)[0]}")
        return 0
    trees = {"candidate": ROOT}
    pure_base = str(a.baseline) == "pure"
    if pure_base:
        a.baseline = ROOT
    if a.baseline is not None:
        if not any((a.baseline / "sidecar" / f).is_file() for f in ("_exchange.py", "proxy/exchange.py")):
            print(f"bench_exchange_ab: --baseline {a.baseline}: not a checkout", file=sys.stderr)
            return 2
        trees = {"baseline": a.baseline.resolve(), "candidate": ROOT}
    res: dict[str, list[tuple[float, float]]] = {k: [] for k in trees}
    for rnd in range(a.rounds):
        for name, tree in (list(trees.items()) if rnd % 2 == 0 else list(trees.items())[::-1]):
            env = dict(os.environ)
            if pure_base:  # the same tree twice: the baseline with its compiled modules ignored
                env.pop("EPOCHGATE_PURE_PYTHON", None)
                if name == "baseline":
                    env["EPOCHGATE_PURE_PYTHON"] = "1"
            out = subprocess.run([sys.executable, __file__, "--tree", str(tree), "--requests", str(a.requests),
                                  "--hash-slots", str(a.hash_slots)],
                                 cwd=tree, capture_output=True, text=True, check=True, env=env).stdout.split()
            res[name].append((float(out[0]), float(out[1])))
            print(f"round {rnd + 1} {name:9s} GET {out[0]} µs  PUT {out[1]} µs  ({out[2]})", flush=True)
    print(f"\nCPU-µs per request in the exchange (fake transports), median of {a.rounds} rounds of "
          f"{a.requests} requests")
    for i, method in enumerate(("GET", "PUT")):
        line = f"{method:4s} " + "  ".join(f"{k} {statistics.median(x[i] for x in v):.2f}" for k, v in res.items())
        if "baseline" in res:
            paired = statistics.median(c[i] / b[i] for c, b in zip(res["candidate"], res["baseline"]))
            spread = max(x[i] for x in res["baseline"]) / min(x[i] for x in res["baseline"])
            line += f"  median per-round ratio {paired:.3f} (baseline max/min {spread:.2f})"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
