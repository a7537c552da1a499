"""The controller's control API maps migrate's refusals onto gRPC codes through the
real server (a controller process on a real Consul): an unknown partition is
NOT_FOUND (``UnknownPartition``), a move to where the partition already lives is
FAILED_PRECONDITION (``NoOpMove``), an unknown node INVALID_ARGUMENT naming
``to_node`` — and none of them records a job."""

from __future__ import annotations

import grpc
import pytest

from gate._consul_consensus import open_consul
from gate.pb.epochgate.v1 import epochgate_pb2 as pb
from gate.pb.epochgate.v1 import epochgate_pb2_grpc as pb_grpc

from ._fleet import Fleet

pytestmark = pytest.mark.consul


async def test_migrate_refusals_map_to_grpc_codes(consul_agent, kv_prefix, tmp_path):
    consensus, store, _ = await open_consul(consul_agent.url, kv_prefix)
    fleet = Fleet(consul_agent.url, kv_prefix, tmp_path)
    try:
        await store.set_node("a", "http://127.0.0.1:1")
        await store.set_node("b", "http://127.0.0.1:2")
        await store.set("t1", "a")
        ctl = await fleet.controller("c")
        async with grpc.aio.insecure_channel(ctl.info["control"]) as ch:
            mig = pb_grpc.MigrationStub(ch)

            async def refused(partition: str, to: str) -> grpc.aio.AioRpcError:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await mig.Migrate(pb.MigrateRequest(partition=partition, to_node=to), timeout=10)
                return err.value

            e = await refused("nope", "b")
            assert e.code() == grpc.StatusCode.NOT_FOUND, e
            assert "nope" in e.details()
            e = await refused("t1", "a")
            assert e.code() == grpc.StatusCode.FAILED_PRECONDITION, e
            assert "already lives on a" in e.details()
            e = await refused("t1", "zz")
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
            assert "to_node" in e.details()
            assert list((await mig.ListJobs(pb.ListJobsRequest(), timeout=10)).jobs) == []
    finally:
        fleet.stop()
        await consensus.close()
