"""``Replica.on_push`` (issue 31): a pushed ``log/head`` is applied only when it continues the
log; a gap, a stale or duplicated push, an unparseable head never moves the table (nor the
epoch a participant acks) and never counts as a fresh read. Pure logic over MemoryConsensus."""

from __future__ import annotations

from gate import MemoryConsensus, Phase, Replica
from gate._consensus_store import HEAD, ConsensusStore


async def _setup():
    c = MemoryConsensus()
    s = ConsensusStore(c)
    await s.set("p", "a")
    await s.set("q", "a")
    r = Replica(c)
    await r.start(follow=False)
    return c, s, r


async def test_a_push_that_continues_the_log_is_applied_and_not_a_fresh_read():
    c, s, r = await _setup()
    read_at = r.last_read
    e = await s.begin("p", "b")
    head = await c.head(HEAD)
    assert await r.on_push(head) is True
    assert r.state("p") == (r.state("p")[0], e) and r.state("p")[0].phase is Phase.DRAINING
    assert r.current_epoch() == e and r.last_read == read_at
    assert await r.on_push(head) is True          # duplicated: nothing new
    assert r.updates == 1


async def test_a_push_past_a_missed_entry_is_not_applied():
    """The in-order guard: the cutover's push was lost, the next entry (another partition,
    a higher epoch) arrives; applying it would let the participant ack past the cutover."""
    c, s, r = await _setup()
    await s.begin("p", "b")
    await r.refresh()
    cut = await s.enter_cutover("p")              # its push is lost
    later = await s.set("q", "b")
    assert await r.on_push(await c.head(HEAD)) is False
    assert r.current_epoch() < cut and r.state("p")[0].phase is Phase.DRAINING
    await r.refresh()                             # the caller's Consul read fills the gap
    assert r.state("p")[0].phase is Phase.CUTOVER and r.current_epoch() == later


async def test_a_stale_push_and_an_unparseable_head_change_nothing():
    c, s, r = await _setup()
    old = await c.head(HEAD)
    await s.begin("p", "b")
    await r.refresh()
    assert await r.on_push(old) is True and r.state("p")[0].phase is Phase.DRAINING   # stale: ignored
    bad = type(old)(HEAD, b"{not json", old.seqno + 100)
    before = r.current_epoch()
    assert await r.on_push(bad) is False and r.current_epoch() == before
