"""``gate.Lease``: the one lease rule (DESIGN §5 rule 5) shared by the barrier
participant and the controller's leadership."""

from __future__ import annotations

from pathlib import Path

import pytest

from gate import Lease, SessionLost

ROOT = Path(__file__).resolve().parent.parent


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class SlowConsul:
    """Answers a renewal ``delay`` seconds after it was sent."""

    def __init__(self, clock: Clock, delay: float, lost: bool = False) -> None:
        self.clock, self.delay, self.lost = clock, delay, lost

    async def session_renew(self, session):
        self.clock.now += self.delay
        if self.lost:
            raise SessionLost(f"session {session} is gone")


async def test_the_lease_runs_from_when_the_renewal_was_sent():
    clock = Clock()
    lease = Lease(5.0, clock)
    assert not lease.held()                        # never renewed
    await lease.renew(SlowConsul(clock, delay=2.0), "s1")
    assert lease.renewed_at == 100.0               # sent at 100, answered at 102
    clock.now = 104.99
    assert lease.held()
    clock.now = 105.0                              # 5 s after sending, only 3 after the answer
    assert not lease.held()


async def test_a_refused_renewal_changes_nothing_and_propagates():
    clock = Clock()
    lease = Lease(5.0, clock)
    lease.started(99.0)
    with pytest.raises(SessionLost):
        await lease.renew(SlowConsul(clock, delay=0.5, lost=True), "s1")
    assert lease.renewed_at == 99.0
    lease.expire()
    assert not lease.held()


def test_participant_and_controller_use_the_one_lease():
    for rel in ("gate/_participant.py", "sidecar/control/controller.py"):
        src = (ROOT / rel).read_text()
        assert "Lease(" in src and "_last_renew" not in src, rel
