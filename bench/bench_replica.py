"""Fleet-scale cost of the Consul replica (DESIGN §4 "Fleet scale").

    python bench/bench_replica.py [--partitions 10000] [--transitions 40] [--fleet 1,50,100,200]

Starts its own `consul agent -dev` on loopback, seeds a table of N partitions,
then measures, in this one process:

* the baseline: one recursive read of ``partitions/`` (what a watch of the
  whole prefix would cost every sidecar on every change), bytes and time;
* replica cold start (snapshot read + parse), time and bytes;
* for a fleet of N replicas: the bytes each replica receives per transition
  (HTTP status line + headers + body, counted on every response), and the
  time from issuing a transition to each replica having applied it, p50/p99,
  plus the time until the whole fleet has applied it.

Figures are noisy (2 shared cores, Python client, one agent): compare ratios
within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gate import ConsensusStore, ConsulConsensus, PartitionState, Replica, TxnOp  # noqa: E402
from tests._consul import ConsulProcess, consul_binary, free_ports  # noqa: E402


def start_agent(tmp: str) -> ConsulProcess:
    http, dns, serf_lan, serf_wan, server, grpc = free_ports(6)
    cfg = {"ports": {"http": http, "dns": dns, "serf_lan": serf_lan, "serf_wan": serf_wan, "server": server,
                     "grpc": grpc}, "bind_addr": "127.0.0.1", "client_addr": "127.0.0.1",
           "disable_update_check": True,
           # Every replica holds one blocking query open: allow a big fleet from one IP.
           "limits": {"http_max_conns_per_client": 4000}}
    Path(tmp, "cfg.json").write_text(json.dumps(cfg))
    args = [consul_binary(), "agent", "-dev", "-config-file", str(Path(tmp, "cfg.json")), "-node", "bench",
            "-log-level", "warn"]
    agent = ConsulProcess("bench", args, http, tmp, os.path.join(tmp, "consul.log"))
    agent.start()
    agent.wait_ready()
    return agent


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def kb(n: float) -> str:
    return f"{n / 1024:,.1f} KiB" if n >= 1024 else f"{n:,.0f} B"


PARTITIONS = "partitions/"  # the current-state keys of the Consul layout (DESIGN §4)


async def seed(c: ConsulConsensus, n: int) -> None:
    """Write ``n`` Active partitions straight into the layout, 64 per transaction."""
    state = json.dumps(PartitionState.active("node-a").to_dict(), separators=(",", ":")).encode()
    keys = [f"{PARTITIONS}tenant-{i:05d}" for i in range(n)]
    for i in range(0, n, 64):
        assert await c.txn([TxnOp("put", k, state) for k in keys[i:i + 64]]) is not None


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--partitions", type=int, default=10_000)
    ap.add_argument("--transitions", type=int, default=100, help="transitions measured per fleet size")
    ap.add_argument("--fleet", default="1,50,100,200", help="replica counts, ascending")
    ap.add_argument("--wait", type=float, default=5.0, help="blocking-query wait of each replica (s)")
    args = ap.parse_args()
    fleet = sorted(int(x) for x in args.fleet.split(","))
    tmp = tempfile.mkdtemp(prefix="bench-replica-")
    agent = start_agent(tmp)
    admin = ConsulConsensus(agent.url, "epochgate/")
    store = ConsensusStore(admin)
    txn_sent: list[float] = []
    plain_txn = admin.txn

    async def timed_txn(ops):  # latency is measured from the moment the commit is sent
        txn_sent.append(time.perf_counter())
        return await plain_txn(ops)
    replicas: list[tuple[Replica, ConsulConsensus]] = []
    try:
        t = time.perf_counter()
        await seed(admin, args.partitions)
        await store.set("tenant-00000", "node-b")  # the log exists before replicas start
        print(f"consul {agent.url}; seeded {args.partitions:,} partitions in {time.perf_counter() - t:.1f}s")

        # Baseline: one recursive read of partitions/, as a prefix watch would deliver it.
        base_bytes, base_ms = [], []
        for _ in range(3):
            b0, t0 = admin.bytes_received, time.perf_counter()
            items, _ = await admin.read_prefix(PARTITIONS)
            base_ms.append((time.perf_counter() - t0) * 1000)
            base_bytes.append(admin.bytes_received - b0)
        assert len(items) == args.partitions
        baseline = min(base_bytes)
        print(f"baseline: recursive read of partitions/ = {kb(baseline)} ({baseline / 1e6:.2f} MB), "
              f"{min(base_ms):.0f} ms (best of 3)")

        cold_ms: list[float] = []
        cold_bytes: list[int] = []
        applied: dict[int, list[float]] = {}
        all_applied = asyncio.Event()

        async def add_replica() -> None:
            c = ConsulConsensus(agent.url, "epochgate/", timeout_s=30)
            r = Replica(c, wait_s=args.wait)
            t0 = time.perf_counter()
            await r.start()
            cold_ms.append((time.perf_counter() - t0) * 1000)
            cold_bytes.append(c.bytes_received)

            def on_change(p, state, epoch):
                times = applied.setdefault(int(epoch), [])
                times.append(time.perf_counter())
                if len(times) >= len(replicas):
                    all_applied.set()
            r.subscribe(on_change)
            replicas.append((r, c))

        print(f"\n{'N':>5} {'bytes/replica/transition':>26} {'vs baseline':>12} {'commit p50':>11} "
              f"{'applied p50':>12} {'applied p99':>12} {'all N p50':>10} {'all N p99':>10} {'CPU/replica':>11}")
        rng = random.Random(7)
        for n in fleet:
            while len(replicas) < n:
                await add_replica()
            await asyncio.sleep(0.5)  # let every replica's blocking query settle
            b0 = sum(c.bytes_received for _, c in replicas)
            cpu0 = time.process_time()
            lat, fleet_lat, commit = [], [], []
            for i in range(args.transitions):
                p = f"tenant-{rng.randrange(args.partitions):05d}"
                cur = (await store.state(p))[0].source
                admin.txn = timed_txn
                epoch = await store.set(p, "node-b" if cur == "node-a" else "node-a")
                admin.txn = plain_txn
                t0 = txn_sent[-1]
                commit.append((time.perf_counter() - t0) * 1000)
                end = time.perf_counter() + 10
                while len(applied.get(int(epoch), ())) < n and time.perf_counter() < end:
                    all_applied.clear()  # set by the subscriber of the last replica to apply
                    try:
                        await asyncio.wait_for(all_applied.wait(), max(0.001, end - time.perf_counter()))
                    except asyncio.TimeoutError:
                        pass
                times = applied.pop(int(epoch), [])
                if len(times) < n:
                    print(f"  ! transition {i}: only {len(times)}/{n} replicas applied within 10 s")
                lat += [(x - t0) * 1000 for x in times]
                if times:
                    fleet_lat.append((max(times) - t0) * 1000)
            per = (sum(c.bytes_received for _, c in replicas) - b0) / (n * args.transitions)
            cpu_us = (time.process_time() - cpu0) / (n * args.transitions) * 1e6
            print(f"{n:>5} {kb(per):>26} {baseline / per:>11,.0f}x {pct(commit, 50):>9.1f}ms "
                  f"{pct(lat, 50):>10.1f}ms {pct(lat, 99):>10.1f}ms {pct(fleet_lat, 50):>8.1f}ms "
                  f"{pct(fleet_lat, 99):>8.1f}ms {cpu_us:>9.0f}µs")
            assert all(r.partitions() == replicas[0][0].partitions() for r, _ in replicas)

        print(f"\nreplica cold start ({len(cold_ms)} replicas, {args.partitions:,} partitions): "
              f"p50 {pct(cold_ms, 50):.0f} ms, p99 {pct(cold_ms, 99):.0f} ms, first {cold_ms[0]:.0f} ms; "
              f"{kb(pct(cold_bytes, 50))} read")
        print("CPU/replica = this process's CPU time per replica per transition (the whole fleet shares "
              "one Python event loop here, so fleet latency is about N x that; each real sidecar has its own)")
        print("latency = from sending the transition's txn to the replica's table applying it; "
              "'all N' = until the last of the N replicas applied it")
    finally:
        for r, c in replicas:
            await r.stop()
            await c.close()
        await admin.close()
        agent.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
