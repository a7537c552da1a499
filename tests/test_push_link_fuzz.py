"""Fuzz invariant over the push link's message handling (issue 31, gate/_push_link.py +
``Replica.on_push``): whatever the controller's side delivers — pushes lost, duplicated,
reordered, from a stale (lower) fence, interleaved with the participant's acks — every ack the
link writes is "applied and drained up to E" for real: every log entry at or below E was
applied, in log order, with no gap. Pure logic: a MemoryConsensus log and a stand-in stream.

Fails with the in-order check removed from ``ReplicaPush.on_push`` (a push past a lost entry
would be applied and its epoch acked).
"""

from __future__ import annotations

import asyncio

import grpc
from hypothesis import HealthCheck, given, settings, strategies as st

from gate import Replica
from gate._consensus_store import HEAD
from gate._log_entry import decode_head
from gate._push_link import PushLink
from gate.pb.epochgate.v1 import epochgate_pb2 as pb

from .test_push_replica import _setup

SCRIPT = [("begin", "p", "b"), ("enter_cutover", "p"), ("complete", "p"), ("begin", "q", "b"),
          ("enter_cutover", "q"), ("complete", "q"), ("begin", "p", "a"), ("enter_cutover", "p")]


class _Call:
    """The participant's end of one stream: hands the link the fuzzed pushes, checks each ack."""

    def __init__(self, link: PushLink, replica: Replica, pushes: list, log: list[tuple[int, int]], applied: list[int]):
        self.link, self.replica, self.pushes, self.log, self.applied = link, replica, pushes, log, applied
        self.acks: list[int] = []
        self.violations: list[str] = []

    async def write(self, ack: pb.FleetAck) -> None:
        if ack.fence == 0:
            return   # the hello
        e = ack.epoch
        missing = {seq for seq, seqno in self.log if seqno <= e} - set(self.applied)
        if missing or e > self.replica.current_epoch():
            # raised in the link's writer task, which the link only logs: the driver fails on it
            self.violations.append(f"acked {e} without applying seqs {sorted(missing)}")
            raise AssertionError(self.violations[-1])
        self.acks.append(e)

    async def read(self):
        # the participant's ack loop runs between pushes: it acks what it applied and drained
        self.link.ack(self.replica.current_epoch())
        for _ in range(5):   # let the link's writer send it (no I/O here: a few loop turns)
            await asyncio.sleep(0)
        if not self.pushes:
            return grpc.aio.EOF
        return self.pushes.pop(0)

    def cancel(self) -> None:
        pass


class _Channel:
    def __init__(self, call: _Call) -> None:
        self.call = call

    def stream_stream(self, *a, **kw):
        return lambda metadata=None: self.call


async def _run(order: list[tuple[int, int]], refresh_at: int | None) -> None:
    c, s, r = await _setup()   # partitions p and q on a; a replica that has read them
    applied: list[int] = list(range(1, r.seq + 1))
    orig = r._apply

    def apply(entry, epoch):
        assert entry.seq == (applied[-1] if applied else 0) + 1, f"applied seq {entry.seq} after {applied[-1:]}"
        applied.append(entry.seq)
        orig(entry, epoch)
    r._apply = apply
    heads, log = [], []
    for op, *args in SCRIPT:
        await getattr(s, op)(*args)
        h = await c.head(HEAD)
        heads.append(h)
        log.append((decode_head(h.value)[-1].seq, h.seqno))
    link = PushLink("unused", "s0", "sess", r, acked=r.current_epoch, on_change=lambda up: None)
    pushes = [pb.FleetPush(fence=f, index=heads[i].seqno, head=heads[i].value) for i, f in order]
    call = _Call(link, r, pushes, log, applied)
    k = 0
    while call.pushes:   # a refused (stale-fence) push ends the stream: the link dials again
        if refresh_at is not None and k == refresh_at:
            await r.refresh()   # the participant's own Consul read: the whole log, in order
        await link._follow(_Channel(call))
        assert not call.violations, call.violations
        k += 1
    assert applied == list(range(1, len(applied) + 1))
    assert call.acks or not order, "no ack was written: the check above never ran"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order=st.lists(st.tuples(st.integers(0, len(SCRIPT) - 1), st.integers(1, 3)), max_size=24),
       refresh_at=st.none() | st.integers(0, 3))
def test_no_ack_passes_an_entry_not_applied(order, refresh_at):
    asyncio.run(_run(order, refresh_at))
