"""The fleet-wide cutover barrier and the write-unavailability window (DESIGN §5, §6).

    python bench/bench_barrier.py [--participants 50] [--rounds 40] [--migrations 20] [--reshards 20] [--delta 20]

Starts its own ``consul agent -dev`` on loopback, then measures in this process:

* baseline: one Consul KV write (PUT), p50/p99 — every step below is a few of them;
* barrier latency: ``enter_cutover`` committed → every one of N in-process
  participants (real sessions, real replicas following the change log) has
  acked ≥ E, as the controller's barrier sees it, p50/p99 over the rounds;
* write-unavailability window per migration: ``enter_cutover`` → the flip
  (``complete``) committed, for a real job run (barrier with the N
  participants plus two ``examples.kv`` nodes embedding participants, the
  HTTP-hooks mover copying a small delta of ``--delta`` keys written after
  the export), p50/p99, read from the job records' phase times;
* the same window per slot split or merge (DESIGN §12): ``slot-0`` (N = 1) split into
  ``slot-0-of-2`` on a and ``slot-1-of-2`` on b and merged back, alternately, as real reshard
  jobs through the same runner, barrier, nodes and delta — ``enter_cutover`` → the flip
  (``complete_reshard``) committed, from the records' ``cutover`` and ``flipped`` times.

Figures are noisy (2 shared cores, one Python process hosting every
participant): compare against the baseline of the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from sidecar.control.barrier import Barrier  # noqa: E402
from gate import (  # noqa: E402
    ConsulConsensus,
    ConsulHTTP,
    InflightTracker,
    Participant,
    Replica,
    open_consul,
    provision_mover_token,
)
from sidecar.control.jobs import Job, JobRecords  # noqa: E402
from sidecar.control.mover import HttpHooksMover  # noqa: E402
from sidecar.control.reshard_job import submit  # noqa: E402
from sidecar.control.runner import JobRunner  # noqa: E402
from tests._consul import dev_agent  # noqa: E402


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def fmt(name: str, xs: list[float], base: float | None = None) -> str:
    p50, p99 = pct(xs, 50) * 1000, pct(xs, 99) * 1000
    ratio = f"  (p50 = {p50 / (base * 1000):.1f}× a KV write)" if base else ""
    return f"{name:<46} n={len(xs):<4} p50 {p50:8.2f} ms   p99 {p99:8.2f} ms{ratio}"


async def participants(url: str, prefix: str, n: int, watch_key: bool = True) -> tuple[list[Participant], ConsulConsensus]:
    consensus = ConsulConsensus(url, prefix)
    parts: list[Participant] = []
    for i in range(n):
        holder: dict = {}
        p = Participant(url, prefix, participant_id=f"bench-{i}",
                        replica_factory=lambda h=holder: Replica(consensus, wait_s=h["p"].wait_s),
                        tracker=InflightTracker(), watch_key=watch_key)
        holder["p"] = p
        parts.append(p)
    await asyncio.gather(*(p.start(wait_joined_s=60) for p in parts))
    return parts, consensus


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


async def kv_node(name: str, url: str, prefix: str, tmp: str) -> tuple[subprocess.Popen, str, str]:
    port = free_port()
    data = os.path.join(tmp, f"data-{name}")
    log = open(os.path.join(tmp, f"{name}.log"), "wb")
    proc = subprocess.Popen([sys.executable, "-m", "examples.kv", "--node", name, "--listen", f"127.0.0.1:{port}",
                             "--data", data, "--consul", url, "--prefix", prefix], cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            try:
                async with http.get(base + "/healthz") as r:
                    if r.status == 200:
                        return proc, base, data
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"examples.kv {name} did not start")


class DeltaMover(HttpHooksMover):
    """The default mover; after the bulk export it writes ``delta`` keys to ``from``
    at the draining epoch (as a client would) so the replay has a small delta."""

    def __init__(self, store, delta: int) -> None:
        super().__init__()
        self.store, self.delta, self.n = store, delta, 0

    async def copy(self, partition, source_url, target_url, progress, check=None, *, fence, **kw):
        cursor = await super().copy(partition, source_url, target_url, progress, check, fence=fence, **kw)
        if fence == getattr(self, "last_fence", None):   # a split's second transfer: one delta per attempt
            return cursor
        self.last_fence = fence
        st = await self.store.state(partition)
        http = self._session()
        for _ in range(self.delta):
            self.n += 1
            async with http.put(f"{source_url}/kv/d{self.n}", data=f"v{self.n}",
                                headers={"X-Partition": partition, "X-Placement": st[0].source,
                                         "X-Placement-Epoch": str(int(st[1]))}) as r:
                if r.status != 200:
                    raise RuntimeError(f"delta write refused: {r.status} {await r.text()}")
        return cursor


async def main(args: argparse.Namespace) -> None:
    tmp = tempfile.mkdtemp(prefix="bench-barrier-")
    agent = dev_agent(tmp)
    # every participant of this one process talks from 127.0.0.1 with 3 connections
    # (replica watch, own-key watch, renew/publish): lift the per-client-IP cap (200)
    cfg_path = Path(agent.data_dir) / "cfg.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["limits"] = {"http_max_conns_per_client": 4096}
    cfg_path.write_text(json.dumps(cfg))
    agent.start()
    procs: list[subprocess.Popen] = []
    try:
        agent.wait_ready()
        url, prefix = agent.url, "bench/"
        consensus, store, _ = await open_consul(url, prefix)
        kv = ConsulHTTP(url)
        base = []
        for i in range(50):
            t0 = time.perf_counter()
            await kv.put(f"{prefix}probe", str(i).encode())
            base.append(time.perf_counter() - t0)
        kv_p50 = pct(base, 50)
        print(fmt("baseline: one Consul KV write", base))

        parts, pconsensus = await participants(url, prefix, args.participants, not args.no_key_watch)
        barrier = Barrier(kv, prefix)
        await store.set("p", "a")
        lags = []
        for r in range(args.rounds):
            await store.begin("p", "b" if r % 2 == 0 else "a")
            await asyncio.sleep(0.02)
            res = await barrier.cutover(store, "p", 10.0)
            lags.append(res.ack_lag)
            assert len(res.acked) == args.participants, res
            await store.complete("p")
        print(fmt(f"barrier: cutover commit → {args.participants} participants acked", lags, kv_p50))

        # the write-unavailability window of real jobs with a small delta
        for name in ("a", "b"):
            proc, node_url, _ = await kv_node(name, url, prefix, tmp)
            procs.append(proc)
            await store.set_node(name, node_url)
        await store.set("m", "a")
        nodes = await store.nodes()
        http = aiohttp.ClientSession()
        st = await store.state("m")
        for i in range(200):   # some data to copy in bulk
            async with http.put(f"{nodes['a']}/kv/k{i}", data="x" * 100,
                                headers={"X-Partition": "m", "X-Placement": "a",
                                         "X-Placement-Epoch": str(int(st[1]))}) as resp:
                assert resp.status == 200, await resp.text()
        await http.close()
        records = JobRecords(kv, prefix)
        mover = DeltaMover(store, args.delta)
        mover.token = await provision_mover_token(kv, prefix)   # what the controller does (DESIGN §6)

        async def node_urls():
            return await store.nodes()

        runner = JobRunner(store, records, barrier, mover, node_urls, owner="bench", check=lambda: None)
        windows, statuses = [], []
        where = "a"
        for i in range(args.migrations):
            to = "b" if where == "a" else "a"
            job = await records.create(Job.new("m", where, to, 10.0))
            job = await runner.run(job)
            statuses.append(job.status)
            if job.status == "completed":
                where = to
                windows.append(job.phase("completed").at - job.phase("cutover").at)
        print(fmt(f"write-unavailability window (delta {args.delta} keys)", windows, kv_p50))

        # the same window per slot split / merge (DESIGN §12): real reshard jobs, same runner and nodes
        await store.set("slot-0", "a")
        st = await store.state("slot-0")
        async with aiohttp.ClientSession() as http:
            for i in range(200):
                async with http.put(f"{nodes['a']}/kv/s{i}", data="x" * 100,
                                    headers={"X-Partition": "slot-0", "X-Placement": "a",
                                             "X-Placement-Epoch": str(int(st[1]))}) as resp:
                    assert resp.status == 200, await resp.text()
        reshard_windows = {"split": [], "merge": []}
        for i in range(args.reshards):
            kind, slot = ("split", "slot-0") if i % 2 == 0 else ("merge", "slot-1-of-2")
            job = await runner.run(await submit(store, records, nodes, kind, slot, "b" if kind == "split" else "a",
                                                1, 10.0))
            statuses.append(job.status)
            if job.status == "completed":
                reshard_windows[kind].append(job.phase("flipped").at - job.phase("cutover").at)
        await mover.close()
        for kind, xs in reshard_windows.items():
            if xs:
                print(fmt(f"write-unavailability window per slot {kind}", xs, kv_p50))
        print(f"jobs: {statuses.count('completed')} completed of {len(statuses)}; "
              f"participants in each barrier: {args.participants} + 2 example nodes")
        await asyncio.gather(*(p.stop() for p in parts))
        await pconsensus.close()
        await consensus.close()
        await kv.close()
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)
        agent.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--participants", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--migrations", type=int, default=20)
    ap.add_argument("--reshards", type=int, default=20, help="slot splits and merges, alternately")
    ap.add_argument("--delta", type=int, default=20)
    ap.add_argument("--no-key-watch", action="store_true",
                    help="participants without the blocking watch on their own key (Participant(watch_key=False))")
    asyncio.run(main(ap.parse_args()))
