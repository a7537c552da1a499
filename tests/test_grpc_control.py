"""The gRPC control API (DESIGN §9) over loopback against a real server on the
embedded store: every RPC, the error-code mapping, the bearer token, Watch."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from gate import BackendError, ConfigError, ConflictError, EmbeddedStore, PlacementTable
from sidecar.api.start import start_control_server
from gate.pb.epochgate.v1 import epochgate_pb2 as pb
from gate.pb.epochgate.v1 import epochgate_pb2_grpc as pb_grpc
from tests._control_fakes import FakeJobs

NODES = {"a": "http://127.0.0.1:9001", "b": "http://127.0.0.1:9002"}


class _Gate:
    """Just the guard surface of a WriteGate (writable())."""

    def __init__(self) -> None:
        self.open = True

    def writable(self) -> bool:
        return self.open


@pytest.fixture
async def control():
    table = PlacementTable({"t1": "a", "t2": "b"})
    store = EmbeddedStore(table, NODES)
    servers = []

    async def start(**kw):
        srv = await start_control_server("127.0.0.1:0", store=store, source=table, **kw)
        servers.append(srv)
        ch = grpc.aio.insecure_channel(f"127.0.0.1:{srv.epochgate_port}")
        servers.append(ch)
        return pb_grpc.GateStub(ch), pb_grpc.MigrationStub(ch)

    yield table, store, start
    for s in servers:
        if isinstance(s, grpc.aio.Channel):
            await s.close()
        else:
            await s.stop(0)


async def _code(coro) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await coro
    return info.value.code(), info.value.details()


async def test_resolve(control):
    table, _, start = control
    gate, _ = await start()
    r = await gate.Resolve(pb.ResolveRequest(partition="t1"))
    assert (r.partition, r.placement, r.upstream, r.epoch, r.phase) == ("t1", "a", NODES["a"], 1, pb.PHASE_ACTIVE)
    assert (await _code(gate.Resolve(pb.ResolveRequest(partition="nope"))))[0] is grpc.StatusCode.NOT_FOUND
    code, detail = await _code(gate.Resolve(pb.ResolveRequest(partition="")))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and detail.startswith("partition:")


async def test_admit_write_answers_in_the_message(control):
    table, _, start = control
    g = _Gate()
    gate, _ = await start(gate=g)
    ok = await gate.AdmitWrite(pb.AdmitWriteRequest(partition="t1", epoch=1))
    assert ok.admitted and ok.reason == "" and ok.current.epoch == 1 and ok.current.from_node == "a"

    stale = await gate.AdmitWrite(pb.AdmitWriteRequest(partition="t2", epoch=1))
    assert not stale.admitted and stale.reason == "stale_epoch" and stale.current.epoch == 2

    e = table.begin_migration("t1", "b")
    draining = await gate.AdmitWrite(pb.AdmitWriteRequest(partition="t1", epoch=e))
    assert draining.admitted and draining.current.phase == pb.PHASE_DRAINING and draining.current.to_node == "b"
    e = table.enter_cutover("t1")
    cut = await gate.AdmitWrite(pb.AdmitWriteRequest(partition="t1", epoch=e))
    assert not cut.admitted and cut.reason == "cutover" and cut.current.phase == pb.PHASE_CUTOVER

    unknown = await gate.AdmitWrite(pb.AdmitWriteRequest(partition="zz", epoch=1))
    assert not unknown.admitted and unknown.reason == "unknown_partition" and not unknown.HasField("current")

    g.open = False  # a guard (barrier participant / lease) says no: fail closed even at the right epoch
    closed = await gate.AdmitWrite(pb.AdmitWriteRequest(partition="t2", epoch=2))
    assert not closed.admitted and closed.reason == "fail_closed"


async def test_admit_write_does_not_count_in_flight(control):
    writegate = pytest.importorskip("sidecar.proxy.writegate")
    inflight = pytest.importorskip("gate._inflight")
    table, _, start = control
    tracker = inflight.InflightTracker()
    wg = writegate.WriteGate(table, tracker)
    gate, _ = await start(gate=wg)
    r = await gate.AdmitWrite(pb.AdmitWriteRequest(partition="t1", epoch=1))
    assert r.admitted
    assert tracker.count() == 0
    flag = {"ok": False}
    wg.add_guard(lambda: flag["ok"])
    r = await gate.AdmitWrite(pb.AdmitWriteRequest(partition="t1", epoch=1))
    assert not r.admitted and r.reason == "fail_closed"


async def test_transitions_and_error_codes(control):
    table, _, start = control
    _, mig = await start()
    r = await mig.Begin(pb.BeginRequest(partition="t1", to_node="b"))
    assert r.epoch == 3 and r.state.phase == pb.PHASE_DRAINING and (r.state.from_node, r.state.to_node) == ("a", "b")
    code, _ = await _code(mig.Begin(pb.BeginRequest(partition="t1", to_node="b")))
    assert code is grpc.StatusCode.FAILED_PRECONDITION  # AlreadyMigrating
    r = await mig.EnterCutover(pb.PartitionRequest(partition="t1"))
    assert r.epoch == 4 and r.state.phase == pb.PHASE_CUTOVER
    r = await mig.Complete(pb.PartitionRequest(partition="t1"))
    assert r.epoch == 5 and r.state.phase == pb.PHASE_ACTIVE and r.state.from_node == "b" and r.state.to_node == ""
    assert table.get("t1") == ("b", 5)

    await mig.Begin(pb.BeginRequest(partition="t2", to_node="a"))
    r = await mig.Abort(pb.PartitionRequest(partition="t2"))
    assert r.state.phase == pb.PHASE_ACTIVE and r.state.from_node == "b" and r.epoch == 7

    for call in (mig.EnterCutover, mig.Complete, mig.Abort):  # NotMigrating
        assert (await _code(call(pb.PartitionRequest(partition="t2"))))[0] is grpc.StatusCode.FAILED_PRECONDITION
    assert (await _code(mig.Begin(pb.BeginRequest(partition="t2", to_node="b"))))[0] is grpc.StatusCode.FAILED_PRECONDITION
    assert (await _code(mig.EnterCutover(pb.PartitionRequest(partition="zz"))))[0] is grpc.StatusCode.NOT_FOUND
    code, detail = await _code(mig.Begin(pb.BeginRequest(partition="t2", to_node="c")))
    assert code is grpc.StatusCode.NOT_FOUND and "to_node" in detail and "'c'" in detail
    code, detail = await _code(mig.Begin(pb.BeginRequest(partition="t2", to_node="")))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and detail.startswith("to_node:")
    code, detail = await _code(mig.Begin(pb.BeginRequest(partition="a/b", to_node="a")))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and detail.startswith("partition:")
    assert table.current_epoch() == 7  # refused calls changed nothing


async def test_backend_outage_and_conflict_codes(control):
    table, store, start = control
    _, mig = await start()

    async def down(*a):
        raise BackendError("consul unreachable")

    async def conflict(*a):
        raise ConflictError("cas lost 10 times")

    store.begin = down
    code, detail = await _code(mig.Begin(pb.BeginRequest(partition="t1", to_node="b")))
    assert code is grpc.StatusCode.UNAVAILABLE and "consul unreachable" in detail
    store.begin = conflict
    assert (await _code(mig.Begin(pb.BeginRequest(partition="t1", to_node="b"))))[0] is grpc.StatusCode.ABORTED


async def test_state_list_partitions_and_nodes(control):
    table, store, start = control
    _, mig = await start()
    s = await mig.State(pb.PartitionRequest(partition="t2"))
    assert (s.partition, s.phase, s.from_node, s.epoch) == ("t2", pb.PHASE_ACTIVE, "b", 2)
    assert (await _code(mig.State(pb.PartitionRequest(partition="zz"))))[0] is grpc.StatusCode.NOT_FOUND

    r = await mig.SetPartition(pb.SetPartitionRequest(partition="t3", node="a"))
    assert r.epoch == 3 and r.state.from_node == "a"
    lst = await mig.List(pb.ListRequest())
    assert [p.partition for p in lst.partitions] == ["t1", "t2", "t3"] and lst.table_epoch == 3
    code, detail = await _code(mig.SetPartition(pb.SetPartitionRequest(partition="t4", node="nowhere")))
    assert code is grpc.StatusCode.NOT_FOUND and detail.startswith("node:")

    n = await mig.SetNode(pb.SetNodeRequest(name="c", url="http://127.0.0.1:9003/"))
    assert (n.name, n.url) == ("c", "http://127.0.0.1:9003")
    nodes = await mig.ListNodes(pb.Empty())
    assert [(x.name, x.url) for x in nodes.nodes] == [*NODES.items(), ("c", "http://127.0.0.1:9003")]
    code, detail = await _code(mig.SetNode(pb.SetNodeRequest(name="d", url="ftp://x")))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and detail.startswith("url:")
    code, detail = await _code(mig.SetNode(pb.SetNodeRequest(name="bad name", url="http://x:1")))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and detail.startswith("name:")
    assert "d" not in await store.nodes()


async def test_watch_streams_snapshot_then_changes(control):
    table, _, start = control
    _, mig = await start()
    everything = mig.Watch(pb.WatchRequest(after_epoch=0))
    recent = mig.Watch(pb.WatchRequest(after_epoch=2))
    got = [await everything.read(), await everything.read()]
    assert [(m.partition, m.epoch) for m in got] == [("t1", 1), ("t2", 2)]
    table.set("t3", "a")  # once both streams carry this, both servers are subscribed
    for stream in (everything, recent):
        m = await asyncio.wait_for(stream.read(), 5)
        assert (m.partition, m.epoch) == ("t3", 3)

    table.begin_migration("t1", "b")
    table.enter_cutover("t1")
    table.remove("t2")
    for stream in (everything, recent):
        msgs = [await asyncio.wait_for(stream.read(), 5) for _ in range(3)]
        assert [(m.partition, m.phase, m.epoch) for m in msgs] == [
            ("t1", pb.PHASE_DRAINING, 4),
            ("t1", pb.PHASE_CUTOVER, 5),
            ("t2", pb.PHASE_UNSPECIFIED, 6),
        ]
        stream.cancel()


async def test_job_rpcs_unimplemented_without_a_job_service(control):
    _, _, start = control
    _, mig = await start()
    for call in (
        mig.Migrate(pb.MigrateRequest(partition="t1", to_node="b")),
        mig.GetJob(pb.JobRequest(id="j1")),
        mig.ListJobs(pb.ListJobsRequest()),
        mig.AbortJob(pb.JobRequest(id="j1")),
    ):
        code, detail = await _code(call)
        assert code is grpc.StatusCode.UNIMPLEMENTED and "controller" in detail
    stream = mig.WatchJob(pb.JobRequest(id="j1"))
    assert (await _code(stream.read()))[0] is grpc.StatusCode.UNIMPLEMENTED


async def test_job_rpcs_delegate(control):
    _, store, start = control
    jobs = FakeJobs(store, auto=False)
    _, mig = await start(jobs=jobs)
    job = await mig.Migrate(pb.MigrateRequest(partition="t1", to_node="b", cutover_deadline_s=2.5))
    assert (job.id, job.partition, job.from_node, job.to_node, job.status) == ("j1", "t1", "a", "b", "pending")
    assert job.error == "deadline=2.5" and job.finished == 0
    code, _ = await _code(mig.Migrate(pb.MigrateRequest(partition="zz", to_node="b")))
    assert code is grpc.StatusCode.NOT_FOUND
    code, detail = await _code(mig.Migrate(pb.MigrateRequest(partition="t1", to_node="b", cutover_deadline_s=-1)))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and detail.startswith("cutover_deadline_s:")
    assert (await mig.GetJob(pb.JobRequest(id="j1"))).status == "pending"
    assert (await _code(mig.GetJob(pb.JobRequest(id="j9"))))[0] is grpc.StatusCode.NOT_FOUND
    assert (await _code(mig.GetJob(pb.JobRequest(id=""))))[0] is grpc.StatusCode.INVALID_ARGUMENT
    assert [j.id for j in (await mig.ListJobs(pb.ListJobsRequest())).jobs] == ["j1"]

    stream = mig.WatchJob(pb.JobRequest(id="j1"))
    first = await stream.read()
    assert first.status == "pending"
    await jobs.advance("j1", "draining")
    assert (await asyncio.wait_for(stream.read(), 5)).status == "draining"
    aborted = await mig.AbortJob(pb.JobRequest(id="j1"))
    assert aborted.status == "aborted" and aborted.finished > 0 and [p.phase for p in aborted.phases] == ["draining", "aborted"]
    last = await asyncio.wait_for(stream.read(), 5)
    assert last.status == "aborted" and last.bytes_copied == 2000
    assert await stream.read() is grpc.aio.EOF
    assert (await _code(mig.WatchJob(pb.JobRequest(id="j9")).read()))[0] is grpc.StatusCode.NOT_FOUND


async def test_token_required_when_configured(control):
    _, _, start = control
    gate, mig = await start(token="s3cret")
    code, detail = await _code(gate.Resolve(pb.ResolveRequest(partition="t1")))
    assert code is grpc.StatusCode.UNAUTHENTICATED and "token" in detail
    wrong = (("authorization", "Bearer nope"),)
    assert (await _code(mig.List(pb.ListRequest(), metadata=wrong)))[0] is grpc.StatusCode.UNAUTHENTICATED
    assert (await _code(mig.Watch(pb.WatchRequest()).read()))[0] is grpc.StatusCode.UNAUTHENTICATED
    right = (("authorization", "Bearer s3cret"),)
    assert (await gate.Resolve(pb.ResolveRequest(partition="t1"), metadata=right)).placement == "a"
    stream = mig.Watch(pb.WatchRequest(), metadata=right)
    assert (await stream.read()).partition == "t1"
    stream.cancel()


async def test_bad_listen_address_names_the_field(control):
    table, store, _ = control
    with pytest.raises(ConfigError, match="^control:"):
        await start_control_server("nonsense", store=store, source=table)
