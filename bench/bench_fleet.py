"""Fleet scale on a real 3-server Consul cluster (issue 19).

    python bench/bench_fleet.py --n 100,300,1000 [--partitions 1000] [--rounds 20] [--p-sizes 10000,100000]

Starts three Consul servers on loopback (``limits.http_max_conns_per_client``
raised: every participant here connects from 127.0.0.1), then for each N
(one fresh KV prefix per N) starts N barrier participants in several worker
processes — each participant with its own session, its own replica and its
own Consul connections, spread over the three servers as pods over their
agents — and measures from this (the controller's) process:

* barrier: ``enter_cutover`` committed → every listed participant acked, p50/p99,
  and the bytes Consul sent the controller for it, with the barrier as built
  (list once, then per-key waits) and with the old wait (a blocking list of
  ``sidecars/`` re-read on every ack) in the same run;
* transitions/s: one migration at a time through the store as it was (read,
  then compare-and-set on ``log/head``: today's serialised rate), 20 partitions
  migrating at once through that same path, and 20 at once with group commit;
  bytes each replica received per transition and Consul servers' CPU per
  transition (utime+stime of the three server processes, /proc) in each;
* bytes a replica receives per transition with 10,000 and 100,000 partitions
  (``--p-sizes``, a few replicas in this process, transitions one at a time).

The fleet's table has ``--partitions`` entries (default 1,000): a replica's
cold start reads the whole table, and 1,000 cold starts of 10,000 partitions
(2.4 GB through Consul) would measure the snapshot, not the fleet. Figures are
noisy (2 shared cores hold the cluster, the fleet and this process): compare
the ratios within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
# The push mode runs a gRPC server in this process, which then spawns workers: without this,
# grpc's fork handlers ran in the forked child and a worker sometimes died before exec (seen once).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
sys.path.insert(0, str(ROOT))

from gate import (  # noqa: E402
    BackendError,
    ConflictError,
    ConsensusStore,
    ConsulConsensus,
    ConsulHTTP,
    GroupCommit,
    InflightTracker,
    Participant,
    PartitionState,
    PushHub,
    Replica,
    TxnOp,
    parse_ack_entry,
)
from sidecar.control.barrier import Barrier, BarrierResult, BarrierTimeout, Listed  # noqa: E402
from bench._sockets import established  # noqa: E402


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def kb(n: float) -> str:
    return f"{n / 1024:,.1f} KiB" if n >= 1024 else f"{n:,.0f} B"


# ---- the worker process: a slice of the fleet ----------------------------------

async def worker(args: argparse.Namespace) -> None:
    urls = args.urls.split(",")
    parts: list[Participant] = []
    cons: list[ConsulConsensus] = []
    for i in range(args.first, args.first + args.count):
        url = urls[i % len(urls)]
        c = ConsulConsensus(url, args.prefix, timeout_s=30, connections=1)
        holder: dict = {}
        p = Participant(url, args.prefix, participant_id=f"f{i:05d}", ttl_s=args.ttl,
                        replica_factory=lambda c=c, h=holder: Replica(c, wait_s=h["p"].wait_s),
                        tracker=InflightTracker(), push_target=args.push_target or None,
                        http_session=c.http_session)   # one HTTP connection to Consul, as the sidecar
        holder["p"] = p
        parts.append(p)
        cons.append(c)
    for k in range(0, len(parts), 10):   # join in waves: a cold start reads the whole table
        await asyncio.gather(*(p.start(wait_joined_s=300) for p in parts[k:k + 10]))
    print("READY", flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if line == "STATS" or not line:
            reps = [p.replica for p in parts]
            print(json.dumps({"bytes": sum(c.bytes_received for c in cons), "updates": sum(r.updates for r in reps),
                              "snapshots": sum(r.snapshots for r in reps), "joins": sum(p.joins for p in parts),
                              "writable": sum(p.writable() for p in parts), "cpu": time.process_time(),
                              "linked": sum(p._link is not None and p._link.up for p in parts)}), flush=True)
        if not line:
            print(f"worker {args.first}: stdin closed; stopping", file=sys.stderr, flush=True)
        if line == "STOP" or not line:
            break
    await asyncio.gather(*(p.stop() for p in parts), return_exceptions=True)
    for c in cons:
        await c.close()


# ---- the controller side ---------------------------------------------------------

class Fleet:
    def __init__(self, urls: list[str], prefix: str, n: int, ttl: float, push_target: str = "") -> None:
        self.urls, self.prefix, self.n, self.ttl, self.push_target = urls, prefix, n, ttl, push_target
        self.procs: list[asyncio.subprocess.Process] = []

    async def start(self) -> None:
        workers = max(2, math.ceil(self.n / 100))
        per = math.ceil(self.n / workers)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        for w in range(workers):   # one worker joining at a time: 1,000 cold starts at once swamp 2 cores
            first, count = w * per, min(per, self.n - w * per)
            if count <= 0:
                break
            for attempt in range(2):
                p = await asyncio.create_subprocess_exec(
                    sys.executable, __file__, "--worker", "--urls", ",".join(self.urls), "--prefix", self.prefix,
                    "--first", str(first), "--count", str(count), "--ttl", str(self.ttl),
                    "--push-target", self.push_target,
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env)
                line = await asyncio.wait_for(p.stdout.readline(), 600)
                if line.strip() == b"READY":
                    break
                note(f"worker {w} failed to start ({line!r}, exit {await p.wait()}); attempt {attempt + 2}")
            else:
                raise RuntimeError(f"worker failed to start: {line!r}")
            self.procs.append(p)

    async def stats(self) -> dict:
        out: dict = {}
        for p in self.procs:
            p.stdin.write(b"STATS\n")
            await p.stdin.drain()
        for p in self.procs:
            for k, v in json.loads(await p.stdout.readline()).items():
                out[k] = out.get(k, 0) + v
        return out

    async def stop(self) -> None:
        for p in self.procs:
            if p.returncode is None:
                try:
                    p.stdin.write(b"STOP\n")
                    await p.stdin.drain()
                except (BrokenPipeError, ConnectionResetError):
                    pass
        async def reap(p: asyncio.subprocess.Process) -> None:
            try:
                await asyncio.wait_for(p.wait(), 60)
            except asyncio.TimeoutError:
                p.kill()
                await p.wait()
        await asyncio.gather(*(reap(p) for p in self.procs))


class OldBarrier(Barrier):
    """The wait as it was before issue 19, for the same-run baseline: a blocking
    list of the whole ``sidecars/`` prefix, re-read whenever any key changes."""

    async def wait(self, epoch, listed, index, committed_at, deadline_s) -> BarrierResult:
        res = BarrierResult(int(epoch), list(listed.values()), committed_at=committed_at)
        end = committed_at + deadline_s
        current = dict(listed)
        try:
            while True:
                res.acked.clear(), res.dropped.clear(), res.pending.clear()
                for pid, item in listed.items():
                    now = current.get(pid)
                    if now is None or now.session != item.session:
                        res.dropped.add(pid)
                    elif now.epoch >= epoch:
                        res.acked.add(pid)
                    else:
                        res.pending.add(pid)
                if not res.pending:
                    res.passed_at, res.passed_wall = time.monotonic(), time.time()
                    return res
                if end - time.monotonic() <= 0:
                    raise BarrierTimeout(res)
                target = self.reader._target(self.dir) + f"?recurse&index={index}&wait=1000ms"
                status, headers, body = await self.reader._get(target, 12.0)
                index = int(headers.get("x-consul-index", "0"))
                rows = json.loads(body) if status == 200 and body else []
                current = {}
                for r in rows:
                    k = parse_ack_entry(r)
                    if k.session is not None:
                        pid = r["Key"][len(self.dir):]
                        current[pid] = Listed(pid, k.session, k.epoch, k.index)
        finally:
            await self.reader.close()


def note(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def _byte_parts(barrier: Barrier) -> dict[str, int]:
    hub = barrier.hub
    out = {"consul": barrier.reader.bytes_received}
    if hub is not None:
        out.update(pushes=hub.bytes_sent, acks=hub.bytes_received)
    return out


def server_cpu(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / tick


async def seed(c: ConsulConsensus, prefix_keys: list[str]) -> None:
    # The store's own value format for partitions/<p>, written in bulk for speed.
    state = json.dumps(PartitionState.active("a").to_dict(), separators=(",", ":")).encode()
    for i in range(0, len(prefix_keys), 64):
        assert await c.txn([TxnOp("put", k, state) for k in prefix_keys[i:i + 64]]) is not None


async def _retrying(call, failed: list[int]):
    while True:
        try:
            return await call()
        except ConflictError:   # lost max_attempts compare-and-sets in a row: the old path under load
            failed[0] += 1


async def migrate_loop(store: ConsensusStore, p: str, until: float, count: list[int], failed: list[int]) -> None:
    to = "b" if (await store.state(p))[0].source == "a" else "a"
    while time.monotonic() < until:
        await _retrying(lambda: store.begin(p, to), failed)
        await _retrying(lambda: store.enter_cutover(p), failed)
        await _retrying(lambda: store.complete(p), failed)
        count[0] += 3
        to = "a" if to == "b" else "b"


async def rate(store: ConsensusStore, parts: list[str], seconds: float, fleet: Fleet, cpu_pids: list[int]) -> dict:
    s0, c0, t0 = await fleet.stats(), server_cpu(cpu_pids), time.monotonic()
    count, failed = [0], [0]
    await asyncio.gather(*(migrate_loop(store, p, t0 + seconds, count, failed) for p in parts))
    el = time.monotonic() - t0
    await asyncio.sleep(0.5)   # let the fleet's last answers arrive before counting bytes
    s1, c1 = await fleet.stats(), server_cpu(cpu_pids)
    n = count[0]
    return {"tps": n / el, "n": n, "replica_bytes": (s1["bytes"] - s0["bytes"]) / max(1, n * fleet.n),
            "consul_ms": (c1 - c0) * 1000 / max(1, n), "conflict_errors": failed[0]}


async def run_n(urls: list[str], cpu_pids: list[int], n: int, args: argparse.Namespace, mode: str = "consul") -> dict:
    """One fleet of ``n``: ``mode`` "consul" (acks in sidecars/<id>, the barrier reads them) or
    "push" (issue 31: the controller pushes log/head over one stream per participant and
    counts their stream acks; Consul only as the fallback)."""
    prefix = f"fleet{n:05d}{mode}/"   # same length for every N: bytes per barrier compare
    admin = ConsulConsensus(urls[0], prefix, timeout_s=30)
    plain = ConsensusStore(admin)
    grouped = ConsensusStore(admin)
    grouped.group = GroupCommit(grouped)
    await seed(admin, [f"partitions/t{i:06d}" for i in range(args.partitions)])
    await plain.set("t000000", "a")   # the log exists before replicas start
    hub = server = None
    target = ""
    if mode == "push":
        import grpc
        hub = PushHub(ConsulConsensus(urls[0], prefix, timeout_s=30), fence=1, wait_s=5.0)
        server = grpc.aio.server(options=[("grpc.max_concurrent_streams", 1 << 20), *PushHub.server_options()])
        hub.add_to(server)
        target = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
        await server.start()
        await hub.start()
    fleet = Fleet(urls, prefix, n, args.ttl, target)
    kv = ConsulHTTP(urls[0])
    row: dict = {"n": n, "mode": mode}
    t0 = time.monotonic()
    try:
        await fleet.start()
        row["start_s"] = time.monotonic() - t0
        for _ in range(120):   # a starved machine fails participants closed (rule 3); they rejoin
            await asyncio.sleep(1.0)
            st = await fleet.stats()
            if st["writable"] == n and (mode != "push" or st["linked"] == n):
                break
        row["writable_at_start"] = st["writable"]
        row["linked_at_start"] = st["linked"]
        note(f"N={n} {mode}: fleet up in {row['start_s']:.0f}s, {st['writable']} writable, {st['linked']} linked")
        settle = 0.5 + 0.2   # Participant.ack_every_s + a margin
        waits = [("new", Barrier(kv, prefix, hub=hub), args.rounds)]
        if mode == "consul":
            waits.append(("old", OldBarrier(kv, prefix), args.old_rounds))
        for name, barrier, rounds in waits:
            lags, nbytes, cpu, cpu_abs, ctl_cpu, windows = [], [], [], [], [], []
            parts: dict[str, list[int]] = {}
            for r in range(rounds):
                p = "t000001"
                where = (await plain.state(p))[0].source
                await plain.begin(p, "b" if where == "a" else "a")
                # a real move copies data here; let the begin's coalesced acks land first
                await asyncio.sleep(settle)
                i0, it = server_cpu(cpu_pids), time.monotonic()   # Consul's idle rate (renewals, polls)
                await asyncio.sleep(0.5)
                idle = (server_cpu(cpu_pids) - i0) / (time.monotonic() - it)
                parts0 = _byte_parts(barrier)
                b0, c0, k0, t0 = barrier.wire_bytes, server_cpu(cpu_pids), time.process_time(), time.monotonic()
                try:
                    res = await barrier.cutover(plain, p, 30.0)
                except BarrierTimeout as exc:   # recorded, not hidden: the row says how many
                    row[f"{name}_timeouts"] = row.get(f"{name}_timeouts", 0) + 1
                    res = exc.result
                    res.passed_at = time.monotonic()
                except BackendError as exc:   # a Consul election on a starved machine: recorded, next round
                    row[f"{name}_errors"] = row.get(f"{name}_errors", 0) + 1
                    note(f"N={n} {mode}: barrier failed ({exc}); aborting the move")
                    await asyncio.sleep(1.0)
                    if (await plain.state(p))[0].phase.name != "ACTIVE":
                        await plain.abort(p)
                    await asyncio.sleep(settle)
                    continue
                cpu_abs.append(server_cpu(cpu_pids) - c0)
                cpu.append(cpu_abs[-1] - idle * (time.monotonic() - t0))   # the cutover's own
                ctl_cpu.append(time.process_time() - k0)
                nbytes.append(barrier.wire_bytes - b0)
                for k, v in _byte_parts(barrier).items():   # where the bytes went (list, pushes, acks)
                    parts.setdefault(k, []).append(v - parts0[k])
                row[f"{name}_dropped"] = row.get(f"{name}_dropped", 0) + len(res.dropped)
                row[f"{name}_listed_min"] = min(row.get(f"{name}_listed_min", n), len(res.listed))
                lags.append(res.ack_lag)
                if res.pending:
                    await plain.abort(p)
                    await asyncio.sleep(settle)
                    continue
                await plain.complete(p)
                windows.append(time.monotonic() - res.committed_at)   # enter_cutover → the flip
                await asyncio.sleep(settle)
            note(f"N={n} {mode}: {rounds} barriers ({name} wait) done; {(await fleet.stats())['writable']} writable")
            row[f"{name}_p50"], row[f"{name}_p99"] = pct(lags, 50) * 1000, pct(lags, 99) * 1000
            row[f"{name}_window_p50"] = pct(windows, 50) * 1000
            row[f"{name}_bytes"] = pct(nbytes, 50)
            row[f"{name}_bytes_parts"] = {k: pct(v, 50) for k, v in parts.items()}
            row[f"{name}_cpu_ms"] = sum(cpu) / max(1, len(cpu)) * 1000   # mean: /proc counts 10 ms ticks
            row[f"{name}_cpu_abs_ms"] = sum(cpu_abs) / max(1, len(cpu_abs)) * 1000
            row[f"{name}_ctl_cpu_ms"] = sum(ctl_cpu) / max(1, len(ctl_cpu)) * 1000
        # Connections per participant, counted (issue 31): the ESTABLISHED sockets the worker
        # processes hold, to Consul and to the hub, after the barriers (steady state).
        conns = established(p.pid for p in fleet.procs)
        consul_ports = {urlsplit(u).port for u in urls}
        hub_port = int(target.rsplit(":", 1)[1]) if target else -1
        row["conns_consul"] = sum(c.remote_port in consul_ports for c in conns) / n
        row["conns_stream"] = sum(c.remote_port == hub_port for c in conns) / n
        note(f"N={n} {mode}: connections per participant {row['conns_consul'] + row['conns_stream']:.2f} "
             f"({row['conns_consul']:.2f} to Consul, {row['conns_stream']:.2f} streams)")
        if args.rate_seconds > 0:
            movers = [f"t{i:06d}" for i in range(10, 30)]
            row["serial"] = await rate(plain, movers[:1], args.rate_seconds, fleet, cpu_pids)
            note(f"N={n}: serial rate {row['serial']['tps']:.0f}/s")
            row["c20_old"] = await rate(plain, movers, args.rate_seconds, fleet, cpu_pids)
            note(f"N={n}: 20 at once, old path {row['c20_old']['tps']:.0f}/s")
            row["c20_group"] = await rate(grouped, movers, args.rate_seconds, fleet, cpu_pids)
            note(f"N={n}: 20 at once, group commit {row['c20_group']['tps']:.0f}/s")
            row["batch"] = grouped.group.transitions / max(1, grouped.group.commits)
            row["conflicts_old"] = plain.conflicts
        st = await fleet.stats()
        row["rejoins"] = st["joins"] - n
        row["load"] = os.getloadavg()[0]
        print(json.dumps(row), flush=True)   # before the (slow) stop of the fleet
    finally:
        await fleet.stop()
        await kv.close()
        await admin.close()
        if hub is not None:
            await hub.stop()
            await hub.consensus.close()
            await server.stop(None)
    return row


async def p_sizes(urls: list[str], sizes: list[int], replicas: int, transitions: int) -> list[tuple[int, float]]:
    out = []
    for size in sizes:
        prefix = f"psize{size}/"
        admin = ConsulConsensus(urls[0], prefix, timeout_s=60)
        store = ConsensusStore(admin)
        await seed(admin, [f"partitions/t{i:06d}" for i in range(size)])
        await store.set("t000000", "b")
        cs = [ConsulConsensus(urls[i % len(urls)], prefix, timeout_s=60) for i in range(replicas)]
        reps = [Replica(c, wait_s=5.0) for c in cs]
        for r in reps:
            await r.start()
        await asyncio.sleep(0.5)
        b0 = sum(c.bytes_received for c in cs)
        for i in range(transitions):
            p = f"t{(i * 7919) % size:06d}"
            await store.set(p, "b" if i % 2 == 0 else "a")
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)
        per = (sum(c.bytes_received for c in cs) - b0) / (replicas * transitions)
        assert all(r.partitions() == reps[0].partitions() for r in reps)
        out.append((size, per))
        for r in reps:
            await r.stop()
        for c in cs:
            await c.close()
        await admin.close()
    return out


def start_cluster(tmp: str, max_conns: int):
    from tests._consul import ConsulCluster
    cluster = ConsulCluster(tmp)
    for s in cluster.servers:
        cfg_path = Path(s.data_dir) / "cfg.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["limits"] = {"http_max_conns_per_client": max_conns}
        cfg_path.write_text(json.dumps(cfg))
    cluster.start()
    cluster.wait_ready()
    return cluster


async def main(args: argparse.Namespace) -> None:
    tmp = tempfile.mkdtemp(prefix="bench-fleet-")
    sizes = [int(x) for x in args.n.split(",")]
    cluster = start_cluster(tmp, max(4096, 6 * max(sizes)))
    rows = []
    try:
        urls = cluster.urls
        pids = [s.proc.pid for s in cluster.servers]
        print(f"consul: 3 servers {urls}; fleet table {args.partitions:,} partitions; session TTL {args.ttl:g}s", flush=True)
        if args.p_sizes:
            for size, per in await p_sizes(urls, [int(x) for x in args.p_sizes.split(",")], 5, 40):
                print(f"replica bytes per transition, {size:,} partitions: {per:,.0f} B", flush=True)
        for n in sizes:
            for mode in args.modes.split(","):
                rows.append(await run_n(urls, pids, n, args, mode))
    finally:
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(f"load average at the end: {os.getloadavg()}")
    print("Consul CPU/cutover: the 3 servers' CPU from the commit to the barrier passing, less their idle rate "
          "(measured just before) over that time; '(all, in barrier)': without that subtraction")
    print(f"{'N':>5} {'mode':>6} | {'barrier p50/p99 ms':>19} | {'write window p50':>16} | {'ctl bytes/barrier':>17} | "
          f"{'Consul CPU/cutover':>18} | {'(all, in barrier)':>17} | {'ctl CPU/cutover':>15} | {'dropped':>7} | {'timeouts':>8} | "
          f"{'conns/participant':>17} | {'load':>5}")
    for r in rows:
        print(f"{r['n']:>5} {r['mode']:>6} | {r['new_p50']:>8.0f} / {r['new_p99']:>7.0f} | "
              f"{r['new_window_p50']:>13.0f} ms | {kb(r['new_bytes']):>17} | {r['new_cpu_ms']:>15.0f} ms | "
              f"{r['new_cpu_abs_ms']:>14.0f} ms | {r['new_ctl_cpu_ms']:>12.0f} ms | {r.get('new_dropped', 0):>7} | {r.get('new_timeouts', 0):>8} | "
              f"{r['conns_consul'] + r['conns_stream']:>6.2f} ({r['conns_consul']:.2f}+{r['conns_stream']:.2f}) | "
              f"{r['load']:>5.1f}")
        parts = r.get("new_bytes_parts") or {}
        print(f"{'':>5} {'':>6} | bytes per barrier per participant: " +
              ", ".join(f"{k} {v / r['n']:.1f} B" for k, v in parts.items()))
        if r.get("old_p50", float("nan")) == r.get("old_p50", float("nan")):   # not NaN: the old wait ran
            print(f"{'':>5} {'(old wait)':>6} | {r['old_p50']:>8.0f} / {r['old_p99']:>7.0f} | "
                  f"{r['old_window_p50']:>13.0f} ms | {kb(r['old_bytes']):>17} | {r['old_cpu_ms']:>15.0f} ms |")
    for r in rows:
        if "serial" in r:
            s, o, g = r["serial"], r["c20_old"], r["c20_group"]
            print(f"N={r['n']} {r['mode']}: transitions/s serial {s['tps']:.0f} · 20 old {o['tps']:.0f} · "
                  f"20 group {g['tps']:.0f}; replica B/transition {kb(s['replica_bytes'])} / "
                  f"{kb(g['replica_bytes'])}; Consul CPU/transition {s['consul_ms']:.1f} / {g['consul_ms']:.1f} ms; "
                  f"batch {r['batch']:.1f}")
    for mode in args.modes.split(","):
        mine = [r for r in rows if r["mode"] == mode]
        if len(mine) > 1:
            a, b = mine[0], mine[-1]
            print(f"{mode}: N={b['n']} / N={a['n']} (fleet {b['n'] / a['n']:.0f}x): controller bytes per barrier "
                  f"{b['new_bytes'] / a['new_bytes']:.1f}, Consul CPU per cutover "
                  f"{b['new_cpu_ms'] / max(1e-9, a['new_cpu_ms']):.1f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", default="100,300,1000", help="fleet sizes, ascending")
    ap.add_argument("--partitions", type=int, default=1000, help="partitions in the fleet's table")
    ap.add_argument("--rounds", type=int, default=20, help="barriers measured per N (as built)")
    ap.add_argument("--old-rounds", type=int, default=5, help="barriers measured per N with the old wait")
    ap.add_argument("--rate-seconds", type=float, default=4.0, help="per transitions/s phase (0 = skip them)")
    ap.add_argument("--modes", default="consul,push",
                    help="barrier transports, each on its own fleet in the same run: consul (acks in sidecars/<id>), "
                         "push (issue 31: a stream per participant from the controller)")
    ap.add_argument("--push-target", default="", help=argparse.SUPPRESS)
    ap.add_argument("--ttl", type=float, default=30.0, help="participants' session TTL (lease = TTL/2)")
    ap.add_argument("--p-sizes", default="10000,100000", help="table sizes for replica bytes per transition ('' = skip)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--urls", help=argparse.SUPPRESS)
    ap.add_argument("--prefix", help=argparse.SUPPRESS)
    ap.add_argument("--first", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--count", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    if a.worker:
        import signal

        def _report(sig, frame):
            print(f"worker {a.first}: signal {sig}", file=sys.stderr, flush=True)
            raise SystemExit(128 + sig)
        signal.signal(signal.SIGTERM, _report)
        try:
            asyncio.run(worker(a))
        except BaseException:
            import traceback
            traceback.print_exc()
            print(f"worker {a.first}: failed", file=sys.stderr, flush=True)
            raise
    else:
        asyncio.run(main(a))
