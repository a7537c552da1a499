"""One fail-closed admission decision (gate/_admission.py) at every admitting
site: the sidecar's write gate, the participant's read side, the in-process
commit-point admitter and the Gate/AdmitWrite gRPC call give the same refusal
for the same situation, and a table that errors is a refusal, never an admit."""

from __future__ import annotations

import grpc
import pytest

from gate import (
    ADMIT,
    FAIL_CLOSED,
    EmbeddedStore,
    InflightTracker,
    LocalAdmitter,
    Phase,
    PlacementAt,
    PlacementTable,
    Reject,
    RejectReason,
    fail_closed_admit,
    fail_closed_reject,
)
from gate._current_replica import CurrentReplica
from gate.pb.epochgate.v1 import epochgate_pb2 as pb
from gate.pb.epochgate.v1 import epochgate_pb2_grpc as pb_grpc
from gate.wire import PHASE_FROM_PB, PHASE_TO_PB, admission_from_response, phase_from_pb, phase_to_pb
from sidecar.api.start import start_control_server
from sidecar.proxy.writegate import WriteGate


class Closed:
    """A participant that may not admit (not registered, lease run out, …)."""

    def __init__(self) -> None:
        self.open = False

    def writable(self) -> bool:
        return self.open


class ParticipantReadSide(CurrentReplica):
    def __init__(self, replica, guard: Closed) -> None:
        self.replica, self._subs, self._guard = replica, [], guard

    def writable(self) -> bool:
        return self._guard.writable()


class Exploding(PlacementTable):
    def admit_write(self, partition, epoch):
        raise RuntimeError("table broke")


@pytest.fixture
def table():
    t = PlacementTable({"t1": "a"})
    t.begin_migration("t1", "b")
    return t


def test_the_refusal_carries_the_current_placement_and_phase(table):
    epoch = table.get("t1").epoch
    expected = Reject(RejectReason.FAIL_CLOSED, PlacementAt("a", epoch), Phase.DRAINING)
    assert fail_closed_reject(table, "t1") == expected
    assert fail_closed_admit(table, "t1", epoch, False) == expected
    assert fail_closed_reject(table, "nope") is FAIL_CLOSED
    assert fail_closed_reject(None, "t1") is FAIL_CLOSED
    assert fail_closed_admit(None, "t1", epoch, True) is FAIL_CLOSED     # no table yet
    assert fail_closed_admit(table, "t1", epoch, True) is ADMIT


def test_a_table_error_is_a_refusal_not_an_exception():
    t = Exploding({"t1": "a"})
    r = fail_closed_admit(t, "t1", t.get("t1").epoch, True)
    assert isinstance(r, Reject) and r.reason is RejectReason.FAIL_CLOSED and r.current == t.get("t1")
    gate = WriteGate(t, InflightTracker())                 # the sidecar's data path
    assert gate.admit("t1", 1).reason is RejectReason.FAIL_CLOSED and gate.tracker.count() == 0


async def test_every_site_gives_the_same_refusal(table):
    epoch = table.get("t1").epoch
    expected = fail_closed_reject(table, "t1")
    guard = Closed()

    gate = WriteGate(table, InflightTracker())
    gate.add_guard(guard.writable)
    read_side = ParticipantReadSide(table, guard)
    local = LocalAdmitter(table, guard, tracker=InflightTracker())

    srv = await start_control_server("127.0.0.1:0", store=EmbeddedStore(table, {"a": "http://127.0.0.1:1",
                                     "b": "http://127.0.0.1:2"}), source=table, gate=gate)
    ch = grpc.aio.insecure_channel(f"127.0.0.1:{srv.epochgate_port}")
    try:
        stub = pb_grpc.GateStub(ch)

        async def remote() -> object:
            return admission_from_response(await stub.AdmitWrite(pb.AdmitWriteRequest(partition="t1", epoch=epoch)))

        answers = {"writegate": gate.admit("t1", epoch), "current_replica": read_side.admit_write("t1", epoch),
                   "local_admitter": local.admit("t1", epoch), "grpc": await remote()}
        assert answers == dict.fromkeys(answers, expected)
        assert gate.tracker.count() == 0 and local.tracker.count() == 0   # a refusal is not in flight

        guard.open = True
        answers = {"writegate": gate.admit("t1", epoch), "current_replica": read_side.admit_write("t1", epoch),
                   "local_admitter": local.admit("t1", epoch), "grpc": await remote()}
        assert answers == dict.fromkeys(answers, ADMIT)
    finally:
        await ch.close()
        await srv.stop(0)


def test_wire_phase_map_is_derived_from_both_enums():
    names = {v.name for v in pb.Phase.DESCRIPTOR.values}
    assert names == {"PHASE_UNSPECIFIED"} | {f"PHASE_{p.name}" for p in Phase}
    for phase in Phase:
        assert phase_from_pb(phase_to_pb(phase)) is phase
    assert phase_to_pb(None) == pb.PHASE_UNSPECIFIED and phase_from_pb(pb.PHASE_UNSPECIFIED) is None
    assert set(PHASE_TO_PB) == set(Phase) and set(PHASE_FROM_PB.values()) == set(Phase)
