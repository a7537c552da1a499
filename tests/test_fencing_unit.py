"""The fencing pieces on their own (gate/_fence.py, ConsensusStore ``at_epoch``)."""

from __future__ import annotations

import sqlite3

import pytest

from gate import (ConfigError, ConsensusStore, MemoryConsensus, MoverFence, PartitionState, StaleAttempt, StaleMover,
                  check_fence, sqlite_fence)


def test_check_fence_refuses_only_lower_tokens():
    check_fence("t1", 5, None)
    check_fence("t1", 5, 5)
    check_fence("t1", 6, 5)
    with pytest.raises(StaleMover) as err:
        check_fence("t1", 4, 5)
    doc = err.value.problem()
    assert doc.status == 409 and doc.body["type"].endswith("stale-mover")
    assert (doc.body["partition"], doc.body["token"], doc.body["highest"]) == ("t1", 4, 5)


@pytest.mark.parametrize("raw", [None, "", "x", "-3", "0", "1.5", "9" * 25])
def test_fence_header_is_validated(raw):
    with pytest.raises(ConfigError, match="X-Epochgate-Fence"):
        MoverFence.parse("t1", raw)


def test_sqlite_fence_is_part_of_the_callers_transaction():
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT)")
    conn.execute("BEGIN IMMEDIATE")
    assert sqlite_fence(conn, "t1", 7) is None
    conn.execute("INSERT INTO kv VALUES ('k', 'new')")
    conn.execute("COMMIT")
    conn.execute("BEGIN IMMEDIATE")
    with pytest.raises(StaleMover):
        sqlite_fence(conn, "t1", 6)
    conn.execute("ROLLBACK")
    conn.execute("BEGIN IMMEDIATE")       # a rolled-back import leaves no token behind
    assert sqlite_fence(conn, "t1", 8) == 7
    conn.execute("ROLLBACK")
    assert conn.execute("SELECT token FROM epochgate_fence").fetchall() == [(7,)]
    conn.execute("BEGIN IMMEDIATE")
    assert sqlite_fence(conn, "t2", 1) is None   # per partition
    conn.execute("COMMIT")


async def test_a_superseded_attempt_cannot_move_the_partition():
    """A controller paused after its own checks, resumed after another controller
    restarted the job: its enter_cutover/complete carry its attempt's epoch and are refused
    in the same compare-and-set, leaving the newer attempt untouched."""
    store = ConsensusStore(MemoryConsensus())
    await store.set("t1", "a")
    old_draining = await store.begin("t1", "b")
    old_cutover = await store.enter_cutover("t1", at_epoch=old_draining)
    await store.abort("t1")                        # the new controller restarts the job
    new_draining = await store.begin("t1", "b")
    with pytest.raises(StaleAttempt):
        await store.enter_cutover("t1", at_epoch=old_draining)
    new_cutover = await store.enter_cutover("t1", at_epoch=new_draining)
    with pytest.raises(StaleAttempt):
        await store.complete("t1", at_epoch=old_cutover)   # the old attempt's flip: refused
    assert await store.state("t1") == (PartitionState.cutover("a", "b"), new_cutover)
    await store.complete("t1", at_epoch=new_cutover)
    assert (await store.state("t1"))[0] == PartitionState.active("b")
