"""``python -m sidecar reshard`` against real Consul, a real sidecar, two example-app nodes and a real
controller: a dry run starts nothing, a bad slot is one line naming the field (exit 2), a split with
--to and the merge back are submitted as jobs the controller runs (exit 0 once completed) with every
written key still readable through the sidecar, ``history`` names the job on each transition, and
``plan --metrics`` reads the per-slot rates from the sidecar's /metrics."""

from __future__ import annotations

import asyncio
import sys

import aiohttp
import grpc
import pytest

from gate import key_hash
from gate._consul_consensus import open_consul

from gate.pb.epochgate.v1 import epochgate_pb2 as pb

from ._fleet import ROOT, ControlClient, Fleet, _env

pytestmark = [pytest.mark.consul]


async def _cli(fleet, *args):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sidecar", "reshard", *args, "--consul", fleet.consul_url, "--prefix", fleet.prefix,
        "--hash-slots", "2", cwd=ROOT, env=_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


async def _ctl(ctl, *args):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sidecar", *args, "--control", ctl.info["control"], cwd=ROOT, env=_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


async def test_reshard_command(consul_agent, kv_prefix, tmp_path):
    fleet = Fleet(consul_agent.url, kv_prefix, tmp_path)
    consensus, store, _ = await open_consul(consul_agent.url, kv_prefix)
    try:
        nodes = {n: await fleet.node(n) for n in ("a", "b")}
        for n, p in nodes.items():
            await store.set_node(n, p.info["url"])
        await store.set("slot-0", "a")
        await store.set("slot-1", "a")
        sc = await fleet.sidecar("sc0", extra=["--hash-slots", "2"])
        ctl = await fleet.controller("c1")
        keys = [f"k{i}" for i in range(24)]
        async with aiohttp.ClientSession() as http:
            for k in keys:
                async with http.put(f"{sc.info['url']}/kv/{k}", data=f"v-{k}", headers={"X-Partition-Key": k}) as r:
                    assert r.status == 200, await r.text()

            rc, out, err = await _cli(fleet, "split", "slot-1", "--to", "b", "--dry-run")
            assert rc == 0 and "nothing was started" in out and "slot-3-of-4@b" in out, (out, err)
            assert sorted(await store.partitions()) == ["slot-0", "slot-1"]

            rc, out, err = await _cli(fleet, "split", "slot-9")
            assert rc == 2 and err.count("\n") == 1 and "slot-9" in err and "Traceback" not in err, err

            rc, out, err = await _cli(fleet, "split", "slot-1", "--to", "b")
            assert rc == 0 and "completed: flip at epoch" in out and "writes refused for" in out, (out, err)
            job_id = out.split()[1].rstrip(":")
            rc, out, err = await _ctl(ctl, "history", "slot-3-of-4")
            assert rc == 0 and job_id in out, (out, err)
            table = await store.partitions()
            assert {p: str(st.source) for p, (st, _) in table.items()} == {
                "slot-0": "a", "slot-1-of-4": "a", "slot-3-of-4": "b"}

            async def readable():
                for k in keys:
                    async with http.get(f"{sc.info['url']}/kv/{k}", headers={"X-Partition-Key": k}) as r:
                        assert r.status == 200 and await r.text() == f"v-{k}", (k, r.status)
                        want = ("b" if key_hash(k) % 4 == 3 else "a") if key_hash(k) % 2 == 1 else "a"
                        assert r.headers["X-Node"] == want
            await readable()

            # through the control API, as `migrate`: no --consul (test_reshard_jobs covers its job)
            rc, out, err = await _ctl(ctl, "reshard", "merge", "slot-3-of-4", "--hash-slots", "2")
            assert rc == 0 and "submitted to" in out and "completed: merge of slot-3-of-4" in out, (out, err)
            assert " 0 B copied" not in out, out   # the bytes of both halves' copies, summed
            assert sorted(await store.partitions()) == ["slot-0", "slot-1"]
            for k in keys:
                async with http.get(f"{sc.info['url']}/kv/{k}", headers={"X-Partition-Key": k}) as r:
                    assert r.status == 200 and await r.text() == f"v-{k}" and r.headers["X-Node"] == "a"

            rc, out, err = await _ctl(ctl, "jobs")
            assert rc == 0 and [line.split()[-1] for line in out.splitlines()[1:]] == ["split", "merge"], out
            client = ControlClient(ctl.info["control"])   # the control API's Reshard: the same job
            try:
                with pytest.raises(grpc.aio.AioRpcError) as bad:
                    await client.stub.Reshard(pb.ReshardRequest(kind="split", slot="slot-7", hash_slots=2), timeout=10)
                assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "slot-7" in bad.value.details()
                job = await client.stub.Reshard(pb.ReshardRequest(kind="split", slot="slot-0", to_node="b",
                                                                  hash_slots=2), timeout=10)
                assert job.kind == "split" and (await client.wait(job.id)).status == "completed"
            finally:
                await client.close()

            # the planner reads each slot's rate from the sidecar's metrics while writes go on
            async def write_slot0():   # slot-0-of-4 (on a) is the hot one
                hot = [k for k in keys if key_hash(k) % 4 == 0]
                while True:
                    for k in hot:
                        async with http.put(f"{sc.info['url']}/kv/{k}", data="x", headers={"X-Partition-Key": k}):
                            pass
            w = asyncio.create_task(write_slot0())
            try:
                rc, out, err = await _cli(fleet, "plan", "--metrics", sc.info["admin"], "--window", "1",
                                          "--target", "0.6")
            finally:
                w.cancel()
            assert rc == 0 and "split slot-0-of-4 --to b" in out and "nothing was started" in out, (out, err)
    finally:
        fleet.stop()
        await consensus.close()


@pytest.mark.parametrize("argv,field", [
    (["split", "abc", "--hash-slots", "8"], "slot:"),
    (["split", "slot-9", "--hash-slots", "8"], "slot:"),
    (["merge", "slot-3", "--hash-slots", "0"], "--hash-slots:"),
    (["split", "slot-3", "--hash-slots", "8", "--to", "a/b"], "--to:"),
    (["split", "slot-3", "--hash-slots", "8", "--deadline", "0"], "--deadline:"),
    (["plan", "--hash-slots", "8", "--target", "1.5", "--rates", "r.json"], "--target:"),
    (["plan", "--hash-slots", "8", "--target", "0.5", "--rates", "r.json", "--consul", ""], "--consul:"),
    (["split", "slot-3", "--hash-slots", "8", "--dry-run", "--consul", ""], "--consul:"),
    (["split", "slot-3", "--hash-slots", "8", "--control", "nowhere"], "--control:"),
])
def test_a_bad_command_line_names_its_field_before_dialling(argv, field, capsys):
    from sidecar.control.reshard_cli import main

    # Consul at port 1 refuses: had the command dialled it, it would exit 4, not 2
    if "--consul" in argv:   # "" stands for "not given"
        argv = argv[:argv.index("--consul")]
    elif "--control" not in argv:
        argv = [*argv, "--consul", "http://127.0.0.1:1"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {field}"), err


def test_an_unreachable_consul_is_exit_4_not_a_refusal(capsys):
    from sidecar.control.reshard_cli import main

    assert main(["split", "slot-3", "--hash-slots", "8", "--consul", "http://127.0.0.1:1"]) == 4
    assert "unreachable" in capsys.readouterr().err
