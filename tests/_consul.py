"""Real Consul for the tests: a dev agent and a 3-server loopback cluster.

Both bind loopback ports picked free at start, and are always stopped.
``ConsulProcess`` can be killed (SIGKILL), frozen (SIGSTOP) and restarted, for
fault tests. The binary comes from ``scripts/get-consul``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests._procs import reap

ROOT = Path(__file__).resolve().parent.parent


def consul_binary() -> str:
    found = os.environ.get("EPOCHGATE_CONSUL_BIN") or shutil.which("consul")
    if found:
        return found
    out = subprocess.run([str(ROOT / "scripts" / "get-consul")], check=True, capture_output=True, text=True, timeout=300)
    return out.stdout.strip().splitlines()[-1]


# Every port free_ports handed out in this process, the most recent last. A port is free
# only until its probe socket closes, and the process it is meant for binds it a second or
# more later: in between, the kernel may pick the same port for the next probe (3 calls in a
# row repeat one about 2 times in 10,000 on this VM). Two processes of one fleet were then
# given one port; one failed to bind and the other answered for both (a drain test's kv node
# "a" committed every write of node c's partitions, which its INV-M2 check reported).
_HANDED_OUT: dict[int, None] = {}
_HANDED_OUT_MAX = 4096   # far more than one test binds; older ones are bound or long given up


def free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports free now and not handed out before by this process."""
    socks, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket()
            socks.append(s)   # held open until the end, so the kernel picks another one next
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            if port not in _HANDED_OUT:
                ports.append(port)
            elif len(socks) > n + 1000:
                raise RuntimeError(f"free_ports: no loopback port left that was not handed out ({len(socks)} tried)")
    finally:
        for s in socks:
            s.close()
    for port in ports:
        _HANDED_OUT[port] = None
    while len(_HANDED_OUT) > _HANDED_OUT_MAX:
        del _HANDED_OUT[next(iter(_HANDED_OUT))]
    return ports


@dataclass
class ConsulProcess:
    """One consul agent process (dev agent or cluster server)."""

    name: str
    args: list[str]
    http_port: int
    data_dir: str
    log_path: str
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc:
            reap(self.proc, grace_s=10.0)   # thaws a frozen agent first

    def freeze(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def leader(self, timeout: float = 1.0) -> str:
        with urllib.request.urlopen(f"{self.url}/v1/status/leader", timeout=timeout) as r:
            return json.loads(r.read())

    def _node_registered(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/v1/agent/self", timeout=1) as r:
            node = json.loads(r.read())["Config"]["NodeName"]
        with urllib.request.urlopen(f"{self.url}/v1/catalog/node/{node}", timeout=1) as r:
            return json.loads(r.read()) is not None

    def wait_ready(self, deadline_s: float = 30.0) -> None:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"consul {self.name} exited: {Path(self.log_path).read_text()[-2000:]}")
            try:
                if self.leader():
                    # KV must answer too (the leader can be known before raft is writable).
                    req = urllib.request.Request(f"{self.url}/v1/kv/epochgate-probe", data=b"1", method="PUT")
                    with urllib.request.urlopen(req, timeout=1) as r:
                        kv_ok = r.read().strip() == b"true"
                    # Sessions need the agent's node in the catalog ("Missing node
                    # registration" otherwise), which can trail the first KV write.
                    if kv_ok and self._node_registered():
                        return
            except (OSError, urllib.error.URLError, ValueError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"consul {self.name} not ready after {deadline_s}s")


def dev_agent(tmp: str) -> ConsulProcess:
    http, dns, serf_lan, serf_wan, server, grpc = free_ports(6)
    data = tempfile.mkdtemp(prefix="dev-", dir=tmp)
    cfg = {"ports": {"http": http, "dns": dns, "serf_lan": serf_lan, "serf_wan": serf_wan, "server": server,
                     "grpc": grpc}, "bind_addr": "127.0.0.1", "client_addr": "127.0.0.1",
           "disable_update_check": True}
    cfg_path = os.path.join(data, "cfg.json")
    Path(cfg_path).write_text(json.dumps(cfg))
    args = [consul_binary(), "agent", "-dev", "-config-file", cfg_path, "-node", "dev", "-log-level", "warn"]
    return ConsulProcess("dev", args, http, data, os.path.join(data, "consul.log"))


class ConsulCluster:
    """Three servers on loopback, ``raft_multiplier = 1`` for quick failover."""

    def __init__(self, tmp: str, size: int = 3) -> None:
        ports = [free_ports(5) for _ in range(size)]
        joins = [f"127.0.0.1:{p[1]}" for p in ports]
        self.servers: list[ConsulProcess] = []
        for i, (http, serf_lan, serf_wan, server, dns) in enumerate(ports):
            data = tempfile.mkdtemp(prefix=f"s{i}-", dir=tmp)
            cfg = {
                "server": True, "bootstrap_expect": size, "node_name": f"s{i}", "datacenter": "dc1",
                "data_dir": data, "bind_addr": "127.0.0.1", "client_addr": "127.0.0.1",
                "ports": {"http": http, "serf_lan": serf_lan, "serf_wan": serf_wan, "server": server, "dns": dns,
                          "grpc": -1},
                "retry_join": [j for j in joins if j != f"127.0.0.1:{serf_lan}"],
                "performance": {"raft_multiplier": 1}, "disable_update_check": True, "log_level": "warn",
                "leave_on_terminate": False, "skip_leave_on_interrupt": True,
            }
            cfg_path = os.path.join(data, "cfg.json")
            Path(cfg_path).write_text(json.dumps(cfg))
            self.servers.append(ConsulProcess(f"s{i}", [consul_binary(), "agent", "-config-file", cfg_path],
                                              http, data, os.path.join(data, "consul.log")))

    def start(self) -> None:
        for s in self.servers:
            s.start()

    def wait_ready(self, deadline_s: float = 60.0) -> None:
        """Every server answers KV and sessions (``ConsulProcess.wait_ready``), each within
        ``deadline_s``: longer than a dev agent's, as the servers first elect a leader."""
        for s in self.servers:
            s.wait_ready(deadline_s)

    def stop(self) -> None:
        for s in self.servers:
            s.stop()

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    def leader_server(self) -> ConsulProcess:
        """The server process currently leading (by its raft server port)."""
        for s in self.servers:
            try:
                addr = s.leader()
            except OSError:
                continue
            if addr:
                port = int(addr.rsplit(":", 1)[1])
                for t in self.servers:
                    if f'"server": {port}' in Path(t.data_dir, "cfg.json").read_text():
                        return t
        raise RuntimeError("no leader")


@pytest.fixture(scope="session")
def consul_tmp():
    d = tempfile.mkdtemp(prefix="epochgate-consul-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _port_race(exc: RuntimeError) -> bool:
    # free_ports() closes its sockets before Consul binds them: another process on the
    # machine may take one in between. Start again on fresh ports (bounded).
    return "address already in use" in str(exc)


def _started(make, attempts: int = 3):
    for attempt in range(attempts):
        proc = make()
        try:
            proc.start()
            proc.wait_ready()
            return proc
        except RuntimeError as exc:
            proc.stop()
            if not _port_race(exc) or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


@contextlib.contextmanager
def running_dev_agent(tmp: str):
    """Start a dev agent, wait until KV answers, always stop it."""
    agent = _started(lambda: dev_agent(tmp))
    try:
        yield agent
    finally:
        agent.stop()


@pytest.fixture(scope="session")
def consul_agent(consul_tmp):
    """A session-wide dev agent. Tests isolate themselves with a unique KV prefix."""
    with running_dev_agent(consul_tmp) as agent:
        yield agent


@pytest.fixture
def fresh_consul_agent(consul_tmp):
    """A dev agent of this test's own (to kill, freeze or restart)."""
    with running_dev_agent(consul_tmp) as agent:
        yield agent


@pytest.fixture
def consul_cluster(consul_tmp):
    cluster = _started(lambda: ConsulCluster(consul_tmp))
    try:
        yield cluster
    finally:
        cluster.stop()


_counter = iter(range(1_000_000))


@pytest.fixture
def kv_prefix(request) -> str:
    """A KV prefix unique to this test, ending in '/'."""
    return f"t{os.getpid()}-{next(_counter)}-{request.node.name[:40].replace('[', '-').replace(']', '')}/"
