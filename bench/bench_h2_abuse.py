"""HTTP/2 and admin-port abuse memory: RSS against the configured bounds (issue 26).

    python bench/bench_h2_abuse.py [--connections 1000] [--seconds 12] [--sidecar-root DIR]

Starts a sidecar (``python -m sidecar``, one process, compiled build if present) in
front of an HTTP/1.1 node run in this process, and measures the sidecar's RSS
(/proc/PID/status VmRSS, peak, sampled every 50 ms) in two phases, each on a fresh
sidecar:

1. baseline — N HTTP/2 connections that send the preface and SETTINGS, then nothing
   (the fixed cost of N open connections), and the admin port's connection bound
   filled with idle connections;
2. each abuse alone on N/4 connections, the admin abuse alone, then all of them at
   once (N HTTP/2 connections, a quarter each, and the admin abuse):

   * **continuation** — HEADERS without END_HEADERS, then 16 KiB CONTINUATION frames
     every 50 ms (``h2`` alone would keep 64 of them, 1 MiB, per connection);
   * **replay** — ``STREAMS`` writes of ``BODY`` bytes each to a node that holds its
     answer: the bodies kept for replay (``--body-budget``);
   * **unread** — ``STREAMS`` downloads of 8 MiB with a 1 GiB window, never read;
   * **flood** — PING and SETTINGS frames, never reading the acks;

   plus the admin port: each of its ``MAX_CONNS`` connections either trickles a
   never-ending header, pipelines 2,000 scrapes and never reads, or stops mid-head,
   and as many connections again beyond the bound.

It prints each phase's RSS growth over the sidecar's idle RSS, as a ratio of the
baseline's, and as a fraction of what the configured limits allow
(the bound, plus the baseline's cost per connection: continuation ``N/4 × (4 × --max-header-bytes + 16 KiB)``, replay
``--body-budget`` + the streams' windows, unread ``N/4 × STREAMS × 256 KiB`` relay
buffer + the write-buffer bound, flood ``N/4`` × the write-buffer bound, admin
``MAX_CONNS × (MAX_HEAD + one read + the write buffer + one answer)``). ``--sidecar-root /work/main`` runs the
same load against another source tree (before/after). Figures are noisy on a shared
machine; the ratios are the result.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hpack import Encoder
from hyperframe.frame import (ContinuationFrame, DataFrame, HeadersFrame, PingFrame, SettingsFrame,
                              WindowUpdateFrame)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_slowloris import free_port, listening, rss_kib, sample_peak, stop_group  # noqa: E402
from sidecar._admin import MAX_CONNS, MAX_HEAD  # noqa: E402
from sidecar.proxy.h2.conn import MAX_WRITE_BUFFER  # noqa: E402

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
STREAMS = 4
BODY = 64 * 1024
KINDS = ("continuation", "replay", "unread", "flood")
MAX_HEADER = 32768
SLACK = 1.1          # RSS per byte held: object headers, allocator rounding
FLOOD_BATCHES = 8     # × (500 PING + 50 SETTINGS) per flooding connection
BUDGET = 16 << 20


# ---- the node: HTTP/1.1, answers /slow only when the phase ends, /big with 8 MiB ----------------

class Node:
    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.port = 0
        self.server: asyncio.base_events.Server | None = None

    async def start(self) -> "Node":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=1 << 20)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                path = lines[0].split(b" ")[1]
                hdrs = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(b":") for ln in lines[1:] if ln)}
                if b"content-length" in hdrs:
                    await reader.readexactly(int(hdrs[b"content-length"]))
                elif hdrs.get(b"transfer-encoding", b"").lower() == b"chunked":
                    while True:
                        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                        await reader.readexactly(size + 2)
                        if size == 0:
                            break
                if path.startswith(b"/slow"):
                    await self.release.wait()
                if path.startswith(b"/big"):
                    size = 8 << 20
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
                    block = b"y" * 65536
                    for _ in range(size // len(block)):
                        writer.write(block)
                        await writer.drain()
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, ValueError, IndexError,
                asyncio.CancelledError):
            pass  # (a cancelled handler would make asyncio's stream callback log a traceback)
        finally:
            writer.close()


# ---- HTTP/2 clients, frames written by hand ---------------------------------------------------

def _headers(enc: Encoder, sid: int, method: str, path: str, end_stream: bool, end_headers: bool = True) -> bytes:
    block = enc.encode([(":method", method), (":path", path), (":authority", "bench"), (":scheme", "http"),
                        ("x-partition-key", "t1")])
    f = HeadersFrame(sid, block)
    if end_stream:
        f.flags.add("END_STREAM")
    if end_headers:
        f.flags.add("END_HEADERS")
    return f.serialize()


async def _abuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, kind: str) -> None:
    enc = Encoder()
    if kind == "continuation":
        writer.write(_headers(enc, 1, "GET", "/", True, end_headers=False))
        block = ContinuationFrame(1, b"\x00" * 16384).serialize()
        for _ in range(64):   # up to 1 MiB (h2's own limit: 64 frames)
            writer.write(block)
            await writer.drain()
            await asyncio.sleep(0.05)
    elif kind == "replay":
        for i in range(STREAMS):
            sid = 1 + 2 * i
            writer.write(_headers(enc, sid, "PUT", "/slow", False))
            for off in range(0, BODY, 16384):
                d = DataFrame(sid, b"x" * min(16384, BODY - off))
                if off + 16384 >= BODY:
                    d.flags.add("END_STREAM")
                writer.write(d.serialize())
            await writer.drain()
    elif kind == "unread":
        writer.write(WindowUpdateFrame(0, window_increment=(1 << 30)).serialize())
        for i in range(STREAMS):
            writer.write(_headers(enc, 1 + 2 * i, "GET", "/big", True))
        await writer.drain()
    elif kind == "flood":   # a burst, never reading the acks (its cost is CPU: ~5 µs a frame)
        batch = b"".join(PingFrame(0, opaque_data=b"%08d" % i).serialize() for i in range(500))
        batch += SettingsFrame(0, settings={SettingsFrame.MAX_CONCURRENT_STREAMS: 100}).serialize() * 50
        for _ in range(FLOOD_BATCHES):
            writer.write(batch)
            await writer.drain()
            await asyncio.sleep(0.05)


async def _drop_reads(reader: asyncio.StreamReader) -> None:
    while await reader.read(65536):
        pass


def _closed(writer: asyncio.StreamWriter) -> bool:
    """Did the sidecar close (or reset) this connection? The socket's TCP state, read without
    reading the data (the abusers that never read have megabytes waiting)."""
    sock = writer.get_extra_info("socket")
    if sock is None or writer.transport.is_closing():
        return True
    try:
        return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0] != 1  # 1: ESTABLISHED
    except OSError:
        return True


async def _connect(port: int, out: dict[str, int]) -> "tuple[asyncio.StreamReader, asyncio.StreamWriter] | None":
    """A connection, or None counted as ``connect_failed`` (the sidecar refused or was full)."""
    try:
        return await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        out["connect_failed"] = out.get("connect_failed", 0) + 1
        return None


async def h2_client(port: int, kind: str, stop: asyncio.Event, out: dict[str, int]) -> None:
    conn = await _connect(port, out)
    if conn is None:
        return
    reader, writer = conn
    settings = SettingsFrame(0)
    if kind == "unread":
        settings.settings = {SettingsFrame.INITIAL_WINDOW_SIZE: (1 << 30) - 1}
    tasks: list[asyncio.Future] = []
    try:
        writer.write(PREFACE + settings.serialize())
        await asyncio.wait_for(reader.read(65536), 30)   # the sidecar's SETTINGS (and window)
        writer.write(SettingsFrame(0, flags=["ACK"]).serialize())
        tasks.append(asyncio.ensure_future(_abuse(reader, writer, kind)))
        if kind in ("continuation", "replay"):   # these read (and drop) answers: only the abuse is held
            tasks.append(asyncio.ensure_future(_drop_reads(reader)))
    except (OSError, asyncio.TimeoutError):
        tasks.append(asyncio.ensure_future(asyncio.sleep(0)))
    await stop.wait()
    for t in tasks[1:]:
        t.cancel()
    key = f"{kind}:{'closed' if _closed(writer) else 'open'}"
    tasks[0].cancel()
    out[key] = out.get(key, 0) + 1
    writer.close()


async def h2_idle(port: int, stop: asyncio.Event, out: dict[str, int]) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(PREFACE + SettingsFrame(0).serialize())
        await asyncio.wait_for(reader.read(65536), 30)
        writer.write(SettingsFrame(0, flags=["ACK"]).serialize())
        out["open"] = out.get("open", 0) + 1
    except (OSError, asyncio.TimeoutError):
        out["closed"] = out.get("closed", 0) + 1
        return
    await stop.wait()
    writer.close()


async def _admin_abuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, kind: str) -> None:
    if kind == "header":
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: a\r\nX-Big: ")
        for _ in range(1024):   # up to 8 MiB
            writer.write(b"a" * 8192)
            await writer.drain()
            await asyncio.sleep(0.005)
    elif kind == "pipeline":
        writer.transport.set_write_buffer_limits(high=64 << 20)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n" * 2000)
    elif kind == "idle":
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: a\r\n")


async def admin_client(port: int, kind: str, stop: asyncio.Event, out: dict[str, int]) -> None:
    conn = await _connect(port, out)
    if conn is None:
        return
    reader, writer = conn
    task = asyncio.ensure_future(_admin_abuse(reader, writer, kind))
    await stop.wait()
    key = f"{kind}:{'closed' if _closed(writer) else 'open'}"
    task.cancel()
    out[key] = out.get(key, 0) + 1
    writer.close()


async def phase(args: argparse.Namespace, kinds: list[str] | None, n: int,
                admin_mode: str) -> tuple[int, int, dict[str, int], dict[str, int]]:
    """A fresh sidecar, ``n`` HTTP/2 connections spread over ``kinds`` (None: idle ones) and
    the admin port ``admin_mode`` ("idle", "abuse" or "none"): (idle RSS KiB, peak growth
    KiB, HTTP/2 outcomes, admin outcomes)."""
    node = await Node().start()
    tmp = Path(tempfile.mkdtemp(prefix="bench-h2-abuse-"))
    placement = tmp / "p.toml"
    placement.write_text(f'[nodes]\na = "http://127.0.0.1:{node.port}"\n[partitions]\nt1 = "a"\n')
    port, admin = free_port(), free_port()
    root = Path(args.sidecar_root).resolve()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EPOCHGATE_")}
    env["PYTHONPATH"] = str(root)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sidecar", "--placement", str(placement), "--listen", f"127.0.0.1:{port}",
         "--admin", f"127.0.0.1:{admin}", "--control", "127.0.0.1:0", "--no-access-log",
         "--max-header-bytes", str(MAX_HEADER), "--body-budget", str(BUDGET), "--head-timeout", "600",
         "--idle-timeout", "600", "--read-timeout", "600", "--drain-seconds", "0.5", "--max-connections", str(args.connections * 2)],
        cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    stop = asyncio.Event()
    h2_out: dict[str, int] = {}
    admin_out: dict[str, int] = {}
    try:
        await listening(port)
        idle = rss_kib(proc.pid)
        done = asyncio.Event()
        sampler = asyncio.ensure_future(sample_peak(proc.pid, done))
        tasks = []
        for i in range(n):
            if kinds:
                tasks.append(asyncio.ensure_future(h2_client(port, kinds[i % len(kinds)], stop, h2_out)))
            else:
                tasks.append(asyncio.ensure_future(h2_idle(port, stop, h2_out)))
            if i % 100 == 99:
                await asyncio.sleep(0.05)   # do not overrun the accept backlog
        for i in range(0 if admin_mode == "none" else 2 * MAX_CONNS):   # the bound filled, and as many again
            kind = ("header", "pipeline", "idle")[i % 3] if admin_mode == "abuse" else "idle"
            tasks.append(asyncio.ensure_future(admin_client(admin, kind, stop, admin_out)))
        await asyncio.sleep(args.seconds)
        done.set()
        peak = await sampler
        stop.set()
        node.release.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        return idle, max(peak - idle, 1), h2_out, admin_out
    finally:
        stop_group(proc)
        node.release.set()
        node.server.close()


async def main_async(args: argparse.Namespace) -> int:
    n = args.connections
    kinds = args.kinds.split(",")
    q = n // len(kinds)
    wb = MAX_WRITE_BUFFER
    bounds = {
        "continuation": q * (4 * MAX_HEADER + 16384),
        "replay": BUDGET + q * STREAMS * 256 * 1024,
        "unread": q * (STREAMS * 256 * 1024 + wb),
        "flood": q * wb,
        # per admin connection: a head, one read kept unfed (256 KiB), the write buffer's
        # high-water mark and one answer (64 KiB each)
        "admin": MAX_CONNS * (MAX_HEAD + (256 + 64 + 64) * 1024),
    }
    phases: list[tuple[str, list[str] | None, int, str, int]] = [
        ("baseline: idle connections", None, n, "none" if args.no_admin else "idle", 0)]
    phases += [(f"{k} ({q} connections)", [k], q, "none", bounds[k]) for k in kinds]
    if not args.no_admin:
        phases.append((f"admin port ({2 * MAX_CONNS} connections)", None, 0, "abuse", bounds["admin"]))
    phases.append((f"all at once ({n} + admin)", kinds, n, "none" if args.no_admin else "abuse",
                   sum(bounds[k] for k in kinds) + (0 if args.no_admin else bounds["admin"])))
    rows = []
    for name, pk, pn, admin_mode, bound in phases:
        idle, growth, h2_out, admin_out = await phase(args, pk, pn, admin_mode)
        rows.append((name, idle, growth, h2_out, admin_out, bound))
    base = rows[0][2]
    per_conn = base * 1024 / n   # bytes: the fixed cost of one open HTTP/2 connection (baseline)
    rows = [(name, idle, growth, h2_out, admin_out,
             bound + (per_conn * (q if len(phases[i][1] or ()) == 1 else n) if bound and phases[i][1] else 0))
            for i, (name, idle, growth, h2_out, admin_out, bound) in enumerate(rows)]
    print(f"{n} HTTP/2 connections ({q} per abuse: {', '.join(kinds)}) + {2 * MAX_CONNS} admin connections; "
          f"{args.seconds:g} s per phase, each on a fresh sidecar; --max-header-bytes {MAX_HEADER} "
          f"--body-budget {BUDGET >> 20} MiB; write-buffer bound {wb >> 10} KiB; sidecar {args.sidecar_root}; "
          f"idle RSS {rows[0][1] / 1024:.1f} MiB")
    print(f"{'phase':32} {'RSS growth':>11} {'/baseline':>10} {'bound':>10} {'/bound':>7}  outcomes")
    ok = True
    for name, _, growth, h2_out, admin_out, bound in rows:
        rel = f"{growth * 1024 / bound:7.2f}" if bound else f"{'-':>7}"
        bnd = f"{bound / 1048576:6.0f} MiB" if bound else f"{'-':>10}"
        out = {**h2_out, **{f"admin {k}": v for k, v in admin_out.items()}}
        print(f"{name:32} {growth / 1024:7.1f} MiB {growth / base:10.2f} {bnd} {rel}  {out}")
        ok = ok and (not bound or growth * 1024 <= SLACK * bound)
    print(f"RESULT (bound × {SLACK:g}: Python objects and the allocator around the bytes held)",
          "every phase within its configured bound" if ok else "a phase is OVER its configured bound")
    return 0 if ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=12.0, help="abuse time per phase (the bench is bounded by it)")
    ap.add_argument("--kinds", default=",".join(KINDS), help="the HTTP/2 abuses, spread over the connections")
    ap.add_argument("--no-admin", action="store_true", help="leave the admin port alone")
    ap.add_argument("--sidecar-root", default=str(ROOT), help="the source tree the sidecar runs from")
    return asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
