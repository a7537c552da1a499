"""Hostile input over HTTP/2 — the fuzz invariant of tests/test_hostile_fuzz.py for
HTTP/2 clients (issue 26), in front of HTTP/1.1 nodes (h11: a strict parser other
than ours) and an ``h2c://`` node (``h2`` with its inbound checks on).

Hypothesis draws connections of one to three streams (tests/_hostile_h2.py):
HEADERS with and without END_STREAM, split over CONTINUATION frames or not,
hostile pseudo-header values, forged stamps and connection-specific fields,
declared lengths that disagree with the DATA, trailers carrying stamp names,
RST_STREAM at every step, the connection dropped at every step, streams
interleaved or each after the previous one's answer (which reuses a pooled
HTTP/1.1 connection). Whatever the client sends, every request a node receives

* was sent by the client: exactly one ``x-fuzz-id`` of this example, none twice,
  and a body that is (a prefix of, when cut) what the client sent for it;
* carries exactly one stamp, the one the table gives its partition, on that
  placement's node, and no request trailers;
* is a write only if admitted: never for a partition held in cutover, and no
  more writes than admissions;

and no node saw bytes it could not parse. It runs on both HTTP/2 engines (libnghttp2, h2:
tests/_h2_engines.py). CI runs a few examples
(``EPOCHGATE_FUZZ_H2_EXAMPLES``, default 20); ``scripts/fuzz-hostile`` runs
thousands.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings

from tests._h2_engines import h2_checks_off
from tests._h2_util import H2Upstream
from tests._hostile import H11Upstream
from tests._hostile_h2 import EXAMPLE, WRITES, partition_of, send_example
from tests._sidecar_util import config, write_placement
from tests.test_hostile_fuzz import Harness

EXAMPLES = int(os.environ.get("EPOCHGATE_FUZZ_H2_EXAMPLES", "20"))
PLACEMENT = {"t1": "a", "t2": "c", "t3": "a", "t4": "c"}
CUTOVER = ("t3", "t4")   # writes to these are refused (hold_max=0: never held)
STAMP = ("x-partition", "x-placement", "x-placement-epoch")


class H2Harness(Harness):
    """A sidecar, two h11 nodes (a, b) and an h2c node (c) on a loop in a thread."""

    async def _start(self) -> None:
        from sidecar._sidecar import Sidecar

        self.a = await H11Upstream("a", early_reads=True).start()  # (answers reads before their body)
        self.b = await H11Upstream("b").start()
        self.c = await H2Upstream("c").start()
        p = write_placement(self.tmp_path / "p.toml", {"a": self.a.url, "b": self.b.url, "c": self.c.url}, PLACEMENT)
        self.sc = Sidecar(config(p, hold_max=0, upstream_idle=0.05, head_timeout=1.0, read_timeout=1.0))
        await self.sc.start()
        for part in CUTOVER:
            await self.sc.store.begin(part, "b")
            await self.sc.store.enter_cutover(part)

    async def _stop(self) -> None:
        await super()._stop()
        await self.c.stop()

    def quiet(self) -> None:
        """Every node has read all it will ever get: the sidecar's client side is gone, no
        upstream stream is open, and every node connection has closed."""
        async def settle() -> None:
            ctx = self.sc.ctx
            async def drained() -> None:
                while ctx.clients or any(c.legs for lst in self.h2conns() for c in lst):
                    await asyncio.sleep(0.005)
            await asyncio.wait_for(drained(), 15)
            if ctx.h2pool is not None:
                ctx.h2pool.close()  # h2c connections close now, not after --upstream-idle
            await self.a.quiet(15)
            await self.b.quiet(15)
            await self.c.quiet(15)
        self.call(settle())

    def h2conns(self) -> list[Any]:
        pool = self.sc.ctx.h2pool
        return [] if pool is None else list(pool.conns.values())

    def send(self, ex: dict[str, Any], ids: list[str]) -> dict[int, str]:
        # the engine's checks on or off for this connection (off: h2 without its inbound
        # checks, only the sidecar's own stand, as with an h2 before 4.3); read when the
        # connection is accepted
        with pytest.MonkeyPatch.context() as mp:
            h2_checks_off(mp, on=ex["h2_checks"])
            return self.call(send_example(self.sc.port, ex, ids))


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    h = H2Harness(tmp_path_factory.mktemp("fuzz-h2"))
    yield h
    h.close()


def _received(h: H2Harness, before: dict[str, int]) -> list[tuple[str, str, dict[str, list[str]], bytes | None, bool]]:
    """(node, method, fields by name, body or None (h2c: only its length is kept), complete)."""
    out = []
    for up in (h.a, h.b):
        for s in up.seen[before[up.name]:]:
            fields: dict[str, list[str]] = {}
            for k, v in s.headers:
                fields.setdefault(k, []).append(v)
            out.append((up.name, s.method, fields, s.body, True))
    for rec in h.c.seen[before["c"]:]:
        fields = {}
        for k, v in rec["fields"]:
            fields.setdefault(k, []).append(v)
        assert rec["trailers"] is None, f"request trailers reached the h2c node: {rec['trailers']}"
        out.append(("c", fields[":method"][0], fields, None, not rec.get("reset")))
    return out


@settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 100,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(ex=EXAMPLE)
def test_every_node_request_from_h2_was_sent_stamped_and_admitted(harness, h2_engine, ex):
    h = harness
    tag = uuid.uuid4().hex[:8]
    ids = [f"{tag}-{i}" for i in range(len(ex["streams"]))]
    sent = dict(zip(ids, ex["streams"]))
    before = {"a": len(h.a.seen), "b": len(h.b.seen), "c": len(h.c.seen)}
    errors_before = {up.name: len(up.errors) for up in (h.a, h.b, h.c)}
    admitted_before = h.admitted()
    outcome = h.send(ex, ids)
    h.quiet()
    for sid, what in sorted(outcome.items()):
        event(f"client: {'connection' if sid <= 0 else 'stream'} {what}")
    for up in (h.a, h.b, h.c):
        assert up.errors[errors_before[up.name]:] == [], f"node {up.name} could not parse what it was sent"
    seen_ids: set[str] = set()
    writes = 0
    got = _received(h, before)
    event(f"streams {len(ex['streams'])}, reached a node {len(got)}")
    for node, method, fields, body, complete in got:
        event(f"node {node}: {'write' if method in WRITES else 'read'}{'' if complete else ' (cut)'}")
        fid = fields.get("x-fuzz-id", [])
        assert len(fid) == 1 and fid[0] in sent, f"a request nobody sent reached {node}: {method} {fields}"
        assert fid[0] not in seen_ids, f"{fid[0]} delivered twice"
        seen_ids.add(fid[0])
        s = sent[fid[0]]
        p = partition_of(s)
        assert p in PLACEMENT
        _, epoch = h.sc.source.state(p)
        for name in STAMP:
            assert len(fields.get(name, [])) == 1, f"{name} not exactly once: {fields.get(name)}"
        assert fields["x-partition"] == [p]
        assert fields["x-placement"] == [PLACEMENT[p]] == [node]
        assert fields["x-placement-epoch"] == [str(int(epoch))]
        assert fields.get("x-trailer", []) == []
        if body is not None:
            sent_body = s["body"] if s["end"] != "headers" else b""
            assert sent_body.startswith(body), "the body changed on the way"
            if complete and s["end"] in ("data", "trailers"):
                assert body == sent_body
        if method in WRITES:
            writes += 1
            assert p not in CUTOVER, "a write reached a node while its partition was in cutover"
    assert writes <= h.admitted() - admitted_before
    assert h.sc.ctx.budget.used == 0  # nothing kept once every stream finished
    assert h.inflight_settled() == 0, "an admitted write still counts in flight after its stream ended"
