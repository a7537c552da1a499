"""Access log lines (stdout) and structured event logs (stderr).

One access line per request (DESIGN §10): method, path, partition, phase,
epoch, decision, status, upstream and total time, plus request id and client.
Lines are buffered and written in batches (at 64 lines or every flush tick),
so logging costs a string format per request, not a syscall.

Event logs (start, reload, fail-closed, drain, …) go through ``logging`` with
either a text or a one-JSON-object-per-line formatter (``--log-format``).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO, Any

log = logging.getLogger("epochgate.sidecar")


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


class AccessLog:
    """Buffered access lines; ``enabled=False`` makes ``write`` a no-op."""

    __slots__ = ("fmt", "stream", "enabled", "_buf", "_ts", "_ts_at")

    def __init__(self, fmt: str = "text", stream: IO[str] | None = None, enabled: bool = True) -> None:
        self.fmt = fmt
        self.stream = stream if stream is not None else sys.stdout
        self.enabled = enabled
        self._buf: list[str] = []
        self._ts = ""
        self._ts_at = 0.0

    def tick(self) -> None:
        """Refresh the cached timestamp and flush (called a few times a second)."""
        now = time.time()
        self._ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + "Z"
        self._ts_at = now
        self.flush()

    def write(self, client: str, method: str, path: str, partition: str, phase: str, epoch: int, decision: str,
              status: int, upstream_s: float, total_s: float, rid: str, node: str) -> None:
        if not self.enabled:
            return
        if self.fmt == "json":
            line = json.dumps({"ts": self._ts or time.time(), "client": client, "method": method, "path": path,
                               "partition": partition, "phase": phase, "epoch": epoch, "decision": decision,
                               "status": status, "upstream": node, "upstream_ms": round(upstream_s * 1000, 3),
                               "total_ms": round(total_s * 1000, 3), "request_id": rid})
        else:
            line = (f'{self._ts} {client} "{method} {path}" {status} partition={partition or "-"} phase={phase} '
                    f'epoch={epoch} decision={decision} upstream={node or "-"} up_ms={upstream_s * 1000:.2f} '
                    f'total_ms={total_s * 1000:.2f} rid={rid}')
        self._buf.append(line)
        if len(self._buf) >= 64:
            self.flush()

    def flush(self) -> None:
        """Write buffered lines in pieces of at most 4 KiB (PIPE_BUF), so that the
        lines of several worker processes sharing one pipe never interleave."""
        if not self._buf:
            return
        lines, self._buf = self._buf, []
        piece: list[str] = []
        size = 0
        try:
            for line in lines:
                if size + len(line) >= 4000 and piece:
                    self.stream.write("\n".join(piece) + "\n")
                    self.stream.flush()
                    piece, size = [], 0
                piece.append(line)
                size += len(line) + 1
            if piece:
                self.stream.write("\n".join(piece) + "\n")
                self.stream.flush()
        except (OSError, ValueError):
            pass
