"""Access log lines (stdout) and structured event logs (stderr).

One access line per request (DESIGN §10): method, path, partition, phase,
epoch, decision, status, upstream and total time, plus request id and client.
The data path formats its line once the response has gone out (``write``) and
queues it; queued lines are written in batches (at 256 lines or by the 250 ms
tick), so logging costs one line's formatting after the response and one
syscall per batch: a flush is a join and a write.

Event logs (start, reload, fail-closed, drain, …) go through ``logging`` with
either a text or a one-JSON-object-per-line formatter (``--log-format``).
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import stat
import sys
import time
from typing import IO, Any

log = logging.getLogger("epochgate.sidecar")

# Client-chosen bytes in a text line: anything but visible ASCII, and the quote and
# backslash that delimit fields, are written as \xHH (a NEL or CR must not end the line,
# a quote must not end the field).
_UNSAFE = re.compile(rb'[^\x21-\x7e]|["\\]')
_SAFE = bytes(b for b in range(0x21, 0x7f) if b not in b'"\\')  # what _UNSAFE does not match


# compiled (sidecar/_build.py), ``escape`` checks the bytes with a C loop and ``_format`` writes the
# times with C integers; as plain Python, ``translate`` and ``%.2f`` are the cheaper calls
_COMPILED = not __file__.endswith(".py")


def escape(raw: bytes | None) -> str:
    """Client-supplied bytes (path, request id) made safe for one text log field."""
    if not raw:
        return "-"
    if _COMPILED and type(raw) is bytes:
        b = raw
        for c in b:  # compiled: a C loop, ~3 instructions a byte (translate's call: ~600 a field)
            if c < 0x21 or c > 0x7e or c == 0x22 or c == 0x5c:
                break
        else:
            return b.decode("ascii")
    elif not raw.translate(None, _SAFE):  # every byte safe: one C pass (140 ns) instead of a regex search (420 ns)
        return raw.decode("ascii")
    return _UNSAFE.sub(_hex, raw).decode("ascii")


def _hex(m: re.Match[bytes]) -> bytes:
    return b"\\x%02x" % m.group()[0]


def _cents(ms: float) -> int:
    """``ms`` in hundredths, rounded exactly as ``"%.2f" % ms`` rounds it, or -1 where one float
    product cannot tell (within 1e-4 of a tie, zero, negative, ≥ 1e7, NaN): the caller then
    formats with ``%.2f``. ``t`` is ``ms * 100`` within 1.2e-7 below 1e9, so a fraction clear of
    0.5 by 1e-4 rounds the same way as the exact product. Compiled, two of these and four integer
    fields cost ~300 instructions a line against ~3,800 for two ``%.2f`` (issue 30)."""
    t = ms * 100.0
    if 0.0 < t < 1e9:
        k = int(t)
        f = t - k
        if f < 0.4999:
            return k
        if f > 0.5001:
            return k + 1
    return -1


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {"ts": round(record.created, 3), "level": record.levelname.lower(),
                               "logger": record.name, "event": record.getMessage()}
        fields = getattr(record, "fields", None)
        if fields:
            doc.update(fields)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = f"{self.formatTime(record, '%Y-%m-%dT%H:%M:%S')} {record.levelname.lower()} {record.getMessage()}"
        fields = getattr(record, "fields", None)
        if fields:
            base += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        if record.exc_info:
            base += "\n" + self.formatException(record.exc_info)
        return base


def setup_logging(fmt: str, stream: IO[str] | None = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger("epochgate")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


def event(msg: str, level: int = logging.INFO, **fields: Any) -> None:
    """A structured event log line."""
    log.log(level, msg, extra={"fields": fields})


def max_write(stream: IO[str], shared: bool) -> int:
    """The largest write a flush may make to ``stream``, 0 for no limit.

    One write per flush, unless worker processes share the stream (``shared``) and it is not a
    regular file: a pipe's or socket's writes of more than PIPE_BUF (4 KiB on Linux) may interleave
    with another writer's, so those flushes go out in pieces of under 4000 bytes. A regular file's
    writes do not interleave (each holds the inode's lock). At 256 queued lines, pieces made
    15 syscalls of a flush's one; each costs 15-40 µs when it runs after an idle gap
    (figures-peers.md, "Stop 40: the access log's flush")."""
    if not shared:
        return 0
    try:
        return 0 if stat.S_ISREG(os.fstat(stream.fileno()).st_mode) else 4000
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return 4000


class AccessLog:
    """Buffered access lines; ``enabled=False`` turns logging off.

    The data path calls ``write`` once a response has gone out: the line is formatted there
    and queued in ``rows``; ``flush`` writes the queued lines. The timestamp is the one cached
    at the last tick (≤ 250 ms old).

    Formatted per request, not at the flush: a flush that formatted its ~50 queued lines (every
    ``context.FLUSH_S`` at 2,400 req/s) was a 150–175 µs loop pause that every request arriving
    meanwhile waited out — half of the slowest 1% of requests overlapped one (bench_tail.py --rt
    10, GET 2400/s; 3–9% by chance). Each line costs the same either way (~1 µs compiled), paid
    after its own response was written."""

    __slots__ = ("fmt", "stream", "enabled", "max_write", "rows", "_ts", "_ts_at", "_mids", "m_client", "m_method", "m_path",
                 "m_part", "m_phase", "m_epoch", "m_decision", "m_status", "m_node", "m_mid")

    def __init__(self, fmt: str = "text", stream: IO[str] | None = None, enabled: bool = True,
                 shared: bool = False) -> None:
        self.fmt = fmt
        self.stream = stream if stream is not None else sys.stdout
        self.enabled = enabled
        self.max_write = max_write(self.stream, shared)
        self.rows: list[str] = []  # formatted lines, not yet written
        self._mids: dict[tuple[Any, ...], tuple[str, str]] = {}
        self._ts = ""
        self._ts_at = 0.0
        # the last line's middle and what it was made from: a one-entry cache in front of ``_mids``
        # (consecutive lines share it; compared field by field, no key tuple built and hashed)
        self.m_client: Any = None
        self.m_method: Any = None
        self.m_path: Any = None
        self.m_part: Any = None
        self.m_phase: Any = None
        self.m_epoch: Any = None
        self.m_decision: Any = None
        self.m_status: Any = None
        self.m_node: Any = None
        self.m_mid: Any = None

    def tick(self) -> None:
        """Flush, then refresh the cached timestamp (called a few times a second)."""
        self.flush()
        self.stamp()

    def stamp(self) -> None:
        """Refresh the cached timestamp only (the tick, while the short-period flush writes the lines)."""
        now = time.time()
        self._ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + "Z"
        self._ts_at = now

    def write(self, client: str, method: str, path: bytes, partition: str, phase: str, epoch: int, decision: str,
              status: int, upstream_s: float, total_s: float, rid: bytes | None, node: str) -> None:
        """Format one access line and queue it (flushed at 256 lines, or by the flush timer)."""
        if not self.enabled:
            return
        rows = self.rows
        rows.append(self._line(client, method, path, partition, phase, epoch, decision, status, upstream_s, total_s,
                               rid, node))
        if len(rows) >= 256:
            self.flush()

    def _line(self, client: str, method: str, path: bytes, partition: str, phase: str, epoch: int, decision: str,
              status: int, up_s: float, total_s: float, rid: bytes | None, node: str) -> str:
        ts = self._ts
        if self.fmt == "json":
            return json.dumps({"ts": ts or time.time(), "client": client, "method": method,
                               "path": path.decode("latin-1"), "partition": partition, "phase": phase,
                               "epoch": epoch, "decision": decision, "status": status, "upstream": node,
                               "upstream_ms": round(up_s * 1000, 3), "total_ms": round(total_s * 1000, 3),
                               "request_id": rid.decode("latin-1") if rid else "-"})
        # the middle of a line repeats (same client, path, partition, …): formatted once, and the
        # last one is compared field by field before the dict (no 8-field key tuple per line)
        if (self.m_mid is not None and path == self.m_path and partition == self.m_part and client == self.m_client
                and method == self.m_method
                and phase == self.m_phase and epoch == self.m_epoch and decision == self.m_decision
                and status == self.m_status and node == self.m_node):
            mid = self.m_mid
        else:
            mid = self._mid(client, method, path, partition, phase, epoch, decision, status, node)
        up = up_s * 1000
        total = total_s * 1000
        if _COMPILED:
            k1 = _cents(up)
            k2 = _cents(total)
            if k1 >= 0 and k2 >= 0:  # the same text as %.2f (_cents), from C integers
                # written in C into the line's own str (_log.pxd): no tuple, int objects or rid str made
                # (ASCII lines, rid's bytes all safe; otherwise %-formatted as before)
                line = _cline(ts, mid, k1, k2, rid)  # type: ignore[name-defined]  # noqa: F821 (compiled only: _log.pxd)
                if line is not None:
                    return line
                return "%s %s%d.%02d total_ms=%d.%02d rid=%s" % (ts, mid, k1 // 100, k1 % 100,
                                                                k2 // 100, k2 % 100, escape(rid))
        # %-formatting: 0.3 µs a line less than the f-string's two format specs (timeit)
        return "%s %s%.2f total_ms=%.2f rid=%s" % (ts, mid, up, total, escape(rid))

    def _mid(self, client: str, method: str, path: bytes, partition: str, phase: str, epoch: int, decision: str,
             status: int, node: str) -> str:
        """A line's middle (client to ``up_ms=``), from ``_mids`` or formatted; remembered as the last one."""
        mids = self._mids
        key = (client, method, path, partition, phase, epoch, decision, status)
        hit = mids.get(key)
        if hit is None or hit[0] != node:
            if len(mids) > 4096:  # bounded: paths are client-chosen
                mids.clear()
            hit = mids[key] = (node, f'{client} "{escape(method.encode("latin-1"))} {escape(path)}" {status} '
                                     f'partition={partition or "-"} phase={phase} epoch={epoch} '
                                     f'decision={decision} upstream={node or "-"} up_ms=')
        self.m_client, self.m_method, self.m_path, self.m_part, self.m_phase = client, method, path, partition, phase
        self.m_epoch, self.m_decision, self.m_status, self.m_node = epoch, decision, status, node
        self.m_mid = hit[1]
        return hit[1]

    def flush(self) -> None:
        """Write the queued lines: in one write, or, when worker processes share a pipe, in pieces
        of at most ``max_write`` bytes ending at a line's end, so their lines never interleave."""
        if not self.rows:
            return
        lines, self.rows = self.rows, []
        try:
            if self.max_write == 0:
                self._put("\n".join(lines) + "\n")
                return
            piece: list[str] = []
            size = 0
            for line in lines:
                if size + len(line) >= self.max_write and piece:
                    self._put("\n".join(piece) + "\n")
                    piece, size = [], 0
                piece.append(line)
                size += len(line) + 1
            if piece:
                self._put("\n".join(piece) + "\n")
        except (OSError, ValueError):
            pass

    def _put(self, text: str) -> None:
        try:
            self.stream.write(text)
        except UnicodeEncodeError:
            # A lone surrogate (a partition name from JSON) cannot be encoded strictly: write the piece
            # backslash-escaped. Before, the error (a ValueError) ended the flush and lost the rest of the
            # batch, up to 256 lines. The text stream encodes before it buffers, so nothing went out twice.
            enc = getattr(self.stream, "encoding", None) or "utf-8"
            self.stream.write(text.encode(enc, "backslashreplace").decode(enc))
        self.stream.flush()
