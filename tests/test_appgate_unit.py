"""Pure-logic tests of the app-side write gate: the problem document, stamp
parsing, CommitGuard's forms, LocalAdmitter's fail-closed and in-flight rules,
and the AdmitWrite response mapping. Servers are in test_appgate_servers.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import gate
from gate import (
    ADMIT,
    CommitGuard,
    ConfigError,
    Epoch,
    LocalAdmitter,
    PlacementAt,
    PlacementTable,
    Reject,
    RejectReason,
    StaleEpoch,
    Stamp,
    UnstampedWrite,
    problem_document,
)
from gate._admit import FAIL_CLOSED, admission_from_response
from gate.pb.epochgate.v1 import epochgate_pb2 as pb


# ---- problem documents -----------------------------------------------------------


def test_stale_epoch_problem_has_every_field_of_design_section_7():
    table = PlacementTable({"t1": "a"})
    table.begin_migration("t1", "b")
    reject = table.admit_write("t1", 1)
    doc = problem_document(reject, "t1", retry_after_s=2)
    assert doc.status == 503
    assert doc.headers["Content-Type"] == "application/problem+json"
    assert doc.headers["Retry-After"] == "2"
    body = json.loads(doc.encode())
    assert body["type"].endswith("stale-epoch") and body["status"] == 503
    assert {k: body[k] for k in ("partition", "reason", "phase", "epoch", "placement")} == {
        "partition": "t1", "reason": "stale_epoch", "phase": "draining", "epoch": 2, "placement": "a"}
    assert gate.is_stale_epoch_problem(503, "application/problem+json; charset=utf-8", doc.encode())
    assert (b"content-length", str(len(doc.encode())).encode()) in doc.header_list()


@pytest.mark.parametrize("reason", list(RejectReason))
def test_every_reason_has_a_problem_and_unknowns_are_null(reason):
    body = json.loads(problem_document(Reject(reason, None, None), "p").encode())
    assert body["reason"] == reason.value and body["title"]
    assert body["phase"] is None and body["epoch"] is None and body["placement"] is None


def test_problem_document_refuses_bad_input():
    with pytest.raises(TypeError):
        problem_document(ADMIT, "t1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="retry_after_s"):
        problem_document(FAIL_CLOSED, "t1", retry_after_s=-1)
    with pytest.raises(ValueError, match="status"):
        gate.ProblemDocument(200, {"type": "x"})


@pytest.mark.parametrize("status,ctype,body,expected", [
    (503, "application/problem+json", b'{"type":"urn:epochgate:problem:stale-epoch"}', True),
    (503, "application/problem+json", b'{"type":"https://epochgate.dev/problems/stale-epoch"}', True),
    (503, "application/json", b'{"type":"urn:epochgate:problem:stale-epoch"}', False),
    (500, "application/problem+json", b'{"type":"urn:epochgate:problem:stale-epoch"}', False),
    (503, "application/problem+json", b'{"type":"urn:x:other"}', False),
    (503, "application/problem+json", b"not json", False),
    (503, "application/problem+json", b"[1]", False),
    (503, None, b"{}", False),
])
def test_is_stale_epoch_problem(status, ctype, body, expected):
    assert gate.is_stale_epoch_problem(status, ctype, body) is expected


def test_unstamped_problem_is_a_428_naming_the_header():
    doc = gate.unstamped_problem("X-Placement-Epoch", "missing")
    body = json.loads(doc.encode())
    assert doc.status == 428 and body["field"] == "X-Placement-Epoch" and "Retry-After" not in doc.headers
    assert not gate.is_stale_epoch_problem(doc.status, doc.headers["Content-Type"], doc.encode())


# ---- stamps ----------------------------------------------------------------------


def test_stamp_parsing():
    assert Stamp.parse(None, None) is None
    assert Stamp.parse(b"t1", b" 7 ") == Stamp("t1", Epoch(7))
    assert Stamp.from_headers({"x-partition": "t1", "X-PLACEMENT-EPOCH": "3"}) == Stamp("t1", Epoch(3))
    with pytest.raises(UnstampedWrite) as e:
        Stamp.parse("t1", None)
    assert e.value.field == "X-Placement-Epoch"
    with pytest.raises(UnstampedWrite) as e:
        Stamp.parse(None, "3")
    assert e.value.field == "X-Partition"
    with pytest.raises(UnstampedWrite) as e:
        Stamp.parse("t1", "-1")
    assert e.value.field == "X-Placement-Epoch"
    with pytest.raises(UnstampedWrite) as e:
        Stamp.parse("a/b", "1")
    assert e.value.field == "X-Partition"


def test_request_guard_rules():
    from gate._guard import request_guard

    admitter = LocalAdmitter(PlacementTable({"t1": "a"}))
    with pytest.raises(UnstampedWrite):
        request_guard(admitter, True, None, None)
    assert request_guard(admitter, True, None, None, allow_unstamped=True).stamp is None
    assert request_guard(admitter, False, "t1", "junk").stamp is None  # reads are not gated
    with pytest.raises(UnstampedWrite):
        request_guard(admitter, True, "t1", "junk", allow_unstamped=False)
    assert request_guard(admitter, True, "t1", "1").stamp == Stamp("t1", Epoch(1))


# ---- CommitGuard -------------------------------------------------------------------


class Recorder:
    """A sync admitter answering from a table, recording admit/done calls."""

    def __init__(self, table: PlacementTable) -> None:
        self.table = table
        self.calls: list[tuple[str, str, int]] = []

    def admit(self, p, e):
        self.calls.append(("admit", p, int(e)))
        return self.table.admit_write(p, e)

    def done(self, p, e):
        self.calls.append(("done", p, int(e)))


class AsyncRecorder(Recorder):
    async def admit(self, p, e):  # type: ignore[override]
        return Recorder.admit(self, p, e)


@pytest.mark.parametrize("cls", [Recorder, AsyncRecorder])
async def test_async_guard_admits_then_done_and_refuses_with_stale_epoch(cls):
    table = PlacementTable({"t1": "a"})
    rec = cls(table)
    guard = CommitGuard(rec, Stamp("t1", Epoch(1)))
    committed = []
    async with guard:
        committed.append(1)
    assert rec.calls == [("admit", "t1", 1), ("done", "t1", 1)]
    table.begin_migration("t1", "b")
    with pytest.raises(StaleEpoch) as e:
        async with guard:
            committed.append(2)  # never runs: the refusal comes before the commit
    assert committed == [1]
    assert e.value.reject.reason is RejectReason.STALE_EPOCH and e.value.reject.current == PlacementAt("a", 2)
    assert (e.value.partition, e.value.epoch) == ("t1", 1)
    assert rec.calls[-1] == ("admit", "t1", 1)  # no done for a refused write
    assert isinstance(e.value, gate.EpochgateError)


def test_sync_guard_and_decorator_forms():
    table = PlacementTable({"t1": "a"})
    rec = Recorder(table)
    guard = CommitGuard(rec, Stamp("t1", Epoch(1)))
    with guard:
        pass

    @guard
    def commit(x):
        return x * 2

    assert commit(21) == 42
    table.begin_migration("t1", "b")
    table.enter_cutover("t1")
    with pytest.raises(StaleEpoch) as e:
        commit(1)
    assert e.value.reject.reason is RejectReason.CUTOVER
    assert [c[0] for c in rec.calls] == ["admit", "done", "admit", "done", "admit"]


def test_sync_guard_with_async_admitter_is_a_type_error_not_an_admit():
    guard = CommitGuard(AsyncRecorder(PlacementTable({"t1": "a"})), Stamp("t1", Epoch(1)))
    with pytest.raises(TypeError, match="async with"):
        with guard:
            raise AssertionError("must not run")


async def test_commit_point_uses_the_current_requests_guard():
    from gate._guard import _current

    table = PlacementTable({"t1": "a"})

    @gate.commit_point
    async def commit():
        return "ok"

    with pytest.raises(LookupError):
        await commit()
    token = _current.set(CommitGuard(LocalAdmitter(table), Stamp("t1", Epoch(1))))
    try:
        assert await commit() == "ok"
        table.begin_migration("t1", "b")
        with pytest.raises(StaleEpoch):
            await commit()
    finally:
        _current.reset(token)


async def test_unstamped_guard_is_a_noop_and_guard_is_not_reentrant():
    rec = Recorder(PlacementTable({"t1": "a"}))
    async with CommitGuard(rec, None):
        pass
    assert rec.calls == []
    guard = CommitGuard(rec, Stamp("t1", Epoch(1)))
    async with guard:
        with pytest.raises(RuntimeError, match="re-entrant"):
            async with guard:
                pass
    assert [c[0] for c in rec.calls] == ["admit", "done"]  # the refused nesting admitted nothing
    with pytest.raises(ConfigError, match="admitter"):
        CommitGuard(object(), None)


# ---- LocalAdmitter -----------------------------------------------------------------


class Tracker:
    def __init__(self):
        self.n = 0

    def begin(self, p, e):
        self.n += 1

    def end(self, p, e):
        self.n -= 1


class Part:
    def __init__(self, ok=True):
        self.ok = ok
        self.tracker = Tracker()

    def writable(self):
        return self.ok


def test_local_admitter_counts_in_flight_until_done_and_balances_refusals():
    table = PlacementTable({"t1": "a"})
    part = Part()
    adm = LocalAdmitter(table, part)
    assert adm.tracker is part.tracker
    assert adm.admit("t1", 1) is ADMIT and part.tracker.n == 1
    adm.done("t1", 1)
    assert part.tracker.n == 0
    assert adm.admit("t1", 9).reason is RejectReason.STALE_EPOCH and part.tracker.n == 0
    part.ok = False
    r = adm.admit("t1", 1)
    assert r.reason is RejectReason.FAIL_CLOSED and r.current == PlacementAt("a", 1) and part.tracker.n == 0


def test_local_admitter_counts_the_write_before_reading_the_table():
    seen = []
    tracker = Tracker()

    class Source:
        def admit_write(self, p, e):
            seen.append(tracker.n)  # a cutover applied now must already see this write
            return ADMIT

    LocalAdmitter(Source(), tracker=tracker).admit("t1", 1)
    assert seen == [1]


def test_local_admitter_fails_closed_when_the_source_raises():
    class Broken:
        def admit_write(self, p, e):
            raise RuntimeError("boom")

    tracker = Tracker()
    assert LocalAdmitter(Broken(), tracker=tracker).admit("t1", 1) is FAIL_CLOSED
    assert tracker.n == 0


def test_replica_backed_admitter_must_be_a_participant():
    class ReplicaLike:
        last_read = 0.0

        def admit_write(self, p, e):
            return ADMIT

    with pytest.raises(ConfigError) as e:
        LocalAdmitter(ReplicaLike())
    assert e.value.field == "participant"
    assert LocalAdmitter(ReplicaLike(), require_participant=False).admit("t", 1) is ADMIT

    class ParticipantLike(ReplicaLike):
        ok = False

        def writable(self):
            return self.ok

        def state(self, p):
            return None

    src = ParticipantLike()
    adm = LocalAdmitter(src)  # a participant is its own participant
    assert adm.admit("t", 1) is FAIL_CLOSED
    src.ok = True
    assert adm.admit("t", 1) is ADMIT


# ---- the AdmitWrite response and the clients' settings --------------------------------


def test_admission_from_response():
    assert admission_from_response(pb.AdmitWriteResponse(admitted=True)) is ADMIT
    cur = pb.PartitionState(partition="t1", phase=pb.PHASE_CUTOVER, from_node="a", to_node="b", epoch=5)
    r = admission_from_response(pb.AdmitWriteResponse(admitted=False, reason="cutover", current=cur))
    assert r == Reject(RejectReason.CUTOVER, PlacementAt("a", Epoch(5)), gate.Phase.CUTOVER)
    assert admission_from_response(pb.AdmitWriteResponse(admitted=False, reason="new_reason")) is FAIL_CLOSED
    assert admission_from_response(pb.AdmitWriteResponse(admitted=False, reason="")) is FAIL_CLOSED
    r = admission_from_response(pb.AdmitWriteResponse(admitted=False, reason="unknown_partition"))
    assert r.reason is RejectReason.UNKNOWN_PARTITION and r.current is None


@pytest.mark.parametrize("cls", [gate.AdmitClient, gate.SyncAdmitClient])
def test_client_settings_are_validated(cls):
    for kwargs, field in [({"timeout_s": 0}, "timeout_s"), ({"timeout_s": True}, "timeout_s"),
                          ({"token": "a\nb"}, "token"), ({"token": ""}, "token")]:
        with pytest.raises(ConfigError) as e:
            cls("127.0.0.1:1", **kwargs)
        assert e.value.field == field
    with pytest.raises(ConfigError) as e:
        cls(" ")
    assert e.value.field == "target"


def test_import_gate_does_not_load_grpc_or_web_frameworks():
    code = "import gate, sys; print(sorted(m for m in ('grpc', 'starlette', 'uvicorn', 'sidecar') if m in sys.modules))"
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60, cwd=root)
    assert out.stdout.strip() == "[]"
