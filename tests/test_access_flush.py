"""When the access log's lines are written (``sidecar/proxy/context.py`` ``TICK_S``, ``sidecar/_log.py``):
by the tick that runs anyway, in one write per flush unless worker processes share a pipe (then in
pieces under PIPE_BUF that end at a line's end). Each flush is a loop pause paid cold after an idle
gap (bench/bench_tail.py), so there are as few as the log's freshness allows.
Driven through the fake-transport harness: no socket, no fixed sleep."""

from __future__ import annotations

import io
import os
import tempfile

from gate import PlacementTable
from sidecar._log import AccessLog, max_write
from tests._fake_transport import Harness, request, response, settle, status_of


class Writes(io.StringIO):
    """A text stream that keeps each write it is given (one write here is one syscall on a real stream)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def write(self, s: str) -> int:
        self.calls.append(s)
        return super().write(s)


async def one_request(h: Harness) -> None:
    c = h.client()
    c.send(request("GET"))
    await settle()
    h.upstreams("a")[-1].reply(response(200, b"hi"))
    assert status_of(c.take()) == 200


async def test_the_tick_writes_the_queued_lines_in_one_write():
    h = Harness(PlacementTable({"t1": "a"}))
    out = Writes()
    h.ctx.access = AccessLog(stream=out)
    try:
        h.ctx._tick()
        assert out.calls == []                          # no lines: nothing written
        for _ in range(3):
            await one_request(h)
        assert len(h.ctx.access.rows) == 3 and out.calls == []   # queued, not written per request
        h.ctx._tick()
        assert len(out.calls) == 1 and out.calls[0].count("\n") == 3 and h.ctx.access.rows == []
    finally:
        h.close()


async def test_stop_writes_what_is_left():
    h = Harness(PlacementTable({"t1": "a"}))
    out = Writes()
    h.ctx.access = AccessLog(stream=out)
    try:
        await one_request(h)
        assert out.calls == []
        h.ctx.stop()
        assert "".join(out.calls).count("\n") == 1
    finally:
        h.close()


def test_the_data_path_writes_at_256_lines_in_one_write():
    out = Writes()
    log = AccessLog(stream=out)
    log.stamp()
    for i in range(256):
        log.write("c", "GET", b"/kv/x", "t1", "active", 1, "read", 200, 0.001, 0.002, b"r-%d" % i, "a")
    assert len(out.calls) == 1 and out.calls[0].count("\n") == 256 and log.rows == []


def test_workers_sharing_a_pipe_write_pieces_under_pipe_buf_that_end_at_a_line():
    """Writes of more than PIPE_BUF to a pipe may interleave with another worker's: with several
    workers on one pipe each write stays under 4000 bytes and ends at a line's end; a regular file
    (writes do not interleave) and a lone worker get one write."""
    r, w = os.pipe()
    with os.fdopen(w, "w") as pipe, tempfile.TemporaryFile("w") as f:
        assert max_write(pipe, shared=True) == 4000
        assert max_write(pipe, shared=False) == 0
        assert max_write(f, shared=True) == 0
        assert max_write(io.StringIO(), shared=True) == 4000   # no descriptor: the safe choice
    os.close(r)
    out = Writes()
    log = AccessLog(stream=out)
    log.max_write = 4000
    log.stamp()
    for i in range(100):
        log.write("c", "GET", b"/kv/x", "t1", "active", 1, "read", 200, 0.001, 0.002, b"r-%d" % i, "a")
    log.flush()
    assert len(out.calls) > 1
    assert all(len(c.encode()) < 4000 and c.endswith("\n") for c in out.calls)
    assert [ln.rsplit("rid=r-", 1)[1] for ln in "".join(out.calls).splitlines()] == [str(i) for i in range(100)]


def test_a_line_the_stream_cannot_encode_is_escaped_not_its_batch_lost():
    """A partition name with a lone surrogate (JSON allows one) cannot be encoded strictly by the
    text stream: that piece is written backslash-escaped rather than the rest of the batch dropped
    (the UnicodeEncodeError is a ValueError, which the flush swallowed), and the lines after it go out."""
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="utf-8", write_through=True)
    log = AccessLog(stream=stream)
    log.stamp()
    for i, part in enumerate(["t1", "t\ud800", "t3"]):
        log.write("c", "GET", b"/kv/x", part, "active", 1, "read", 200, 0.001, 0.002, b"r-%d" % i, "a")
    log.flush()
    got = raw.getvalue().decode().splitlines()
    assert [ln.rsplit("rid=r-", 1)[1] for ln in got] == ["0", "1", "2"], got
    assert "partition=t\\ud800" in got[1]
