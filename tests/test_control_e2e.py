"""End to end without a proxy: real Consul, the real controller process, two
example nodes embedding barrier participants (``--consul``), and the operator
CLI — register nodes and a partition, write, ``migrate``, and find the data on
the new node with every acknowledged commit logged on the old one."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import aiohttp
import pytest

from tests._consul import free_ports

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.consul


def _env() -> dict[str, str]:
    # No ambient EPOCHGATE_* setting reaches the processes, except the mover credential a
    # test sets on purpose (monkeypatch) for processes that must share it.
    return {k: v for k, v in os.environ.items() if not k.startswith("EPOCHGATE_") or k == "EPOCHGATE_MOVER_TOKEN"}


async def _spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(sys.executable, "-m", *args, cwd=ROOT, env=_env(),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def cli(control: str, *args: str) -> tuple[int, str, str]:
    proc = await _spawn("sidecar", *args, "--control", control)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


async def _stop(proc: asyncio.subprocess.Process) -> str:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
    return (await proc.stderr.read()).decode(errors="replace")


async def test_cli_migrates_a_partition_between_example_nodes(consul_agent, kv_prefix, tmp_path):
    control_port, admin_port = free_ports(2)
    control = f"127.0.0.1:{control_port}"
    procs: list[asyncio.subprocess.Process] = []
    try:
        nodes = {}
        for name in ("a", "b"):
            p = await _spawn("examples.kv", "--node", name, "--listen", "127.0.0.1:0", "--data", str(tmp_path / name),
                             "--consul", consul_agent.url, "--prefix", kv_prefix)
            procs.append(p)
            line = (await asyncio.wait_for(p.stdout.readline(), 60)).decode()
            assert "listening on" in line, line
            nodes[name] = line.split()[-1]
        ctl = await _spawn("sidecar", "controller", "--consul", consul_agent.url, "--prefix", kv_prefix,
                           "--control", control, "--admin", f"127.0.0.1:{admin_port}", "--cutover-deadline", "10")
        procs.append(ctl)

        for _ in range(100):  # until the controller's control API answers
            rc, out, err = await cli(control, "nodes", "set", "a", nodes["a"])
            if rc == 0:
                break
            assert rc == 4, err
            await asyncio.sleep(0.1)
        assert (rc, out) == (0, f"a = {nodes['a']}\n")
        assert (await cli(control, "nodes", "set", "b", nodes["b"]))[0] == 0
        rc, out, err = await cli(control, "partitions", "set", "t1", "a")
        assert rc == 0 and out.startswith("t1 → a (epoch "), err
        epoch = int(out.rsplit(" ", 1)[1].rstrip(")\n"))

        async with aiohttp.ClientSession() as http:
            for i in range(20):
                for _ in range(100):  # the nodes' replicas follow the store
                    async with http.put(f"{nodes['a']}/kv/k{i}", data=f"v{i}",
                                        headers={"X-Partition": "t1", "X-Placement-Epoch": str(epoch)}) as r:
                        if r.status == 200:
                            break
                    await asyncio.sleep(0.05)
                assert r.status == 200

            rc, out, err = await cli(control, "migrate", "--partition", "t1", "--to", "b")
            assert rc == 0, out + err
            statuses = [ln.split()[2] for ln in out.splitlines()[:-1]]
            # One line per status change seen (a fast job may skip some between two reads).
            assert statuses[0] == "pending" and statuses[-1] == "completed" and len(set(statuses)) == len(statuses), out
            assert out.splitlines()[-1].startswith("job ") and " completed: t1 a→b" in out

            for i in range(20):
                async with http.get(f"{nodes['b']}/kv/k{i}", headers={"X-Partition": "t1"}) as r:
                    assert (r.status, await r.text()) == (200, f"v{i}")

        rc, out, _ = await cli(control, "partitions", "list", "--json")
        (state,) = json.loads(out)["partitions"]
        assert (state["partition"], state["phase"], state["from"]) == ("t1", "active", "b") and state["epoch"] > epoch
        rc, out, _ = await cli(control, "jobs", "list", "--json")
        (job,) = json.loads(out)
        assert job["status"] == "completed" and job["bytes_copied"] > 0
        assert {"draining", "cutover", "replaying", "completed"} <= {p["phase"] for p in job["phases"]}
        assert [json.loads(x)["key"] for x in (tmp_path / "a" / "commits.jsonl").read_text().splitlines()] == [
            f"k{i}" for i in range(20)]
        assert (tmp_path / "b" / "commits.jsonl").read_text() == ""  # copies are not commits
    finally:
        logs = [await _stop(p) for p in reversed(procs)]
    assert all("Traceback" not in log for log in logs), "\n".join(logs)
