"""The application's check of the mover credential (``gate.MoverAuth``) under concurrent calls.

Found by ``scripts/fleet --check`` in a fresh-clone CI run: ``drain c --parallel 2`` sent two
export calls to node c at once, before c had read the credential; the second call found the
first one's fetch in flight, counted it against the once-a-second bound and got a 401, and
its job failed. Calls that arrive during a fetch now wait for it (the first test fails on
the code before); the bound on fetches for unknown values still holds (the second).
"""

from __future__ import annotations

import asyncio

from gate import BackendError, MoverAuth

TOKEN = "mover-credential-0123456789abcdef"


async def test_calls_arriving_during_the_first_fetch_share_it() -> None:
    release = asyncio.Event()
    fetches = 0

    async def fetch() -> str:
        nonlocal fetches
        fetches += 1
        await release.wait()   # the store answers only once both calls are in
        return TOKEN

    auth = MoverAuth(fetch=fetch)
    first = asyncio.create_task(auth.verify(TOKEN))
    second = asyncio.create_task(auth.verify(TOKEN))
    while fetches == 0:
        await asyncio.sleep(0)
    for _ in range(5):   # let the second call reach its decision while the fetch is pending
        await asyncio.sleep(0)
    release.set()
    assert await first is True
    assert await second is True
    assert fetches == 1


async def test_unknown_values_still_fetch_at_most_once_a_second() -> None:
    fetches = 0

    async def fetch() -> str:
        nonlocal fetches
        fetches += 1
        return TOKEN

    auth = MoverAuth(fetch=fetch)
    assert await auth.verify("wrong-1") is False
    assert await auth.verify("wrong-2") is False   # within the second: refused without a fetch
    assert fetches == 1
    assert await auth.verify(TOKEN) is True        # the cached value still verifies


async def test_a_store_error_refuses_every_waiting_call() -> None:
    release = asyncio.Event()

    async def fetch() -> str:
        await release.wait()
        raise BackendError("consul down")

    auth = MoverAuth(fetch=fetch)
    calls = [asyncio.create_task(auth.verify(TOKEN)) for _ in range(3)]
    for _ in range(5):
        await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*calls) == [False, False, False]
