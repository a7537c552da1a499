"""A fleet of real processes for the migration end-to-end tests: example KV
nodes (``python -m examples.kv --consul``), sidecars (``python -m sidecar
--consul``) and controllers (``python -m sidecar controller``), each logging to
a file under the test's tmp dir, all stopped at the end (``Fleet.stop``; and
whatever a failed or timed-out test leaves running is reaped by
``tests/_procs.py``)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import grpc

from gate.pb.epochgate.v1 import epochgate_pb2 as pb
from gate.pb.epochgate.v1 import epochgate_pb2_grpc as pb_grpc

from ._consul import free_ports
from ._procs import kill_group, reap, spawn_python

ROOT = Path(__file__).resolve().parent.parent


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EPOCHGATE_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


@dataclass
class Proc:
    name: str
    args: list[str]
    log_path: Path
    popen: subprocess.Popen | None = None
    info: dict = field(default_factory=dict)
    env: dict = field(default_factory=dict)   # added to the scrubbed environment
    log_from: int = 0   # the log's size when this run started (a restart appends)

    def start(self) -> "Proc":
        self.log_from = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.popen = spawn_python(["-m", *self.args], cwd=ROOT, env={**_env(), **self.env}, stdout=log,
                                      stderr=subprocess.STDOUT)
        return self

    def signal(self, sig: int) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL (its whole process group), as when a pod dies."""
        if self.popen is not None:
            kill_group(self.popen)

    def stop(self) -> None:
        """SIGTERM (after SIGCONT), SIGKILL after 5 s; its process group with it."""
        if self.popen is not None:
            reap(self.popen, grace_s=5.0)

    def tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def this_run(self) -> str:
        """The log since the last ``start``."""
        try:
            return self.log_path.read_text(errors="replace")[self.log_from:]
        except OSError:
            return ""


async def wait_http(url: str, timeout_s: float = 30.0, proc: Proc | None = None) -> None:
    end = time.monotonic() + timeout_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as http:
        while time.monotonic() < end:
            if proc is not None and proc.popen is not None and proc.popen.poll() is not None:
                raise RuntimeError(f"{proc.name} exited: {proc.tail()}")
            try:
                async with http.get(url) as r:
                    if r.status == 200:
                        return
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout_s}s" + (f": {proc.tail()}" if proc else ""))


async def _says(proc: Proc, line: str, timeout_s: float) -> bool:
    """Wait until ``proc``'s log (this run's) has ``line``; False if it exits first."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if line in proc.this_run():
            return True
        if proc.popen is not None and proc.popen.poll() is not None:
            return False
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{proc.name}: no {line!r} after {timeout_s}s: {proc.tail()}")


class Fleet:
    def __init__(self, consul_url: str, prefix: str, tmp: Path) -> None:
        self.consul_url, self.prefix, self.tmp = consul_url, prefix, tmp
        self.procs: list[Proc] = []

    def _proc(self, name: str, args: list[str], env: dict | None = None) -> Proc:
        p = Proc(name, args, self.tmp / f"{name}.log", env=dict(env or {}))
        self.procs.append(p)
        return p.start()

    def _lost_port(self, p: Proc, last: bool, why: str) -> None:
        """``p`` exited: when it lost a port race (``free_ports`` cannot hold a port until its
        process binds it, and any process on the machine may take it meanwhile) and this was not
        the ``last`` attempt, drop it and return so the caller starts again on fresh ports."""
        exited = p.popen is not None and p.popen.poll() is not None
        if last or not exited or "already in use" not in p.this_run():
            raise RuntimeError(why)
        self.procs.remove(p)
        p.stop()

    async def _start(self, attempts: int, start: Callable[[], Proc],
                     ready: Callable[[Proc], Awaitable[None]]) -> Proc:
        """``start()`` a process and ``await ready(p)``; one that lost a port race (``_lost_port``)
        is started again on fresh ports, up to ``attempts`` times."""
        for attempt in range(attempts):
            p = start()
            try:
                await ready(p)
                return p
            except RuntimeError as exc:
                self._lost_port(p, attempt == attempts - 1, str(exc))
        raise AssertionError("unreachable")

    async def node(self, name: str, env: dict | None = None, attempts: int = 3) -> Proc:
        """An example KV node, returned once it said it listens on its own port: a /healthz
        answer alone could come from another process that took the port first (the node
        then fails to bind, and its URL reaches the other one: INV-M2 once reported every
        write of node c's partitions committed on node a)."""
        def start() -> Proc:
            (port,) = free_ports(1)
            p = self._proc(f"node-{name}", ["examples.kv", "--node", name, "--listen", f"127.0.0.1:{port}",
                                            "--data", str(self.tmp / f"data-{name}"), "--consul", self.consul_url,
                                            "--prefix", self.prefix, "--participant-id", f"kv-{name}"], env)
            p.info.update(url=f"http://127.0.0.1:{port}", data=self.tmp / f"data-{name}")
            return p

        async def ready(p: Proc) -> None:
            url = p.info["url"]
            if not await _says(p, f"examples.kv node {name} listening on {url}", 30):
                raise RuntimeError(f"node {name} did not start on {url}: {p.tail()}")
            await wait_http(url + "/healthz", 30, p)

        return await self._start(attempts, start, ready)

    async def sidecar(self, pid: str, ports: tuple[int, int, int] | None = None, wait: bool = True,
                      extra: list[str] | None = None, attempts: int = 3) -> Proc:
        """``ports`` given (or ``wait`` False): one attempt; else a lost port race starts it again."""
        def start() -> Proc:
            listen, admin, control = ports or free_ports(3)
            p = self._proc(f"sidecar-{pid}-{len(self.procs)}",
                           ["sidecar", "--consul", self.consul_url, "--prefix", self.prefix,
                            "--listen", f"127.0.0.1:{listen}", "--admin", f"127.0.0.1:{admin}",
                            "--control", f"127.0.0.1:{control}", "--participant-id", pid, "--no-access-log",
                            *(extra or [])])
            p.info.update(url=f"http://127.0.0.1:{listen}", admin=f"http://127.0.0.1:{admin}",
                          ports=(listen, admin, control), pid=pid)
            return p

        if not wait:
            return start()

        async def ready(p: Proc) -> None:
            await wait_http(p.info["admin"] + "/readyz", 30, p)

        return await self._start(attempts if ports is None else 1, start, ready)

    async def controller(self, name: str, deadline_s: float = 5.0, extra: list[str] | None = None,
                         module: str = "sidecar", env: dict | None = None, control: int | None = None,
                         attempts: int = 3) -> Proc:
        """``control``: a port reserved beforehand (sidecars started with ``--push-from`` it); then
        one attempt, else a lost port race starts it again on fresh ports."""
        def start() -> Proc:
            ctl, admin = (control, free_ports(1)[0]) if control else free_ports(2)
            p = self._proc(f"controller-{name}", [module, "controller", "--consul", self.consul_url,
                                                  "--prefix", self.prefix, "--control", f"127.0.0.1:{ctl}",
                                                  "--admin", f"127.0.0.1:{admin}",
                                                  "--cutover-deadline", str(deadline_s), *(extra or [])], env)
            p.info.update(control=f"127.0.0.1:{ctl}", admin=f"http://127.0.0.1:{admin}")
            return p

        async def ready(p: Proc) -> None:
            await wait_http(p.info["admin"] + "/healthz", 30, p)

        return await self._start(attempts if control is None else 1, start, ready)

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()

    def commits(self, *nodes: Proc) -> list[dict]:
        out = []
        for n in nodes:
            path = Path(n.info["data"]) / "commits.jsonl"
            if path.exists():
                out += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return out


class ControlClient:
    """The controller's Migration service over gRPC."""

    def __init__(self, addr: str) -> None:
        self.channel = grpc.aio.insecure_channel(addr)
        self.stub = pb_grpc.MigrationStub(self.channel)

    async def migrate(self, partition: str, to: str, deadline_s: float = 0.0, timeout_s: float = 60.0) -> pb.Job:
        job = await self.stub.Migrate(pb.MigrateRequest(partition=partition, to_node=to,
                                                        cutover_deadline_s=deadline_s), timeout=10)
        return await self.wait(job.id, timeout_s)

    async def wait(self, job_id: str, timeout_s: float = 60.0) -> pb.Job:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            job = await self.stub.GetJob(pb.JobRequest(id=job_id), timeout=10)
            if job.status in ("completed", "failed", "aborted"):
                return job
            await asyncio.sleep(0.05)
        raise TimeoutError(f"job {job_id} not final after {timeout_s}s: {job}")

    async def close(self) -> None:
        await self.channel.close()


def check_invariants(commits: list[dict], jobs: list[dict], initial: dict[str, tuple[str, int]]) -> list[str]:
    """INV-M1/M2/M3 and one node per (partition, epoch), from the backends' commit
    logs and the job records (``Job.to_dict()``). ``initial``: partition → (node, epoch)
    of the registration before any job."""
    errors: list[str] = []
    by_pe: dict[tuple[str, int], set[str]] = {}
    for c in commits:
        by_pe.setdefault((c["partition"], c["epoch"]), set()).add(c["node"])
    for (p, e), nodes in by_pe.items():
        if len(nodes) > 1:
            errors.append(f"partition {p} epoch {e} committed on {sorted(nodes)}")
    # owner of each partition as a function of epoch, from completed jobs
    flips: dict[str, list[tuple[int, str]]] = {p: [(e, n)] for p, (n, e) in initial.items()}
    for j in jobs:
        ph = {r["phase"]: r for r in j["phases"]}
        if j["status"] == "completed":
            flips.setdefault(j["partition"], []).append((ph["completed"]["epoch"], j["to_node"]))
            acked, done = ph.get("acked"), ph["completed"]
            if acked is not None:   # INV-M1: nothing commits between the barrier and the flip
                for c in commits:
                    # commits at the flip epoch or later are after the flip by definition
                    if c["partition"] == j["partition"] and c["epoch"] < done["epoch"] and c["t"] > acked["at"]:
                        errors.append(f"INV-M1: job {j['id']}: commit {c} between barrier and flip")
        elif j["status"] in ("aborted", "failed") and "draining" in ph:
            lo = ph["draining"]["epoch"]
            hi = max(r["epoch"] for r in j["phases"])
            for c in commits:   # INV-M3: nothing committed on `to` for an aborted job
                if c["partition"] == j["partition"] and c["node"] == j["to_node"] and lo <= c["epoch"] <= hi:
                    errors.append(f"INV-M3: aborted job {j['id']}: commit on to: {c}")
    for p in flips:
        flips[p].sort()
    for c in commits:   # INV-M2: every commit went to the placement current at its epoch
        owner = None
        for e, n in flips.get(c["partition"], []):
            if e <= c["epoch"]:
                owner = n
        if owner is not None and owner != c["node"]:
            errors.append(f"INV-M2: commit {c} on {c['node']}, placement at that epoch was {owner}")
    return errors


async def job_dicts(consul_url: str, prefix: str) -> list[dict]:
    """Every job record under ``prefix``, as the dicts ``check_invariants`` reads."""
    from gate._sessions import ConsulHTTP
    from sidecar.control.jobs import JobRecords

    c = ConsulHTTP(consul_url)
    try:
        jobs, _ = await JobRecords(c, prefix).list()
        return [j.to_dict() for j in jobs]
    finally:
        await c.close()


async def stop_writers(writers, tasks: list) -> None:
    """End a test's writer tasks whatever state the test left them in."""
    writers.running = False
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def end_leader_session(consul_url: str, prefix: str) -> None:
    """End the session holding ``<prefix>controller/leader``, as Consul does when its TTL runs out
    (10-20 s after the holder died or froze): a takeover test then need not wait for it."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        async with http.get(f"{consul_url}/v1/kv/{prefix}controller/leader") as r:
            sid = (await r.json())[0].get("Session")
        assert sid, "the controller should still hold the leader lock"
        async with http.put(f"{consul_url}/v1/session/destroy/{sid}") as r:
            assert r.status == 200, await r.text()
