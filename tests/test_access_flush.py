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


class SlowPipe:
    """A pipe whose reader thread drains it slowly (4 KiB a millisecond), collecting what it reads:
    the access log's writer meets a full pipe over and over, as with a slow disk or log shipper."""

    def __init__(self) -> None:
        import os
        import threading

        r, w = os.pipe()
        self.stream = open(w, "w")
        self.got = bytearray()
        self._r = r
        self._end = b"--end--\n"
        self._done = threading.Event()
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        import os
        import time

        while self._end not in self.got:
            chunk = os.read(self._r, 4096)
            if not chunk:
                break
            self.got += chunk
            time.sleep(0.001)
        self._done.set()

    def end(self) -> list[str]:
        """Write an end marker straight to the pipe; the lines read before it."""
        import os

        os.write(self.stream.fileno(), self._end)
        assert self._done.wait(10), "the reader never saw the end marker"
        os.close(self._r)
        self.stream.close()
        return self.got.split(self._end)[0].decode().splitlines()


def lines_to(log: AccessLog, first: int, n: int) -> None:
    for i in range(first, first + n):
        log.write("c", "GET", b"/kv/%d" % i, "t1", "active", 1, "read", 200, 0.001, 0.002, b"r-%d" % i, "a")


def test_lines_reach_a_slow_pipe_whole_and_in_order_and_flush_waits_for_the_writer():
    """With a file descriptor the lines are written by the writer thread (``post``: the syscalls are off
    the loop); ``flush`` (``ProxyContext.stop``) returns only once every line queued so far is written."""
    pipe = SlowPipe()
    log = AccessLog(stream=pipe.stream)
    log.stamp()
    try:
        for k in range(40):                    # ~270 KiB: four times the pipe's 64 KiB
            lines_to(log, 100 * k, 100)
            log.post()
        lines_to(log, 4000, 7)                 # queued, not yet handed over: flush takes these too
        log.flush()                            # shutdown: all written when it returns
        got = pipe.end()                       # so the marker comes after the last line
    finally:
        log.close()
    assert log._thread is None
    rids = [ln.rsplit("rid=r-", 1)[1] for ln in got]
    assert rids == [str(i) for i in range(4000)] + [str(i) for i in range(4000, 4007)]


def test_the_writer_backlog_is_bounded_when_the_pipe_is_slow():
    """The loop hands lines over faster than the pipe drains: ``post`` waits once the backlog passes
    ``backlog_max`` (memory stays bounded; nothing is dropped)."""
    pipe = SlowPipe()
    log = AccessLog(stream=pipe.stream)
    log.backlog_max = 16 * 1024
    log.stamp()
    worst = 0
    try:
        for k in range(40):
            lines_to(log, 50 * k, 50)
            log.post()
            worst = max(worst, log._posted - log._written)
        log.flush()
        got = pipe.end()
    finally:
        log.close()
    assert worst <= 16 * 1024
    assert len(got) == 2000 and got[-1].endswith("rid=r-1999")


def test_a_line_the_stream_cannot_encode_is_escaped_not_its_batch_lost():
    """A partition name with a lone surrogate (JSON allows one) cannot be encoded strictly: the batch
    is encoded with backslash escapes rather than dropped, and the lines after it still go out."""
    pipe = SlowPipe()
    log = AccessLog(stream=pipe.stream)
    log.stamp()
    try:
        lines_to(log, 0, 3)
        log.write("c", "GET", b"/kv/x", "t\ud800", "active", 1, "read", 200, 0.001, 0.002, b"r-x", "a")
        log.post()
        lines_to(log, 3, 2)
        log.flush()
        got = pipe.end()
    finally:
        log.close()
    assert [ln.rsplit("rid=r-", 1)[1] for ln in got] == ["0", "1", "2", "x", "3", "4"]
    assert "partition=t\\ud800" in got[3]
