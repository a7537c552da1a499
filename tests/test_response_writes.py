"""Writes to the client per upstream read (issue 30): a response that arrives whole in one read
(nginx's 1 KiB answer) reaches the client in ONE ``transport.write`` — head and body together,
one syscall — and its bytes are exactly the re-framed head followed by the body. A response
spread over several reads costs one write per read, never one per piece. Runs on whichever build
is importable (compiled in place, or plain Python)."""

from __future__ import annotations

from typing import Any

from gate import PlacementTable
from tests._fake_transport import Harness, request, response, settle

NGINX = "Server: nginx/1.22.1\r\nDate: Sat, 05 Dec 2026 20:30:00 GMT\r\nConnection: keep-alive\r\n"


def _count_writes(transport: Any) -> list[bytes]:
    """Wrap ``transport.write`` (a FakeTransport, a plain Python object) to record each call."""
    calls: list[bytes] = []
    inner = transport.write

    def write(data: bytes) -> None:
        calls.append(bytes(data))
        inner(data)

    transport.write = write
    return calls


async def test_a_whole_response_in_one_read_is_one_client_write() -> None:
    h = Harness(PlacementTable({"t1": "a"}))
    c = h.client()
    c.send(request("GET"))
    await settle()
    up = h.pool.opened[0]
    up.take()
    c.take()
    calls = _count_writes(c.transport)
    body = b"y" * 1024
    up.reply(response(200, body, extra=NGINX))
    assert len(calls) == 1, [x[:40] for x in calls]
    head, _, got = calls[0].partition(b"\r\n\r\n")
    assert got == body
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 200 OK"
    assert sorted(lines[1:]) == sorted([b"Content-Type: text/plain", b"Server: nginx/1.22.1",
                                        b"Date: Sat, 05 Dec 2026 20:30:00 GMT", b"Content-Length: 1024"])
    # the next request on the same connections: again one write, the same bytes
    c.send(request("GET"))
    up.reply(response(200, body, extra=NGINX))
    assert len(calls) == 2 and calls[1] == calls[0]
    h.close()


async def test_a_response_over_several_reads_is_one_write_per_read() -> None:
    h = Harness(PlacementTable({"t1": "a"}))
    c = h.client()
    c.send(request("GET"))
    await settle()
    up = h.pool.opened[0]
    calls = _count_writes(c.transport)
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n"
    up.reply(raw)  # the head and two chunks: one write
    assert len(calls) == 1
    assert calls[0].endswith(b"\r\n\r\n3\r\nabc\r\n2\r\nde\r\n")
    up.reply(b"0\r\n\r\n")  # the last chunk: one more
    assert len(calls) == 2 and calls[1] == b"0\r\n\r\n"
    h.close()
