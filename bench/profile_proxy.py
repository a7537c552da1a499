"""Where the sidecar's CPU goes per request: a sampling profile of the real data path under wrk.

    python bench/profile_proxy.py [--seconds 4] [--post] [--pure] [--top 30]

One nginx upstream answering 1 KiB and one 1-worker sidecar on the embedded store
(gating, metrics and access log on, as in ``bench_proxy.py``); wrk drives it while
``perf record --call-graph dwarf`` samples the sidecar process (Linux ``perf``; the
compiled build's C frames carry the Python names, e.g.
``__pyx_f_7sidecar_5proxy_8exchange_7Request_attach``). Prints:

* the kernel's share (the four syscalls of a proxied request and the loopback TCP
  stack under them: about half of all samples, and the part nginx pays alike);
* user-space samples by the innermost sidecar frame on the stack — the function
  whose own work (or whose calls into CPython, httptools, uvloop) they are.
  ``python:<frame>`` means the interpreter ran plain-Python code called from there
  (a module not compiled, or the ``gate`` library);
* the most frequent user-space leaf symbols (CPython internals show what kind of
  work: attribute look-ups, allocation, exception formatting...).

This is how the per-request costs named in docs/compiled-build.md were found (e.g. CPython 3.11's
``bytes.__contains__`` formatting and clearing a TypeError on every ``b"%" in url``).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_proxy import Proc, free_port, nginx_upstream, run_wrk, sidecar_proc  # noqa: E402

_OFFSET = re.compile(r"\+0x[0-9a-f]+$")


def aggregate(script: str, top: int) -> str:
    """Summarise ``perf script`` output (one blank-line separated stack per sample)."""
    own: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    total = user = 0
    for sample in script.split("\n\n"):
        frames = []
        for line in sample.splitlines()[1:]:
            parts = line.split(None, 2)
            if len(parts) >= 3:
                frames.append((_OFFSET.sub("", parts[1]), parts[2]))
        if not frames:
            continue
        total += 1
        if "kernel" in frames[0][1]:
            continue
        user += 1
        leaf[frames[0][0]] += 1
        who = "(uvloop, httptools, CPython: no sidecar frame)"
        for i, (sym, _) in enumerate(frames):
            if "sidecar" in sym:
                who = sym
                break
            if sym == "_PyEval_EvalFrameDefault":  # interpreted code: name the compiled caller
                who = "python:" + next((s for s, _ in frames[i:] if "sidecar" in s), "?")
                break
        own[who] += 1
    if not total:
        return "no samples (is perf allowed here? try: sysctl kernel.perf_event_paranoid=1)"
    out = [f"samples {total}: kernel {100 * (total - user) / total:.1f}%, user space {100 * user / total:.1f}%",
           "", "user-space samples by innermost sidecar frame (% of all samples)"]
    out += [f"{100 * n / total:6.2f}  {k[:120]}" for k, n in own.most_common(top)]
    out += ["", "user-space leaf symbols (% of all samples)"]
    out += [f"{100 * n / total:6.2f}  {k[:120]}" for k, n in leaf.most_common(top)]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--post", action="store_true", help="profile 1 KiB POSTs (gated writes) instead of GETs")
    ap.add_argument("--pure", action="store_true", help="the plain-Python build (EPOCHGATE_PURE_PYTHON=1)")
    ap.add_argument("--top", type=int, default=30)
    a = ap.parse_args()
    perf = shutil.which("perf")
    for tool, path in (("perf", perf), ("wrk", shutil.which("wrk")), ("nginx", shutil.which("nginx") or "/usr/sbin/nginx")):
        if not path or not Path(path).exists():
            print(f"profile_proxy: {tool} not found (apt-get install {'linux-perf' if tool == 'perf' else tool})",
                  file=sys.stderr)
            return 2
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    tmp = Path(tempfile.mkdtemp(prefix="profile-proxy-"))
    procs: list[Proc] = []
    try:
        up = nginx_upstream(tmp, nginx)
        procs.append(up)
        port = free_port()
        sc = sidecar_proc(tmp, port, up.port, pure=a.pure)
        procs.append(sc)
        url = f"http://127.0.0.1:{port}/kv/bench"
        run_wrk(url, 1.0, a.connections, a.post, tmp)  # warm-up
        data = tmp / "perf.data"
        rec = subprocess.Popen([perf, "record", "-q", "-F", "999", "--call-graph", "dwarf,8192", "-p",
                                str(sc.p.pid), "-o", str(data), "--", "sleep", str(a.seconds)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        r = run_wrk(url, a.seconds, a.connections, a.post, tmp)
        rec.wait(timeout=a.seconds + 60)
        script = subprocess.run([perf, "script", "-i", str(data)], capture_output=True, text=True,
                                timeout=300).stdout
        build = "pure" if a.pure else "compiled if built (see the sidecar's start-up line)"
        print(f"{'POST' if a.post else 'GET'} 1 KiB, wrk -c{a.connections} {a.seconds:g}s: {r['rps']:.0f} req/s "
              f"(under perf: slower than unprofiled); build: {build}\n")
        print(aggregate(script, a.top))
    finally:
        for p in reversed(procs):
            p.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
