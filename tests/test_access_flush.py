"""The access log's short-period flush (``sidecar/proxy/context.py`` ``FLUSH_S``): while lines come in
they are written every ~20 ms in small batches (a flush of the tick's or of 256 lines is a loop pause
each request arriving meanwhile waits out: bench/bench_tail.py), and an idle sidecar stops the timer.
Driven through the fake-transport harness: no socket, no fixed sleep (each wait is for the event)."""

from __future__ import annotations

import asyncio
import io

from gate import PlacementTable
from sidecar._log import AccessLog
from sidecar.proxy import context
from tests._fake_transport import Harness, request, response, settle, status_of


async def one_request(h: Harness) -> None:
    c = h.client()
    c.send(request("GET"))
    await settle()
    h.upstreams("a")[-1].reply(response(200, b"hi"))
    assert status_of(c.take()) == 200


async def until(cond, what: str, bound_s: float = 5.0) -> None:
    """Wait for ``cond()`` (polling the loop), failing after ``bound_s``."""
    deadline = asyncio.get_running_loop().time() + bound_s
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.005)


async def test_lines_are_flushed_every_flush_s_while_they_come_and_the_timer_stops_when_idle():
    h = Harness(PlacementTable({"t1": "a"}))
    out = io.StringIO()
    h.ctx.access = AccessLog(stream=out)
    try:
        await one_request(h)
        assert len(h.ctx.access.rows) == 1 and h.ctx._flusher is None   # queued; nothing armed yet
        h.ctx._tick()                                   # the tick finds lines: flushes them, arms the short timer
        assert out.getvalue().count("\n") == 1 and h.ctx._flusher is not None
        await one_request(h)                            # the next line is written by the short timer, not a tick
        assert out.getvalue().count("\n") == 1
        await until(lambda: out.getvalue().count("\n") == 2, "the short-period flush")
        await until(lambda: h.ctx._flusher is None, "the timer stopping once no line came")  # idle: no more wake-ups
        assert context.FLUSH_S < context.TICK_S / 4
    finally:
        h.close()


async def test_a_tick_without_lines_arms_nothing_and_stop_cancels_the_timer():
    h = Harness(PlacementTable({"t1": "a"}))
    out = io.StringIO()
    h.ctx.access = AccessLog(stream=out)
    try:
        h.ctx._tick()
        assert h.ctx._flusher is None                   # an idle sidecar does not wake every 20 ms
        await one_request(h)
        h.ctx._tick()
        armed = h.ctx._flusher
        assert armed is not None
        h.ctx.stop()                                    # stop flushes what is left and cancels the timer
        assert h.ctx._flusher is None and armed.cancelled()
    finally:
        h.close()


async def test_while_the_short_flush_is_armed_the_tick_leaves_the_lines_to_it(monkeypatch):
    """The tick does not flush when the short-period timer is armed (a second flush there only
    lengthened the tick's loop pause); the lines still go out within that timer's period."""
    monkeypatch.setattr(context, "FLUSH_S", 0.5)  # long enough that it cannot fire inside one_request
    h = Harness(PlacementTable({"t1": "a"}))
    out = io.StringIO()
    h.ctx.access = AccessLog(stream=out)
    try:
        await one_request(h)
        h.ctx._tick()                                   # no timer yet: the tick flushes and arms it
        assert out.getvalue().count("\n") == 1 and h.ctx._flusher is not None
        await one_request(h)
        h.ctx._tick()                                   # armed: this line is the timer's to write
        assert out.getvalue().count("\n") == 1 and len(h.ctx.access.rows) == 1
        await until(lambda: out.getvalue().count("\n") == 2, "the short-period flush")
    finally:
        h.close()


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
