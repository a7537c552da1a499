"""Hostile input — ids that would escape their key space (issue 15, High/Low).

Partition ids ``.`` and ``..`` (and anything that is not one key segment)
turned prefix-wide Consul operations: ``compact_history("..", E)`` read the
whole prefix recursively and deleted every key older than E. One validator,
``gate.key_segment``, now guards partition, node and job ids everywhere; the
Consul clients additionally refuse any key with a dot or empty segment.
"""

from __future__ import annotations

import subprocess
import sys

import grpc
import pytest

from gate import ConfigError, ConsensusStore, ConsulConsensus, MemoryConsensus, key_segment
from gate._sessions import ConsulHTTP
from sidecar.control.jobs import Job, JobRecords
from gate.pb.epochgate.v1 import epochgate_pb2 as pb
from gate.pb.epochgate.v1 import epochgate_pb2_grpc as pb_grpc
from tests._hostile import h11_nodes, hostile_sidecar  # noqa: F401
from tests._sidecar_util import ROOT, clean_env

BAD = [".", "..", "", "a/b", "../x", "a\\b", "a?b", "a#b", "a%2Fb", "a\x00b", "a\nb", "a\x85b", " a", "a" * 300]


@pytest.mark.parametrize("value", BAD, ids=repr)
def test_key_segment_refuses(value):
    with pytest.raises(ConfigError, match="^partition: "):
        key_segment(value, "partition")


@pytest.mark.parametrize("value", ["t1", "tenant-1.eu", "slot-7", "a..b", "ünï"])
def test_key_segment_accepts(value):
    assert key_segment(value) == value


async def test_memory_store_refuses_dot_ids():
    store = ConsensusStore(MemoryConsensus())
    await store.set("t1", "a")
    for bad in (".", ".."):
        with pytest.raises(ConfigError):
            await store.set(bad, "a")
        with pytest.raises(ConfigError):
            await store.compact_history(bad, 1 << 40)
        with pytest.raises(ConfigError):
            await store.set("t2", bad)
    assert await store.state("..") is None


@pytest.mark.consul
async def test_compact_history_of_dotdot_never_reaches_the_prefix(consul_agent, kv_prefix):
    consensus = ConsulConsensus(consul_agent.url, kv_prefix)
    try:
        store = ConsensusStore(consensus)
        await store.set_node("a", "http://127.0.0.1:1")
        await store.set("t1", "a")
        await store.set("t2", "a")
        before, _ = await consensus.read_prefix("")
        assert len(before) >= 6
        with pytest.raises(ConfigError, match="partition"):
            await store.compact_history("..", 1 << 40)
        with pytest.raises(ConfigError, match="partition"):
            await store.history("..")
        # the seam itself refuses a key with a dot segment (a caller that forgot to validate)
        for key in ("history/../", "partitions/..", "nodes/./a", "a//b"):
            with pytest.raises(ConfigError, match="store key"):
                await consensus.read_prefix(key)
        with pytest.raises(ConfigError, match="store key"):
            await consensus.truncate("history/../", 1 << 40)
        after, _ = await consensus.read_prefix("")
        assert sorted(v.key for v in after) == sorted(v.key for v in before)
    finally:
        await consensus.close()


@pytest.mark.consul
async def test_job_ids_are_one_segment(consul_agent, kv_prefix):
    with pytest.raises(ConfigError, match="^id: "):
        Job("..", "t1", "a", "b")
    http = ConsulHTTP(consul_agent.url)
    try:
        records = JobRecords(http, kv_prefix)
        job = await records.create(Job.new("t1", "a", "b", 5.0))
        assert await records.get(job.id) == job
        for bad in ("..", "../jobs"):
            with pytest.raises(ConfigError):
                await records.get(bad)
        with pytest.raises(ConfigError, match="store key"):
            await http.delete(kv_prefix + "jobs/..", recurse=True)
        entries, _ = await http.list(kv_prefix + "jobs/")
        assert [e.key for e in entries] == [kv_prefix + "jobs/" + job.id]
    finally:
        await http.close()


async def test_control_api_refuses_dot_ids_naming_the_field(tmp_path, h11_nodes):
    async with hostile_sidecar(tmp_path, h11_nodes) as sc:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{sc.control_port}") as ch:
            mig = pb_grpc.MigrationStub(ch)
            for req, field in ((pb.SetPartitionRequest(partition="..", node="a"), "partition"),
                               (pb.SetPartitionRequest(partition="t9", node=".."), "node"),
                               (pb.SetPartitionRequest(partition="a/b", node="a"), "partition")):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await mig.SetPartition(req)
                assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
                assert err.value.details().startswith(field + ":"), err.value.details()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await mig.SetNode(pb.SetNodeRequest(name="..", url="http://127.0.0.1:1"))
            assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await mig.Begin(pb.BeginRequest(partition=".", to_node="b"))
            assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert ".." not in sc.table.partitions() and "." not in sc.table.partitions()


@pytest.mark.parametrize("argv, field", [(["partitions", "set", "..", "a"], "partition"),
                                         (["partitions", "set", "t1", "."], "node"),
                                         (["jobs", "show", "../x"], "id"),
                                         (["migrate", "--partition", "..", "--to", "b"], "partition")])
def test_cli_refuses_dot_ids_naming_the_argument(argv, field):
    r = subprocess.run([sys.executable, "-m", "sidecar", *argv, "--control", "127.0.0.1:1"], cwd=ROOT,
                       env=clean_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 5, (r.stdout, r.stderr)  # refused before any call (the port is closed)
    assert r.stderr.startswith(f"error: {field}: "), r.stderr
    assert "Traceback" not in r.stderr
