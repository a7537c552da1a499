"""RetryingStore (sidecar/control/retry.py): a store outage is retried for a bounded time, and a
transition whose answer was lost is recognised by its result instead of failing the job.
Pure logic over the in-memory consensus store, with an injected clock."""

from __future__ import annotations

import pytest

from gate import BackendError, ConsensusStore, MemoryConsensus, NotDraining, PartitionState
from sidecar.control.retry import RetryingStore


class Flaky:
    """A store whose next ``fail`` calls raise BackendError — before (``lost=False``) or
    after (``lost=True``: committed, answer lost) doing the work."""

    def __init__(self, store, fail: int = 0, lost: bool = False) -> None:
        self.store, self.fail, self.lost = store, fail, lost

    def __getattr__(self, name):
        real = getattr(self.store, name)

        async def call(*args, **kw):
            if self.fail > 0:
                self.fail -= 1
                if self.lost:
                    await real(*args, **kw)
                raise BackendError("No cluster leader")
            return await real(*args, **kw)
        return call


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    async def sleep(self, s: float) -> None:
        self.t += s


async def _store():
    inner = ConsensusStore(MemoryConsensus())
    await inner.set("t1", "a")
    return inner


async def test_outage_shorter_than_the_budget_is_absorbed():
    inner = await _store()
    clock = Clock()
    store = RetryingStore(Flaky(inner, fail=8), retry_s=15, clock=clock, sleep=clock.sleep)
    e = await store.begin("t1", "b")
    assert (await inner.state("t1")) == (PartitionState.draining("a", "b"), e)
    assert 0 < clock.t < 15


async def test_outage_longer_than_the_budget_reports_the_error():
    inner = await _store()
    clock = Clock()
    store = RetryingStore(Flaky(inner, fail=10_000), retry_s=15, clock=clock, sleep=clock.sleep)
    with pytest.raises(BackendError, match="No cluster leader"):
        await store.begin("t1", "b")
    assert clock.t <= 15


@pytest.mark.parametrize("op", ["begin", "enter_cutover", "complete", "abort"])
async def test_a_transition_whose_answer_was_lost_takes_its_epoch(op):
    inner = await _store()
    if op != "begin":
        await inner.begin("t1", "b")
    if op == "complete":
        await inner.enter_cutover("t1")
    clock = Clock()
    store = RetryingStore(Flaky(inner, fail=1, lost=True), retry_s=15, clock=clock, sleep=clock.sleep)
    args = ("t1", "b") if op == "begin" else ("t1",)
    epoch = await getattr(store, op)(*args)
    assert (await inner.state("t1"))[1] == epoch   # the first (committed) try's epoch


async def test_a_refusal_without_a_retry_is_not_second_guessed():
    inner = await _store()
    await inner.begin("t1", "b")
    await inner.enter_cutover("t1")
    store = RetryingStore(inner)
    with pytest.raises(NotDraining):
        await store.enter_cutover("t1")
