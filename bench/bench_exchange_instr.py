"""Instructions per request in the data path, counted (valgrind): this checkout against another.

    python bench/bench_exchange_instr.py [--baseline DIR] [--requests 1000]
    python bench/bench_exchange_instr.py --baseline pure    # this checkout: compiled vs plain Python
    python bench/bench_exchange_instr.py --pure             # every tree as plain Python
    python bench/bench_exchange_instr.py --response nginx   # the upstream answers with nginx's head
    python bench/bench_exchange_instr.py --access           # with the access log on (to /dev/null)

The socket-free harness of ``bench_exchange_ab.py`` (keep-alive GETs and 1 KiB PUTs, gated
writes, through the real parsers, router, gate, pool and stats over ``tests/_fake_transport.py``)
runs under ``valgrind --tool=cachegrind --cache-sim=no`` at N and 3N requests; (I(3N) − I(N)) / 2N
is what one request adds, start-up cancelled. Unlike CPU time, an instruction count does not
move with the load of a shared machine (the CPU-time benches here vary ±20% between identical
runs), so a 1% change shows; it weighs a cache miss like an add, so it measures the Python
work a change removes, not the time. Which function the instructions are in: run the child
under ``valgrind --tool=callgrind`` at N and 3N and subtract (``callgrind_annotate --inclusive=yes``).

Needs valgrind (Debian ``valgrind``). A compiled tree must be built in place
(``python3 setup.py build_ext --inplace``); the child prints which build ran.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


#: the upstream answer's extra fields: ``nginx`` is what bench_proxy.py's nginx upstream sends
#: (``return 200``: Server, Date, Content-Type, Content-Length, Connection)
HEADS = {"harness": "", "nginx": "Server: nginx/1.22.1\r\nDate: Sat, 05 Dec 2026 20:30:00 GMT\r\nConnection: keep-alive\r\n"}


def child(tree: Path, method: str, n: int, head: str = "harness") -> None:
    """Drive ``n`` keep-alive requests of ``method`` through ``tree``'s exchange (this process)."""
    sys.path.insert(0, str(tree))
    import gate

    spec = importlib.util.spec_from_file_location("_fake_transport", tree / "tests" / "_fake_transport.py")
    fake = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fake)

    async def run() -> None:
        h = fake.Harness(gate.PlacementTable({"t1": "a"}))
        if os.environ.get("BENCH_EXCHANGE_ACCESS"):  # --access: a line per request, as the sidecar writes them
            from sidecar._log import AccessLog

            h.ctx.access = AccessLog(stream=open(os.devnull, "w"))  # noqa: SIM115 (the child's lifetime)
            h.ctx.access.stamp()
        c = h.client()
        req = fake.request(method, body=b"x" * 1024 if method == "PUT" else b"")
        resp = fake.response(200, b"y" * 1024, extra=HEADS[head])
        c.send(req)
        await fake.settle()
        up = h.pool.opened[0]
        up.reply(resp)
        for _ in range(n):
            c.send(req)
            up.reply(resp)
        assert c.take().count(b"HTTP/1.1 200 ") == n + 1, "a request did not complete"
        h.close()

    try:
        import uvloop
        uvloop.run(run())
    except ImportError:
        asyncio.run(run())
    import sidecar._build as build

    print(build.describe().split(" ", 1)[0], file=sys.stderr)


def count(tree: Path, method: str, n: int, pure: bool, head: str = "harness") -> tuple[int, str]:
    env = dict(os.environ)
    env.pop("EPOCHGATE_PURE_PYTHON", None)
    if pure:
        env["EPOCHGATE_PURE_PYTHON"] = "1"
    r = subprocess.run(["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
                        sys.executable, __file__, "--child", str(tree), method, str(n), head],
                       capture_output=True, text=True, cwd=tree, env=env, timeout=1800)
    m = re.search(r"I\s+refs:\s+([\d,]+)", r.stderr)
    if r.returncode or m is None:
        raise SystemExit(f"bench_exchange_instr: {tree} {method} failed:\n{r.stderr[-2000:]}")
    build = next((ln for ln in r.stderr.splitlines() if ln in ("compiled", "pure", "mixed")), "?")
    return int(m.group(1).replace(",", "")), build


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", type=Path, help="another checkout, or 'pure': this one as plain Python")
    ap.add_argument("--requests", type=int, default=1000, help="N (the runs do N and 3N)")
    ap.add_argument("--pure", action="store_true", help="run every tree as plain Python")
    ap.add_argument("--response", choices=sorted(HEADS), default="harness",
                    help="the upstream's response head: the harness's (2 fields) or nginx's (5, as bench_proxy.py)")
    ap.add_argument("--access", action="store_true",
                    help="access log on (the harness has it off): each request also formats and queues its line")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.access:
        os.environ["BENCH_EXCHANGE_ACCESS"] = "1"  # (the children inherit it)
    if a.child:
        child(Path(a.child[0]), a.child[1], int(a.child[2]), a.child[3])
        return 0
    if not shutil.which("valgrind"):
        print("bench_exchange_instr: needs valgrind (apt-get install valgrind)", file=sys.stderr)
        return 2
    runs: list[tuple[str, Path, bool]] = [("candidate", ROOT, a.pure)]
    if str(a.baseline) == "pure":
        runs.insert(0, ("baseline", ROOT, True))
    elif a.baseline is not None:
        runs.insert(0, ("baseline", a.baseline.resolve(), a.pure))
    res: dict[tuple[str, str], float] = {}
    for method in ("GET", "PUT"):
        for name, tree, pure in runs:
            lo, build = count(tree, method, a.requests, pure, a.response)
            hi, _ = count(tree, method, 3 * a.requests, pure, a.response)
            res[(name, method)] = per = (hi - lo) / (2 * a.requests)
            print(f"{name:9s} {method:4s} {per:9.0f} instructions/request  ({build}, {tree})", flush=True)
    if len(runs) == 2:
        for method in ("GET", "PUT"):
            print(f"{method:4s} candidate / baseline {res[('candidate', method)] / res[('baseline', method)]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
