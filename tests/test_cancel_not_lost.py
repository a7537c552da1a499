"""A cancel is never lost on the way to the socket, and a stopped replica stops.

Found by ``scripts/fleet --check`` hanging after "check passed": SIGTERM reached the
sidecar and the controller as the script also stopped Consul; each drained, then waited
for ever in ``Replica.stop()``. Its follow task was "cancelling" but still looping: the
cancel had landed in the same loop turn as a refused connection to the dead Consul, and
Python 3.11's ``asyncio.wait_for`` then returns the inner result (raises its ``OSError``)
instead of the ``CancelledError`` — the long-poll client made that a ``BackendError`` and
the follow loop retried. Two guards, each tested here without the other's help:

* ``LongPollClient.get`` uses ``asyncio.timeout`` (the await runs in the caller's task; a
  cancel cannot be traded for the inner result) — with ``wait_for`` back, the first test
  fails ("swallowed");
* ``Replica.stop()`` also sets a flag the follow loop checks, so a cancel swallowed by
  anything under it (a library, a future regression) still ends the loop — without the
  flag, the second test's ``stop()`` does not return.
"""

from __future__ import annotations

import asyncio

import pytest

from gate import BackendError, MemoryConsensus, Replica
from gate._longpoll import LongPollClient


async def test_a_cancel_landing_as_the_connection_fails_is_not_lost() -> None:
    client = LongPollClient("http://127.0.0.1:9")
    outer: asyncio.Task[str] | None = None

    async def refused_connect():  # the cancel arrives in the same loop turn as the refusal
        assert outer is not None
        outer.cancel()
        raise ConnectionRefusedError(111, "Connection refused")

    client._connect = refused_connect  # type: ignore[method-assign]

    async def follow_once() -> str:
        try:
            await client.get("/v1/kv/x?index=1&wait=1s", 5.0)
        except BackendError:
            await asyncio.sleep(0)  # the caller's next await: a pending cancel must surface here
            return "swallowed"
        return "answered"

    outer = asyncio.create_task(follow_once())
    with pytest.raises(asyncio.CancelledError):
        await outer
    await client.close()


class SwallowingConsensus(MemoryConsensus):
    """Its blocking query turns a cancel into a store error, as the 3.11 race did."""

    def __init__(self) -> None:
        super().__init__()
        self.watching = asyncio.Event()
        self.swallowed = 0
        self.swallow = True

    async def watch(self, key: str, index: int, wait_s: float):
        self.watching.set()
        try:
            await asyncio.sleep(wait_s)
        except asyncio.CancelledError:
            if not self.swallow:
                raise
            self.swallowed += 1
            raise BackendError("connection refused") from None
        return await super().watch(key, index, 0.001)


async def test_a_stopped_replica_stops_even_if_a_cancel_is_swallowed() -> None:
    consensus = SwallowingConsensus()
    sleeps: list[float] = []

    async def short_sleep(s: float) -> None:  # the retry back-off, shortened (still a real await)
        sleeps.append(s)
        await asyncio.sleep(0.01)

    replica = Replica(consensus, wait_s=0.5, sleep=short_sleep)
    await replica.start()
    await consensus.watching.wait()
    follow = replica._task
    stop = asyncio.create_task(replica.stop())
    done, _ = await asyncio.wait({stop}, timeout=5.0)  # bounded: a regression fails, it does not hang
    consensus.swallow = False
    if not done:  # clean up the loop that would not stop, then fail
        assert follow is not None
        follow.cancel()
        await asyncio.gather(follow, stop, return_exceptions=True)
    assert stop in done, "Replica.stop() did not return after its follow task swallowed the cancel"
    assert consensus.swallowed == 1  # the cancel really was swallowed below the loop
    assert replica._task is None
