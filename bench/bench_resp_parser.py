"""The upstream response parse, compiled parser against httptools (issue 30), counted and timed.

    python bench/bench_resp_parser.py [--n 20000] [--no-valgrind]

Feeds one response per read to the real ``UpstreamConn`` of this checkout (build it in place
first: ``python3 setup.py build_ext --inplace``) with each parser in turn — ``httptools`` (the
pure fallback) and ``llresp`` (llhttp driven from C) — and an exchange stub that takes the
head, body and end. Two responses: nginx's for a 1 KiB static file (eight header fields: what
``bench_proxy.py``'s upstream sends) and the socket-free harness's (two). Prints CPU µs per
response (median of 5 rounds; moves with the machine's load) and, with valgrind, instructions
per response ((I(3N) − I(N)) / 2N: load-independent).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NGINX = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 05 Dec 2026 20:30:00 GMT\r\n"
         b"Content-Type: application/octet-stream\r\nContent-Length: 1024\r\nLast-Modified: Sat, 05 Dec 2026 19:00:00 GMT\r\n"
         b"Connection: keep-alive\r\nETag: \"6751f0b0-400\"\r\nAccept-Ranges: bytes\r\n\r\n" + b"y" * 1024)
HARNESS = b"HTTP/1.1 200 X\r\nContent-Type: text/plain\r\nContent-Length: 1024\r\n\r\n" + b"y" * 1024
RESPONSES = {"nginx": NGINX, "harness": HARNESS}


class _Ex:
    tunnel = False
    cout = None

    def flush_client(self) -> None:
        pass

    def on_response_head(self, h) -> None:
        pass

    def on_response_body(self, data: bytes) -> None:
        pass

    def on_response_end(self) -> None:
        pass


class _Pool:
    def forget(self, conn) -> None:
        pass


def _conn(which: str):
    sys.path.insert(0, str(ROOT))
    import httptools

    from sidecar.proxy import upstream as U
    conn = U.UpstreamConn(_Pool(), ("127.0.0.1", 1))
    if which == "llresp":
        from sidecar.proxy import llresp
        conn.parser = llresp.RespParser(conn)
    else:
        conn.parser = httptools.HttpResponseParser(conn)
    conn.exchange = _Ex()
    return conn


def child(which: str, resp: str, n: int) -> None:
    conn = _conn(which)
    data = RESPONSES[resp]
    feed = conn.data_received
    for _ in range(n):
        feed(data)


def instructions(which: str, resp: str, n: int) -> float:
    def run(k: int) -> int:
        r = subprocess.run(["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
                            sys.executable, __file__, "--child", which, resp, str(k)],
                           capture_output=True, text=True, cwd=ROOT, timeout=600)
        m = re.search(r"I\s+refs:\s+([\d,]+)", r.stderr)
        if r.returncode or m is None:
            raise SystemExit(f"bench_resp_parser: child failed:\n{r.stderr[-2000:]}")
        return int(m.group(1).replace(",", ""))
    return (run(3 * n) - run(n)) / (2 * n)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000, help="responses per timed round")
    ap.add_argument("--no-valgrind", action="store_true")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child[0], a.child[1], int(a.child[2]))
        return 0
    try:
        _conn("llresp")
    except ImportError as exc:
        print(f"bench_resp_parser: the compiled parser is not built/loaded here ({exc}); "
              "run python3 setup.py build_ext --inplace", file=sys.stderr)
        return 2
    vg = not a.no_valgrind and shutil.which("valgrind")
    for resp in RESPONSES:
        res: dict[str, list[float]] = {}
        for _ in range(5):
            for which in ("httptools", "llresp"):
                conn = _conn(which)
                feed, data = conn.data_received, RESPONSES[resp]
                t = time.process_time()
                for _ in range(a.n):
                    feed(data)
                res.setdefault(which, []).append((time.process_time() - t) / a.n * 1e6)
        med = {w: sorted(v)[2] for w, v in res.items()}
        line = (f"{resp:8s} µs/response httptools {med['httptools']:.2f}  llresp {med['llresp']:.2f}  "
                f"(−{med['httptools'] - med['llresp']:.2f} µs)")
        if vg:
            ins = {w: instructions(w, resp, 2000) for w in ("httptools", "llresp")}
            line += (f"   instructions/response httptools {ins['httptools']:.0f}  llresp {ins['llresp']:.0f}  "
                     f"(−{ins['httptools'] - ins['llresp']:.0f})")
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
