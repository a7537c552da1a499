"""The HTTP/1.1 response half's per-request shortcuts (issue 30, stop 39), on whichever build runs:
the upstream connection's response head reused for the next response, the request counter's
one-entry cache in ``Stats``, and the access line written in C with a one-entry cache of its
middle. Each must give exactly what the plain path gives."""

from __future__ import annotations

import io

from gate import PlacementTable
from sidecar._log import AccessLog, escape
from sidecar._metrics import Metrics
from sidecar.proxy.stats import Stats
from tests._fake_transport import Harness, header, request, settle, status_of


async def test_a_pooled_connection_s_next_response_starts_from_an_empty_head():
    """The head object is emptied and reused for the connection's next response: nothing of the
    first (Content-Length, Content-Type, a forwarded field) may reach the second one's client. (The
    second has no framing field: a Content-Length left over would be relayed as its own.)"""
    h = Harness(PlacementTable({"t1": "a"}))
    try:
        c = h.client()
        c.send(request("GET"))
        await settle()
        up = h.upstreams("a")[-1]
        up.reply(b"HTTP/1.1 200 OK\r\nContent-Type: text/x-first\r\nContent-Length: 3\r\nX-First: 1\r\n\r\nabc")
        first = c.take()
        assert status_of(first) == 200 and header(first, "X-First") == "1" and first.endswith(b"abc")
        c.send(request("GET"))
        await settle()
        assert h.upstreams("a")[-1] is up  # the same pooled connection
        up.reply(b"HTTP/1.1 201 Created\r\n\r\nxy")  # no framing field: its body ends when the upstream closes
        up.drop()
        await settle()
        second = c.take()
        assert status_of(second) == 201
        assert header(second, "Content-Length") is None and header(second, "Content-Type") is None
        assert header(second, "X-First") is None
        assert header(second, "Transfer-Encoding") == "chunked" and second.endswith(b"2\r\nxy\r\n0\r\n\r\n")
    finally:
        h.close()


def test_request_counts_are_exact_when_kind_phase_and_outcome_alternate():
    s = Stats(Metrics())
    want: dict[tuple[str, str, str], int] = {}
    seq = [(False, "active", "ok"), (False, "active", "ok"), (True, "active", "ok"), (False, "active", "ok"),
           (False, "cutover", "ok"), (False, "active", "held_ok"), (True, "active", "ok"), (True, "active", "ok"),
           (False, "active", "ok")] * 3
    for w, phase, outcome in seq:
        s.record(w, phase, outcome, 1.0, 0.0, 0.0, 0.0, 1.001)
        key = ("write" if w else "read", phase, outcome)
        want[key] = want.get(key, 0) + 1
    assert s.requests() == want
    s.flush()
    got = {(x.labels["kind"], x.labels["phase"], x.labels["outcome"]): int(x.value)
           for m in s.metrics.requests.collect() for x in m.samples if x.name.endswith("_total") and x.value}
    assert got == want
    assert s.requests() == {} and all(not any(x.counts) for x in s.hist_r + s.hist_w)
    s.record(False, "active", "ok", 1.0, 0.0, 0.0, 0.0, 1.001)  # after a flush: counted again, once
    assert s.requests() == {("read", "active", "ok"): 1}


def _want(ts, client, method, path, partition, phase, epoch, decision, status, up_s, total_s, rid, node):
    """The line as the plain %-formatting writes it (the format the tests pin)."""
    return (f'{ts} {client} "{escape(method.encode("latin-1"))} {escape(path)}" {status} '
            f'partition={partition or "-"} phase={phase} epoch={epoch} decision={decision} '
            f'upstream={node or "-"} up_ms=' + "%.2f total_ms=%.2f rid=%s" % (up_s * 1000, total_s * 1000,
                                                                           escape(rid)))


def test_access_lines_equal_the_formatted_text_as_their_fields_change():
    log = AccessLog(stream=io.StringIO())
    log.stamp()
    base = ["10.0.0.1:5", "GET", b"/kv/a", "t1", "active", 7, "read", 200, 0.00123, 0.00456, b"rid-1", "a"]
    rows = [list(base), list(base)]
    for i, v in enumerate([["10.0.0.2:6"], ["PUT"], [b"/kv/b"], ["t2"], ["cutover"], [8], ["write"], [503],
                           [0.0], [0.0], [None], ["b"]]):
        r = list(base)
        r[i] = v[0]
        rows += [r, list(base), r, r]
    rows += [base[:10] + [b"", "a"], base[:10] + [b'r"id\\x', "a"], base[:10] + [b"r id\x85", "a"],
             base[:3] + ["t\u00e9"] + base[4:], base[:2] + [b"/kv/\xff\x00 q"] + base[3:],
             base[:11] + [""], base[:3] + [None] + base[4:], base[:8] + [2.5e-5, 12345.678901] + base[10:],
             base[:8] + [-1.0, float("nan")] + base[10:], base]
    for r in rows:
        log.write(*r)
    assert log.rows == [_want(log._ts, *r) for r in rows]
    log._ts = ""  # before the first stamp
    log.write(*base)
    assert log.rows[-1] == _want("", *base)
