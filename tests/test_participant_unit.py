"""Decision logic of the barrier participant (DESIGN §5), without Consul or sleeps.

A fake Consul (sessions + session-held keys) and a fake replica (a
``PlacementTable`` with ``last_read``) stand in; the clock is injected. The
end-to-end versions of each rule run against real Consul in
``tests/test_barrier_rules.py``.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest

from gate import ConfigError, InflightTracker, PlacementTable, RejectReason
from gate._participant import Participant
from gate._sessions import KVEntry, SessionLost


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeConsul:
    def __init__(self) -> None:
        self.sessions: set[str] = set()
        self.kv: dict[str, tuple[bytes, str]] = {}
        self.calls: list[str] = []
        self._ids = itertools.count(1)

    async def session_create(self, name, ttl_s, behavior="delete"):
        sid = f"s{next(self._ids)}"
        self.sessions.add(sid)
        self.calls.append(f"create {sid}")
        return sid

    async def session_renew(self, sid):
        self.calls.append(f"renew {sid}")
        if sid not in self.sessions:
            raise SessionLost(sid)

    async def session_destroy(self, sid):
        self.calls.append(f"destroy {sid}")
        self.expire(sid)

    def expire(self, sid):
        self.sessions.discard(sid)
        for k in [k for k, (_, s) in self.kv.items() if s == sid]:
            del self.kv[k]   # behavior=delete

    async def acquire(self, key, value, sid):
        self.calls.append(f"acquire {key} {value.decode()}")
        if sid not in self.sessions or (key in self.kv and self.kv[key][1] != sid):
            return False
        self.kv[key] = (value, sid)
        return True

    async def get(self, key):
        if key not in self.kv:
            return None
        return KVEntry(key, self.kv[key][0], self.kv[key][1], 1)

    async def close(self):
        pass


class FakeReplica:
    def __init__(self, consul: FakeConsul, clock: Clock, table: PlacementTable, key: str) -> None:
        self.consul, self.clock, self.table, self.key = consul, clock, table, key
        self.last_read = float("-inf")
        self.registered_at_read: bool | None = None
        self.stopped = False

    async def start(self):
        self.consul.calls.append("read")
        self.registered_at_read = self.key in self.consul.kv
        self.last_read = self.clock()

    async def stop(self):
        self.stopped = True

    def __getattr__(self, name):
        return getattr(self.table, name)


@pytest.fixture
def world():
    clock, consul, table = Clock(), FakeConsul(), PlacementTable({"p1": "a", "p2": "a"})
    replicas: list[FakeReplica] = []
    tracker = InflightTracker()

    def factory():
        r = FakeReplica(consul, clock, table, "eg/sidecars/s1")
        replicas.append(r)
        return r

    part = Participant("http://127.0.0.1:1", "eg/", participant_id="s1", replica_factory=factory, tracker=tracker,
                       ttl_s=10, clock=clock, consul=consul)
    part._joined_once = asyncio.Event()
    return part, clock, consul, table, replicas, tracker


async def test_rule1_registers_before_reading(world):
    part, clock, consul, table, replicas, _ = world
    assert not part.writable()
    await part._join()
    assert consul.calls[:3] == ["create s1", "acquire eg/sidecars/s1 0", "read"]
    assert replicas[0].registered_at_read is True
    assert part.writable()


async def test_not_writable_until_joined_and_reject_is_fail_closed(world):
    part, *_ = world
    r = part.admit_write("p1", 1)
    assert not r and r.reason is RejectReason.FAIL_CLOSED


async def test_rule5_lease_runs_out_before_ttl(world):
    part, clock, consul, *_ = world
    await part._join()
    part.replica.last_read = clock.now + 100   # keep the table fresh: only the renewal ages
    clock.now += part.lease_s - 0.01
    assert part.writable()
    clock.now += 0.02
    assert part.check() == "lease_expired"
    assert part.lease_s < part.ttl_s
    await part.renew_once()              # a successful renewal (timed from when it was sent) restores it
    assert part.writable()


async def test_rule5_renewal_counts_from_send_time(world):
    part, clock, consul, *_ = world
    await part._join()
    part.replica.last_read = clock.now + 100
    sent = clock.now

    async def slow_renew(sid):
        clock.now += 3.0   # the answer arrives 3 s later
    consul.session_renew = slow_renew
    await part.renew_once()
    assert part._lease.renewed_at == sent


async def test_rule3_stale_table_fails_closed(world):
    part, clock, *_ = world
    await part._join()
    clock.now += part.lease_s
    part._lease.renewed_at = clock.now
    assert part.table_stale() and part.check() == "stale_table"
    assert not part.admit_write("p1", part.state("p1")[1])


async def test_rule4_lost_session_stops_writes_at_once(world):
    part, clock, consul, table, replicas, _ = world
    await part._join()
    assert part.writable()
    consul.expire(part.session)
    await part.renew_once()
    assert not part.writable()
    assert part._rejoin.is_set()
    # start over: new session, registered again, then a fresh replica read
    old_sid = part.session
    await part._leave()
    await part._join()
    assert part.session != old_sid
    assert len(replicas) == 2 and replicas[0].stopped and replicas[1].registered_at_read
    assert part.writable()


async def test_ack_waits_for_inflight_then_publishes(world):
    part, clock, consul, table, replicas, tracker = world
    await part._join()
    acker = asyncio.create_task(part._ack_loop())
    await asyncio.sleep(0)
    for _ in range(3):
        await asyncio.sleep(0)
    e0 = table.state("p1")[1]
    assert consul.kv["eg/sidecars/s1"][0] == str(int(table.current_epoch())).encode()
    tracker.begin("p1", e0)                 # a write admitted at the draining epoch
    table.begin_migration("p1", "b")
    e1 = table.state("p1")[1]
    tracker.begin("p1", e1)
    table.enter_cutover("p1")
    ecut = table.state("p1")[1]
    for _ in range(5):
        await asyncio.sleep(0)
    assert int(consul.kv["eg/sidecars/s1"][0]) < ecut   # not acked while writes of older epochs fly
    tracker.end("p1", e0)
    for _ in range(5):
        await asyncio.sleep(0)
    assert int(consul.kv["eg/sidecars/s1"][0]) < ecut
    tracker.end("p1", e1)
    for _ in range(10):
        await asyncio.sleep(0)
    assert int(consul.kv["eg/sidecars/s1"][0]) >= ecut
    acker.cancel()
    await asyncio.gather(acker, return_exceptions=True)


async def test_publish_refused_is_a_lost_session(world):
    part, clock, consul, table, *_ = world
    await part._join()
    consul.expire(part.session)
    await part._publish(table.current_epoch())
    assert not part.writable() and part._rejoin.is_set()


def test_config_validation():
    with pytest.raises(ConfigError, match="ttl_s"):
        Participant("http://x:1", participant_id="a", replica_factory=lambda: None, ttl_s=5)
    with pytest.raises(ConfigError, match="lease_s"):
        Participant("http://x:1", participant_id="a", replica_factory=lambda: None, ttl_s=10, lease_s=10)
    with pytest.raises(ConfigError, match="participant_id"):
        Participant("http://x:1", participant_id="a/b", replica_factory=lambda: None)
    p = Participant("http://x:1", participant_id="a", replica_factory=lambda: None, ttl_s=12)
    assert p.lease_s < p.ttl_s and p.wait_s <= p.lease_s / 3 and p.renew_every_s < p.lease_s


async def test_restart_under_same_id_takes_over_stale_session(world):
    part, clock, consul, *_ = world
    stale = await consul.session_create("old", 10)
    await consul.acquire("eg/sidecars/s1", b"7", stale)      # a killed predecessor's key
    await part._join()
    assert stale not in consul.sessions                       # its session ended: the barrier drops it
    assert consul.kv["eg/sidecars/s1"][1] == part.session


async def test_replica_wait_longer_than_a_third_of_the_lease_is_refused(world):
    part, clock, consul, table, replicas, _ = world
    orig = part._factory

    def slow_factory():
        r = orig()
        r.wait_s = part.lease_s   # a quiet table would read as stale between two answers
        return r
    part._factory = slow_factory
    with pytest.raises(ConfigError, match="replica_factory"):
        await part._join()
    assert not part.writable()


async def test_a_stopped_replica_refuses_at_once_and_leaves_only_once_drained(world):
    """DESIGN §4.3: a replica stopped at a value it cannot parse refuses every write at once;
    the participant keeps its session (a barrier waits, never passes it) until the writes it
    admitted before are finished, then leaves so the barrier stops waiting."""
    part, clock, consul, table, replicas, tracker = world
    await part._join()
    epoch = table.state("p1")[1]
    assert part.admit_write("p1", epoch)
    tracker.begin("p1", int(epoch))                  # a write admitted before the stop, in flight
    replicas[-1].blocked = object()                  # the replica stopped (gate._replica.LogBlock)
    assert part.check() == "log_blocked" and not part.admit_write("p2", table.state("p2")[1])
    assert not part.log_blocked()                    # not drained: keep the session
    tracker.end("p1", int(epoch))
    assert part.log_blocked()                        # drained: leave (the serve loop's cue)
