"""Issue 19: a participant publishes a cutover's ack at once, and coalesces acks
of other transitions (an ack is a raft write; N of them per transition before).
Pure logic over the fakes of test_participant_unit."""

from __future__ import annotations

import asyncio

from tests.test_participant_unit import world  # noqa: F401 (fixture)


async def _spin(n: int = 10) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_non_cutover_acks_coalesce_and_a_cutover_acks_at_once(world):  # noqa: F811
    part, clock, consul, table, replicas, tracker = world
    part.ack_every_s = 30.0                      # nothing but a cutover can publish within the test
    writes = []
    orig = consul.acquire

    async def counting(key, value, sid):
        writes.append(value)
        return await orig(key, value, sid)
    consul.acquire = counting
    await part._join()
    acker = asyncio.create_task(part._ack_loop())
    await _spin()
    assert writes[-1] == str(int(table.current_epoch())).encode()   # the join's first publish: at once
    n0 = len(writes)
    for i in range(5):                           # five transitions no barrier waits for
        table.set(f"q{i}", "a")
        await _spin()
    assert len(writes) == n0                     # none published yet
    table.begin_migration("p1", "b")             # a draining epoch: the pre-barrier waits for it
    edrain = table.state("p1")[1]
    await _spin()
    assert len(writes) == n0 + 1 and int(writes[-1]) >= edrain   # at once, covering the five before it
    table.enter_cutover("p1")
    ecut = table.state("p1")[1]
    await _spin()
    assert len(writes) == n0 + 2 and int(writes[-1]) >= ecut   # the cutover: at once too
    acker.cancel()
    await asyncio.gather(acker, return_exceptions=True)


async def test_coalesced_acks_are_published_after_ack_every_s(world):  # noqa: F811
    part, clock, consul, table, *_ = world
    part.ack_every_s = 0.05
    await part._join()
    acker = asyncio.create_task(part._ack_loop())
    await _spin()
    e = table.set("q", "a")
    for _ in range(100):
        if part.published >= e:
            break
        await asyncio.sleep(0.01)
    assert part.published >= e
    acker.cancel()
    await asyncio.gather(acker, return_exceptions=True)
