"""The sidecar's CPU per request, this checkout against another, in one run.

    python bench/bench_proxy_ab.py --baseline DIR [--rounds 3] [--seconds 5] [--connections 32]
    python bench/bench_proxy_ab.py --baseline pure      # this checkout compiled vs as plain Python
    python bench/bench_proxy_ab.py --baseline DIR --nginx   # and nginx in each round: x nginx per tree

``DIR`` is another checkout of the project (e.g. ``git archive <commit> | tar -x
-C DIR``). One nginx upstream answering 1 KiB; the 1-worker sidecar of each tree
(gating, metrics and access log on; POST is a gated write) is started in turn,
``--rounds`` times, alternating which tree goes first so drift on a shared
machine hits both alike, and wrk measures GET and POST. Prints each round, the
median CPU-µs per request of each tree, and the median of the per-round
candidate/baseline ratios (each pair measured back to back): a refactor that
claims "no slower" shows a ratio within the spread of the rounds. ``--nginx`` also
runs nginx as a reverse proxy (``bench_proxy.nginx_proxy``: keep-alive upstream pool,
buffered access log) in every round, and prints each tree's median per-round ratio to it:
before and after, against nginx, in the same run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import subprocess  # noqa: E402

from bench_proxy import (ROOT, Proc, free_port, group_cpu_by_pid, nginx_proxy, nginx_upstream, run_wrk,  # noqa: E402
                         wait_port)


class TreeProc(Proc):
    """A ``Proc`` run from ``tree``: ``python -m sidecar`` imports from its working
    directory first, so the tree is both the cwd and PYTHONPATH."""

    def __init__(self, name: str, argv: list[str], port: int, tmp: Path, tree: Path, pure: bool = False) -> None:
        self.name, self.port = name, port
        self.log = open(tmp / f"{name}.log", "w")
        self.p = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
                                  cwd=tree, env=self._env(tree, pure))
        wait_port(port)

    @staticmethod
    def _env(tree: Path, pure: bool) -> dict[str, str]:
        env = dict(os.environ, PYTHONPATH=str(tree))
        env.pop("EPOCHGATE_PURE_PYTHON", None)
        if pure:  # the same checkout, its compiled modules ignored (sidecar/_build.py)
            env["EPOCHGATE_PURE_PYTHON"] = "1"
        return env


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", required=True, type=Path,
                    help="another checkout of the project, or 'pure': this one as plain Python")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--nginx", action="store_true", help="measure nginx as a reverse proxy in each round too")
    a = ap.parse_args()
    pure_base = str(a.baseline) == "pure"
    if pure_base:
        a.baseline = ROOT
    if not (a.baseline / "sidecar" / "__main__.py").is_file():
        print(f"bench_proxy_ab: --baseline {a.baseline}: not a checkout (no sidecar/__main__.py)", file=sys.stderr)
        return 2
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not shutil.which("wrk") or not Path(nginx).exists():
        print("bench_proxy_ab: needs wrk and nginx", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="bench-proxy-ab-"))
    up = None
    try:
        up = nginx_upstream(tmp, nginx)
        up_port = up.port
        placement = tmp / "placement.toml"
        placement.write_text(f'[nodes]\na = "http://127.0.0.1:{up_port}"\n\n[partitions]\nt1 = "a"\n')
        trees: dict[str, Path | None] = {"baseline": a.baseline.resolve(), "candidate": ROOT}
        if a.nginx:
            trees["nginx"] = None
        cpu: dict[tuple[str, str], list[float]] = {}
        for rnd in range(a.rounds):
            order = list(trees.items()) if rnd % 2 == 0 else list(trees.items())[::-1]  # cancel drift
            for name, tree in order:
                port = free_port()
                argv = [sys.executable, "-m", "sidecar", "--placement", str(placement), "--listen",
                        f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{free_port()}", "--control",
                        f"127.0.0.1:{free_port()}"]
                proc = (nginx_proxy(tmp, nginx, port, up_port) if tree is None else
                        TreeProc(f"{name}-{rnd}", argv, port, tmp, tree, pure=pure_base and name == "baseline"))
                try:
                    time.sleep(0.3)
                    url = f"http://127.0.0.1:{port}/kv/bench"
                    run_wrk(url, 1.0, a.connections, False, tmp)   # warm-up
                    for post in (False, True):
                        p0 = group_cpu_by_pid(proc.p.pid)
                        r = run_wrk(url, a.seconds, a.connections, post, tmp)
                        p1 = group_cpu_by_pid(proc.p.pid)
                        us = sum(p1[pid] - p0.get(pid, 0.0) for pid in p1) * 1e6 / max(1, r["reqs"])
                        method = "POST" if post else "GET"
                        cpu.setdefault((name, method), []).append(us)
                        print(f"round {rnd + 1} {name:9s} {method:4s} {r['rps']:8.0f} req/s {us:6.1f} CPU-µs/req "
                              f"non-2xx {r['non2xx']}", flush=True)
                finally:
                    proc.stop()
        print(f"\nmedian of {a.rounds} rounds, wrk -t1 -c{a.connections} -d{a.seconds:g}s, 1 KiB bodies")
        for method in ("GET", "POST"):
            b = statistics.median(cpu[("baseline", method)])
            c = statistics.median(cpu[("candidate", method)])
            spread = max(cpu[("baseline", method)]) / min(cpu[("baseline", method)])
            paired = statistics.median(x / y for x, y in zip(cpu[("candidate", method)], cpu[("baseline", method)]))
            print(f"{method:4s} baseline {b:6.1f} µs  candidate {c:6.1f} µs  ratio of medians {c / b:.3f}  "
                  f"median of per-round ratios {paired:.3f}  (baseline max/min across rounds {spread:.2f})")
            if a.nginx:
                n = cpu[("nginx", method)]
                print(f"{method:4s} nginx {statistics.median(n):6.1f} µs;  x nginx (median of per-round ratios): "
                      + "  ".join(f"{t} {statistics.median(x / y for x, y in zip(cpu[(t, method)], n)):.2f}"
                                  for t in ("baseline", "candidate")))
    finally:
        if up is not None:
            up.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
