"""``gate.open_participant``: one call builds a started barrier participant and
its ``LocalAdmitter`` (examples.kv --consul uses it; tests/test_example_kv.py
drives that end to end on a real Consul). Here: the failure path leaves nothing
running, and the pieces are wired to each other."""

from __future__ import annotations

import asyncio
import socket

import pytest

from gate import BackendError, ConsulConsensus, InflightTracker, Participant, make_participant, open_participant


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_unreachable_consul_raises_and_leaves_nothing_running():
    before = asyncio.all_tasks()
    with pytest.raises(BackendError, match="not registered"):
        await open_participant(f"http://127.0.0.1:{_closed_port()}", participant_id="kv-x", wait_joined_s=0.3)
    await asyncio.sleep(0)
    assert asyncio.all_tasks() - before == set()


async def test_make_participant_wires_replicas_to_the_lease():
    consensus = ConsulConsensus(f"http://127.0.0.1:{_closed_port()}")
    try:
        tracker = InflightTracker()
        p = make_participant(consensus, "http://127.0.0.1:1", participant_id="sc-1", tracker=tracker,
                             ttl_s=12, lease_s=6)
        assert isinstance(p, Participant) and p.tracker is tracker and p.lease_s == 6
        replica = p._factory()
        assert replica.wait_s == p.wait_s == 2.0        # DESIGN §5 rule 3: wait ≤ lease / 3
        assert not p.writable()                         # nothing is admitted before the first join
    finally:
        await consensus.close()
