"""Issue 30's probe, before any integration: what driving llhttp from Cython could save per exchange.

    python bench/bench_llhttp_probe.py [--heads typical|harness] [--no-valgrind]

Builds two throw-away extensions from ``bench/llhttp_probe/`` in a temporary directory:
``mb_ht`` (httptools with callbacks shaped like ``ClientConn``'s and ``UpstreamConn``'s: a
Python call per header, the kind look-up, ``fwd += (name, ": ", value, CRLF)``) and ``mb_ll``
(llhttp, the vendored copy, driven from Cython: C callbacks record offsets, one result per
message, the forwarded fields built as one bytes). Each parses one request head (a GET, or a
POST with a 1 KiB body) and one response (1 KiB body) per exchange. ``typical``: six request
and six response fields; ``harness``: the socket-free harness's two and two. Prints CPU µs per
exchange (median of 5 rounds) and, with valgrind, instructions per exchange ((I(3N) − I(N)) / 2N).
The probe's parser is not the product: it skips the checks the real callbacks make.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEADS = {
    "typical": (
        b"GET /kv/some/key?x=1 HTTP/1.1\r\nHost: example.svc:8080\r\nUser-Agent: wrk/4.2\r\nAccept: */*\r\n"
        b"X-Partition-Key: t1\r\nAccept-Encoding: gzip, deflate\r\nX-Request-Id: 3f2a9c1e-77a0-4b1e-9d2f-0c6b1f0e9a11\r\n\r\n",
        b"POST /kv/some/key HTTP/1.1\r\nHost: example.svc:8080\r\nUser-Agent: wrk/4.2\r\nAccept: */*\r\n"
        b"X-Partition-Key: t1\r\nContent-Type: application/octet-stream\r\nContent-Length: 1024\r\n\r\n" + b"x" * 1024,
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1024\r\nDate: Sat, 05 Dec 2026 20:30:00 GMT\r\n"
        b"Server: kv\r\nCache-Control: no-store\r\nETag: \"1\"\r\n\r\n" + b"y" * 1024),
    "harness": (
        b"GET /kv/k HTTP/1.1\r\nHost: sidecar\r\nX-Partition-Key: t1\r\n\r\n",
        b"PUT /kv/k HTTP/1.1\r\nHost: sidecar\r\nX-Partition-Key: t1\r\nContent-Length: 1024\r\n\r\n" + b"x" * 1024,
        b"HTTP/1.1 200 X\r\nContent-Type: text/plain\r\nContent-Length: 1024\r\n\r\n" + b"y" * 1024),
}


def build(out: Path) -> None:
    ll = ROOT / "sidecar" / "proxy" / "_vendor" / "llhttp"
    for f in ("mb_ht.pyx", "mb_ll.pyx"):
        shutil.copy(ROOT / "bench" / "llhttp_probe" / f, out / f)
    (out / "setup.py").write_text(f"""
from setuptools import setup, Extension
from Cython.Build import cythonize
ll = {str(ll)!r}
setup(ext_modules=cythonize([Extension("mb_ht", ["mb_ht.pyx"]),
      Extension("mb_ll", ["mb_ll.pyx", ll + "/src/api.c", ll + "/src/http.c", ll + "/src/llhttp.c"],
                include_dirs=[ll + "/include"])], language_level=3, quiet=True))
""")
    subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace", "-q"], cwd=out, check=True,
                   capture_output=True)


def loop(mod, kind: str, heads: str, n: int) -> None:
    get, post, resp = HEADS[heads]
    req = get if kind == "GET" else post
    r, s = mod.Req(), mod.Resp()
    f1, f2 = r.feed, s.feed
    for _ in range(n):
        f1(req)
        f2(resp)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--heads", choices=sorted(HEADS), default="typical")
    ap.add_argument("--no-valgrind", action="store_true")
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)  # dir module kind heads n
    a = ap.parse_args()
    if a.child:
        sys.path.insert(0, a.child[0])
        loop(__import__(a.child[1]), a.child[2], a.child[3], int(a.child[4]))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp))
        sys.path.insert(0, tmp)
        import mb_ht
        import mb_ll
        for kind in ("GET", "POST"):
            res: dict[str, list[float]] = {}
            for _ in range(5):
                for mod in (mb_ht, mb_ll):
                    t = time.process_time()
                    loop(mod, kind, a.heads, 50000)
                    res.setdefault(mod.__name__, []).append((time.process_time() - t) / 50000 * 1e6)
            med = {k: sorted(v)[2] for k, v in res.items()}
            line = f"{kind:4s} {a.heads}: µs/exchange httptools {med['mb_ht']:.2f}  llhttp-from-C {med['mb_ll']:.2f}"
            if not a.no_valgrind and shutil.which("valgrind"):
                ins = {}
                for m in ("mb_ht", "mb_ll"):
                    c = []
                    for n in (2000, 6000):
                        r = subprocess.run(["valgrind", "--tool=cachegrind", "--cache-sim=no",
                                            "--cachegrind-out-file=/dev/null", sys.executable, __file__,
                                            "--child", tmp, m, kind, a.heads, str(n)], capture_output=True, text=True)
                        c.append(int(re.search(r"I\s+refs:\s+([\d,]+)", r.stderr).group(1).replace(",", "")))
                    ins[m] = (c[1] - c[0]) / 4000
                line += f"   instructions/exchange httptools {ins['mb_ht']:.0f}  llhttp-from-C {ins['mb_ll']:.0f}"
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
