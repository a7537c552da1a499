"""The HTTP/2 side of the hostile fuzz test (tests/test_hostile_fuzz_h2.py): what a
hostile HTTP/2 client sends, drawn by hypothesis, and a client that sends it.

One example is a connection carrying one to three streams, sent interleaved
(``concurrent``) or each after the previous one ended (``sequential``: that is
what reuses a pooled HTTP/1.1 connection, the desync's shape). A stream is a
HEADERS block — split over CONTINUATION frames or not; pseudo-header values
hostile or not; forged stamps, connection-specific fields, control characters
— then DATA frames, and an end: END_STREAM on HEADERS, on the last DATA, on
trailers (carrying stamp names), or none; a declared ``content-length`` that
matches the DATA or not; a RST_STREAM at any step; the connection dropped at
any step. The client is ``h2`` with outbound checks off, so it sends all that.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events
from h2.exceptions import H2Error
from hypothesis import strategies as st

WRITES = ("POST", "PUT", "PATCH", "DELETE")
SMUGGLE = (b"PUT /kv/smuggled HTTP/1.1\r\nHost: app\r\nX-Partition: t3\r\nX-Placement: a\r\n"
           b"X-Placement-Epoch: 1\r\nContent-Length: 0\r\n\r\n")

# A stream is well-formed apart from the stamp forgeries and odd-but-legal fields (BENIGN), or,
# one time in three, hostile in its method, path, fields or declared length: a stream refused
# outright (or, with h2's checks on, a connection ended by GOAWAY) reaches no node, and the
# invariant is about what does.
GOOD_PATHS = st.one_of(
    st.sampled_from([b"/kv/k", b"/kv/k?x=1", b"/a/../kv/k", b"//kv//k", b"/%6Bv/k", b"/kv/%2e/k"]),
    st.text("abcxyz/.%0123456789AF-~", min_size=1, max_size=20).map(lambda s: b"/" + s.encode()),
)
BAD_PATHS = st.sampled_from([b"*", b"/kv/%zz", b"/_epochgate/export", b"/%5Fepochgate/export", b"/kv/k HTTP/1.1",
                             b"/kv/k\x0b/_epochgate/x", b"/kv/k\r\n\r\n" + SMUGGLE, b"http://app/kv/k", b"",
                             b"kv/k", "/kv/é".encode()])
GOOD_METHODS = st.sampled_from([b"GET", b"HEAD", b"OPTIONS", b"POST", b"PUT", b"PATCH", b"DELETE", b"GET", b"PUT"])
BAD_METHODS = st.sampled_from([b"G T", b"PUT /kv/smuggled HTTP/1.1\r\nX:", b"get", b"CONNECT", b"GET\x00"])
BENIGN = st.sampled_from([
    (b"x-partition", b"t3"), (b"x-placement", b"a"), (b"x-placement-epoch", b"1"), (b"x-placement-epoch", b"99"),
    (b"host", b"other"), (b"te", b"trailers"), (b"cookie", b"a=1"), (b"cookie", b"b=2"), (b"x-request-id", b"fixed"),
    (b"x-partition-key", b"t1"), (b"x-ok", b"a\tb c"), (b"x-placement-node", b"c"), (b"x-hi", "é".encode()),
])
HOSTILE = st.sampled_from([
    (b"content-length", b"5"), (b"content-length", b"x"), (b"transfer-encoding", b"chunked"),
    (b"connection", b"close"), (b"upgrade", b"websocket, h2c"), (b"te", b"gzip"), (b"keep-alive", b"timeout=1"),
    (b"x-a", b"1\r\n\r\n" + SMUGGLE), (b"x-a", b"a\x00b"), (b"x-a", b" lead"), (b"X-Upper", b"1"),
    (b"x a", b"1"), (b":evil", b"1"), (b"x-a", b"\x7f"), (b"expect", b"100-continue"), (b"x-a\r\nx-b", b"1"),
])
TRAILERS = [(b"x-trailer", b"1"), (b"x-placement-epoch", b"99"), (b"x-partition", b"t3"), (b"x-fuzz-id", b"forged")]


@st.composite
def one_stream(draw: Any) -> dict[str, Any]:
    hostile = draw(st.sampled_from(["", "", "", "", "method", "path", "field", "length"]))
    body = draw(st.one_of(st.just(b""), st.binary(max_size=120), st.just(SMUGGLE)))
    extra = draw(st.lists(BENIGN, max_size=2))
    if hostile == "field":
        extra.insert(draw(st.integers(0, len(extra))), draw(HOSTILE))
    return {
        "method": draw(BAD_METHODS if hostile == "method" else GOOD_METHODS),
        "path": draw(BAD_PATHS if hostile == "path" else GOOD_PATHS),
        "partition": draw(st.sampled_from(["t1", "t2", "t3", "t4", "t1", "t2", None, "zz"])),
        "body": body,
        "declared": draw(st.sampled_from(["more", "less", "zero"] if hostile == "length" else [None, "exact"])),
        "end": draw(st.sampled_from(["data", "data", "data", "headers", "headers", "trailers", "none"])),
        "extra": extra,
        "split": draw(st.sampled_from([None, None, 5, 9, 40])),          # CONTINUATION fragment size
        "cuts": draw(st.lists(st.integers(1, 120), max_size=3)),         # DATA frame boundaries
        "reset_at": draw(st.one_of(st.none(), st.none(), st.none(), st.integers(0, 5))),  # RST_STREAM before step N
    }


@st.composite
def desync_streams(draw: Any) -> list[dict[str, Any]]:
    """The desync's shape, drawn often on purpose (random draws seldom line it up): a read to an
    HTTP/1.1 node declaring more body than it sends (its stream ended by HEADERS or by trailers),
    then more streams to the same node, each sent after the previous one's answer."""
    first = draw(one_stream())
    if not first["body"]:
        first["body"] = SMUGGLE
    first.update(method=draw(st.sampled_from([b"GET", b"HEAD"])), partition=draw(st.sampled_from(["t1", "t3"])),
                 declared=draw(st.sampled_from(["exact", "more"])), end=draw(st.sampled_from(["headers", "trailers"])),
                 reset_at=None)
    rest = draw(st.lists(one_stream(), min_size=1, max_size=2))
    for s in rest:
        s["partition"] = draw(st.sampled_from(["t1", "t3"]))
    return [first, *rest]


EXAMPLE = st.one_of(
    st.fixed_dictionaries({
        "streams": st.lists(one_stream(), min_size=1, max_size=3),
        "mode": st.sampled_from(["concurrent", "sequential"]),
        "h2_checks": st.booleans(),   # the sidecar's h2 with its inbound checks on, or off (as before h2 4.3)
        "drop_at": st.one_of(st.none(), st.none(), st.none(), st.integers(0, 12)),  # connection closed before step N
    }),
    st.fixed_dictionaries({
        "streams": desync_streams(), "mode": st.just("sequential"), "h2_checks": st.booleans(), "drop_at": st.none(),
    }),
)


def declared_length(s: dict[str, Any]) -> int | None:
    n = len(s["body"])
    return {None: None, "exact": n, "more": n + 3, "less": max(n - 1, 0) if n else None, "zero": 0}[s["declared"]]


def partition_of(s: dict[str, Any]) -> str | None:
    """The partition key the stream names (None when none, or two different ones)."""
    keys = {v.decode() for k, v in head(s, "") if k == b"x-partition-key"}
    return keys.pop() if len(keys) == 1 else None


def head(s: dict[str, Any], fuzz_id: str) -> list[tuple[bytes, bytes]]:
    out = [(b":method", s["method"]), (b":path", s["path"]), (b":authority", b"app"), (b":scheme", b"http"),
           (b"x-fuzz-id", fuzz_id.encode())]
    if s["partition"] is not None:
        out.append((b"x-partition-key", s["partition"].encode()))
    n = declared_length(s)
    if n is not None:
        out.append((b"content-length", b"%d" % n))
    return out + list(s["extra"])


def steps(s: dict[str, Any], sid: int, fuzz_id: str) -> list[tuple[str, Any, int]]:
    """The frames of one stream, in order: ("headers", (fields, end)), ("data", (bytes, end)),
    ("trailers", fields), with ("reset", None) inserted at ``reset_at``."""
    body = s["body"] if s["end"] != "headers" else b""
    out: list[tuple[str, Any]] = [("headers", (head(s, fuzz_id), s["end"] == "headers"))]
    bounds = sorted({c for c in s["cuts"] if c < len(body)}) + [len(body)]
    last = 0
    for i, b in enumerate(bounds):
        if b > last or (i == len(bounds) - 1 and s["end"] == "data"):
            out.append(("data", (body[last:b], s["end"] == "data" and i == len(bounds) - 1)))
        last = b
    if s["end"] == "trailers":
        out.append(("trailers", TRAILERS))
    if s["reset_at"] is not None and s["reset_at"] < len(out) + 1:
        out.insert(max(s["reset_at"], 1), ("reset", None))
    return [(kind, arg, sid) for kind, arg in out]


@dataclass
class FuzzClient:
    """Sends an example's frames; reads the sidecar's answers until every stream it ended is done."""

    port: int
    conn: Any = None
    reader: Any = None
    writer: Any = None
    done: set[int] = field(default_factory=set)     # streams answered in full, or reset either way
    ended: set[int] = field(default_factory=set)    # streams the client ended (or reset)
    outcome: dict[int, str] = field(default_factory=dict)  # what each stream got (for the statistics)
    closed: bool = False
    _changed: Any = None

    async def open(self) -> "FuzzClient":
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding=None, validate_outbound_headers=False,
            normalize_outbound_headers=False, validate_inbound_headers=False))
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self._changed = asyncio.Event()
        self.conn.initiate_connection()
        self.flush()
        self._task = asyncio.ensure_future(self._read())
        return self

    def flush(self) -> None:
        if not self.closed:
            self.writer.write(self.conn.data_to_send())

    async def _read(self) -> None:
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                try:
                    events = self.conn.receive_data(data)
                except H2Error:
                    break
                for e in events:
                    t = type(e)
                    if t is h2.events.DataReceived:
                        self.conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
                    elif t is h2.events.ResponseReceived:
                        self.outcome[e.stream_id] = dict(e.headers).get(b":status", b"?").decode()
                    elif t is h2.events.StreamEnded or t is h2.events.StreamReset:
                        self.done.add(e.stream_id)
                        if t is h2.events.StreamReset:
                            self.outcome.setdefault(e.stream_id, f"reset {int(e.error_code)}")
                    elif t is h2.events.ConnectionTerminated:
                        self.closed = True
                        self.outcome[0] = f"goaway {int(e.error_code)}"
                self.flush()
                self._changed.set()
        except (ConnectionError, OSError):
            pass
        self.closed = True
        self._changed.set()

    def step(self, kind: str, arg: Any, sid: int) -> None:
        c = self.conn
        try:
            if kind == "headers":
                fields, end = arg
                c.send_headers(sid, fields, end_stream=end)
                if end:
                    self.ended.add(sid)
            elif kind == "data":
                data, end = arg
                c.send_data(sid, data, end_stream=end)
                if end:
                    self.ended.add(sid)
            elif kind == "trailers":
                c.send_headers(sid, arg, end_stream=True)
                self.ended.add(sid)
            elif kind == "reset":
                c.reset_stream(sid)
                self.ended.add(sid)
                self.done.add(sid)
        except H2Error:
            self.done.add(sid)  # the stream was closed meanwhile (the sidecar answered or reset it)
        self.flush()

    async def wait_done(self, sids: set[int], timeout: float = 10.0) -> None:
        """Until each of ``sids`` is done, or the connection is gone."""
        async def wait() -> None:
            while not self.closed and not sids <= self.done:
                self._changed.clear()
                await self._changed.wait()
        await asyncio.wait_for(wait(), timeout)

    async def close(self) -> None:
        self.closed = True
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass
        await self._task


async def send_example(port: int, ex: dict[str, Any], ids: list[str]) -> dict[int, str]:
    """Send one example on one connection and return once it has played out (every ended stream
    answered, or the connection dropped); unfinished streams are cut by the close."""
    c = await FuzzClient(port).open()
    try:
        plans = [steps(s, 1 + 2 * i, fid) for i, (s, fid) in enumerate(zip(ex["streams"], ids))]
        splits = {1 + 2 * i: s["split"] for i, s in enumerate(ex["streams"])}
        if ex["mode"] == "concurrent":
            order = [x for x in itertools.chain.from_iterable(itertools.zip_longest(*plans)) if x is not None]
            groups = [order]
        else:
            groups = plans
        n = 0
        for group in groups:
            for kind, arg, sid in group:
                if ex["drop_at"] is not None and n >= ex["drop_at"]:
                    c.outcome[-1] = "dropped"
                    return c.outcome
                n += 1
                if c.closed:
                    return c.outcome
                split = splits[sid] if kind in ("headers", "trailers") else None
                if split is not None:  # a header block in CONTINUATION fragments of this size
                    c.conn.max_outbound_frame_size = split
                c.step(kind, arg, sid)
                c.conn.max_outbound_frame_size = c.conn.remote_settings.max_frame_size
            await c.wait_done({sid for _, _, sid in group} & c.ended)
        await c.wait_done(set(c.ended))
    finally:
        await c.close()
    return c.outcome
