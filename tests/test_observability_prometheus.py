"""The dashboards and alerts against a real Prometheus scraping real epochgate processes.

A Prometheus (the Debian package's binary) scrapes a sidecar and the controller
(on a Consul agent, example KV nodes behind the sidecar) every second while a
controller job migrates one partition and another goes through a cutover with a
write held. Then every panel query of both dashboards goes through the HTTP API
as Grafana sends it (range queries for time series, instant for stats): each
parses, returns data, and all but a listed few show a non-zero value. The
template-variable queries go through the label-values API; every alert
expression evaluates, and Prometheus' own evaluation of the rule file is
healthy. Finally the controller is stopped and Consul frozen, and the alert
expressions for those failures must name the failed process.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import grpc
import pytest

from gate._consul_consensus import open_consul
from gate.pb.epochgate.v1 import epochgate_pb2 as pb
from gate.pb.epochgate.v1 import epochgate_pb2_grpc as pb_grpc
from tests._consul import free_ports
from tests._procs import reap
from tests.test_observability_names import RULES, panel_queries, rule_exprs, substitute, variable_queries

ROOT = Path(__file__).resolve().parent.parent
SIDECAR_JOB, CONTROLLER_JOB = "epochgate-sidecar", "epochgate-controller"


def _get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Prometheus:
    """A real Prometheus on a free loopback port, scraping every second, evaluating our rules every second."""

    def __init__(self, tmp: Path, targets: dict[str, list[str]]) -> None:
        self.port = free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": t}]} for job, t in targets.items()],
        }
        self.config = tmp / "prometheus.yml"
        self.config.write_text(json.dumps(config))  # JSON is YAML
        self.log = tmp / "prometheus.log"
        self.args = [self.binary(), f"--config.file={self.config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                     f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"]
        self.proc: subprocess.Popen | None = None

    @staticmethod
    def binary() -> str:
        found = shutil.which("prometheus")
        if not found:
            pytest.skip("prometheus not installed (scripts/test installs the Debian package)")
        return found

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        end = time.monotonic() + 30
        while time.monotonic() < end:
            assert self.proc.poll() is None, f"prometheus exited: {self.log.read_text()[-3000:]}"
            try:
                if _get(f"{self.url}/-/ready", 1)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"prometheus not ready: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc:
            reap(self.proc, grace_s=10.0)

    def api(self, path: str, **params) -> tuple[int, dict]:
        status, body = _get(f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params, doseq=True)}")
        return status, json.loads(body)

    def query(self, expr: str) -> list[dict]:
        status, doc = self.api("query", query=expr)
        assert status == 200 and doc["status"] == "success", f"{expr!r}: {doc}"
        return doc["data"]["result"]

    def query_range(self, expr: str, start: float, end: float) -> list[dict]:
        status, doc = self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step="1s")
        assert status == 200 and doc["status"] == "success", f"{expr!r}: {doc}"
        return doc["data"]["result"]

    def wait_true(self, expr: str, deadline_s: float = 10.0) -> None:
        """Until ``expr`` returns a series (e.g. until a value has been scraped)."""
        end = time.monotonic() + deadline_s
        while not self.query(expr):
            assert time.monotonic() < end, f"never true: {expr}"
            time.sleep(0.1)

    def scrapes(self, job: str) -> float:
        """Samples of ``up`` stored for ``job`` so far (one per scrape)."""
        result = self.query(f'count_over_time(up{{job="{job}"}}[10m])')
        return float(result[0]["value"][1]) if result else 0.0

    def wait_scrapes(self, job: str, n: int, deadline_s: float = 20.0) -> None:
        start = self.scrapes(job)
        end = time.monotonic() + deadline_s
        while self.scrapes(job) < start + n:
            assert time.monotonic() < end, f"{job}: fewer than {n} scrapes in {deadline_s}s"
            time.sleep(0.25)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EPOCHGATE_")}
    env["PYTHONPATH"] = str(ROOT)
    # the kv nodes run with --gate (no Consul): the mover credential comes from the environment
    # on both sides (DESIGN §6)
    env["EPOCHGATE_MOVER_TOKEN"] = "observability-test-mover-token"
    return env


class Procs:
    """Real epochgate processes (``python -m …``), each logging to a file, all stopped at the end."""

    def __init__(self, tmp: Path) -> None:
        self.tmp, self.procs = tmp, {}

    def start(self, name: str, *args: str) -> None:
        with open(self.tmp / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, env=_env(), stdout=log,
                                                stderr=subprocess.STDOUT, start_new_session=True)

    def tail(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")[-3000:]

    def wait_http(self, name: str, url: str, deadline_s: float = 30.0) -> None:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            assert self.procs[name].poll() is None, f"{name} exited: {self.tail(name)}"
            try:
                if _get(url, 1)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{name}: {url} not ready after {deadline_s}s: {self.tail(name)}")

    def stop(self) -> None:
        for proc in reversed(self.procs.values()):
            reap(proc, grace_s=10.0)


class Traffic:
    """Reads and writes through the sidecar from a thread until stopped; counts the answers."""

    def __init__(self, url: str, partitions: list[str]) -> None:
        self.url, self.partitions, self.status = url, partitions, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def _run(self) -> None:
        for n in itertools.count():
            if self._stop.is_set():
                return
            p = self.partitions[(n // 2) % len(self.partitions)]  # a GET reads the key the PUT before wrote
            method, data = ("PUT", f"v{n}".encode()) if n % 2 == 0 else ("GET", None)
            req = urllib.request.Request(f"{self.url}/kv/k{n // 2}", data=data, method=method,
                                         headers={"X-Partition-Key": p})
            try:
                with urllib.request.urlopen(req, timeout=15) as r:
                    code = r.status
            except urllib.error.HTTPError as exc:
                code = exc.code
            except OSError:
                code = 0
            self.status[(method, code)] = self.status.get((method, code), 0) + 1
            self._stop.wait(0.01)

    def __enter__(self) -> "Traffic":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(20)


async def _seed(consul_url: str, prefix: str, nodes: dict[str, str], partitions: dict[str, str]) -> None:
    consensus, store, _replica = await open_consul(consul_url, prefix)
    try:
        for name, url in nodes.items():
            await store.set_node(name, url)
        for partition, node in partitions.items():
            await store.set(partition, node)
    finally:
        await consensus.close()


@pytest.fixture
def fleet(tmp_path, fresh_consul_agent, kv_prefix):
    """A running fleet on a real Consul agent of its own: example KV nodes a and b behind one sidecar, and the
    controller. Yields (Procs, {name: address}, the Consul agent)."""
    procs = Procs(tmp_path)
    kv_a, kv_b, listen, admin, control, ctl_admin, ctl_control = free_ports(7)
    nodes = {"a": f"http://127.0.0.1:{kv_a}", "b": f"http://127.0.0.1:{kv_b}"}
    consul_agent = fresh_consul_agent  # this test freezes it
    asyncio.run(_seed(consul_agent.url, kv_prefix, nodes, {"t1": "a", "t2": "b"}))
    consul = ["--consul", consul_agent.url, "--prefix", kv_prefix]
    try:
        for name, port in (("a", kv_a), ("b", kv_b)):
            # The app admits at its commit point through the sidecar's Gate API (one table, no lag between
            # the sidecar's view and the app's).
            procs.start(f"kv-{name}", "examples.kv", "--node", name, "--listen", f"127.0.0.1:{port}",
                        "--data", str(tmp_path / f"data-{name}"), "--gate", f"127.0.0.1:{control}")
        # A short lease (and so a short blocking wait) makes "Consul unreachable" show within seconds.
        procs.start("sidecar", "sidecar", *consul, "--listen", f"127.0.0.1:{listen}", "--admin",
                    f"127.0.0.1:{admin}", "--control", f"127.0.0.1:{control}", "--participant-id", "sc0",
                    "--no-access-log", "--hold-seconds", "30",  # margin for the hand cutover on a busy machine
                    "--lease-seconds", "3")
        procs.start("controller", "sidecar", "controller", *consul, "--control", f"127.0.0.1:{ctl_control}",
                    "--admin", f"127.0.0.1:{ctl_admin}")
        for name, port in (("kv-a", kv_a), ("kv-b", kv_b)):
            procs.wait_http(name, f"http://127.0.0.1:{port}/healthz")
        procs.wait_http("sidecar", f"http://127.0.0.1:{admin}/readyz")
        procs.wait_http("controller", f"http://127.0.0.1:{ctl_admin}/healthz")
        yield procs, {"sidecar": f"http://127.0.0.1:{listen}", "sidecar_admin": f"127.0.0.1:{admin}",
                      "controller_admin": f"127.0.0.1:{ctl_admin}", "controller_control": f"127.0.0.1:{ctl_control}"}, \
            consul_agent
    finally:
        procs.stop()


def _admin_value(admin: str, sample: str) -> float | None:
    """One sample's value from a process's /metrics (``sample`` as written in the exposition)."""
    text = _get(f"http://{admin}/metrics")[1].decode()
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return None


def _wait_admin(admin: str, sample: str, at_least: float, deadline_s: float = 10.0) -> None:
    end = time.monotonic() + deadline_s
    while (_admin_value(admin, sample) or 0.0) < at_least:
        assert time.monotonic() < end, f"{admin}: {sample} never reached {at_least}"
        time.sleep(0.05)


def _held_write_through_cutover(addresses: dict[str, str], partition: str, to: str, prom: Prometheus) -> None:
    """Step ``partition`` through a cutover by hand (Migration RPCs on the controller's control API) with a
    write arriving while it is held, so rejections and hold times show without depending on timing."""
    admin = addresses["sidecar_admin"]
    with grpc.insecure_channel(addresses["controller_control"]) as channel:
        stub = pb_grpc.MigrationStub(channel)
        stub.Begin(pb.BeginRequest(partition=partition, to_node=to), timeout=10)
        stub.EnterCutover(pb.PartitionRequest(partition=partition), timeout=10)
        _wait_admin(admin, 'epochgate_partitions{phase="cutover"}', 1.0)
        answer: list[tuple[int, bytes]] = []

        def write() -> None:
            req = urllib.request.Request(f"{addresses['sidecar']}/kv/held", data=b"v", method="PUT",
                                         headers={"X-Partition-Key": partition})
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    answer.append((r.status, r.read()))
            except urllib.error.HTTPError as exc:
                answer.append((exc.code, exc.read()))

        writer = threading.Thread(target=write)
        writer.start()
        try:
            _wait_admin(admin, "epochgate_held_writes", 1.0)
            # Flip only once Prometheus has seen the cutover and the held write.
            prom.wait_true(f'max_over_time(epochgate_held_writes{{job="{SIDECAR_JOB}"}}[1m]) >= 1 and on () '
                           f'max_over_time(epochgate_partitions{{job="{SIDECAR_JOB}", phase="cutover"}}[1m]) >= 1')
        finally:
            stub.Complete(pb.PartitionRequest(partition=partition), timeout=10)
            writer.join(30)
    assert [status for status, _ in answer] == [200], f"the held write was not released by the flip: {answer}"


def _migrate(addresses: dict[str, str], partition: str, to: str) -> None:
    """Through the operator CLI, as an operator would; follows the job to its end."""
    out = subprocess.run([sys.executable, "-m", "sidecar", "migrate", "--partition", partition, "--to", to,
                          "--control", addresses["controller_control"]], cwd=ROOT, env=_env(),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"migrate {partition} → {to}: {out.stdout}{out.stderr}"


# Panels (by title, or "title / refId") that may read 0 throughout on a healthy fleet: instant stats of
# states that have passed by the end (their time-series counterparts must show them), failure counts, and
# writes in flight at the instant of a scrape (light sequential traffic rarely has one).
QUIET_WHEN_HEALTHY = {
    "Sidecars failing closed", "Fail-closed processes", "Table epoch spread", "Non-ok request ratio",
    "Partitions migrating", "Partitions in cutover", "Held and in-flight writes / B", "Watch updates and errors / B",
    "Replicas stopped at an unparseable log entry",
}


# Panels about hash slots and resharding: this fleet routes named partitions (no --hash-slots) and
# reshards nothing, so they have no series or only zeros here; their queries still run and must parse,
# their metrics are checked exported (test_observability_names), and test_reshard_cli reads the slot rates.
NOT_IN_THIS_FLEET = {"Requests per hash slot", "Hottest slot's share of requests",
                     "Split and merge jobs by status (time range)"}


def _number(point: list) -> bool:
    """True when a ``[time, "value"]`` point is a real non-zero number (not 0, NaN or ±Inf)."""
    value = float(point[1])
    return value == value and value not in (0.0, float("inf"), float("-inf"))


@pytest.mark.consul
@pytest.mark.slow
def test_dashboards_and_alerts_against_a_live_fleet(tmp_path, fleet):
    procs, addr, consul = fleet
    prom = Prometheus(tmp_path, {SIDECAR_JOB: [addr["sidecar_admin"]], CONTROLLER_JOB: [addr["controller_admin"]]})
    prom.start()
    started = time.time()
    try:
        with Traffic(addr["sidecar"], ["t1", "t2"]) as traffic:
            prom.wait_scrapes(SIDECAR_JOB, 2)  # a baseline before the migration, so increase() sees it
            _migrate(addr, "t1", "b")
            _held_write_through_cutover(addr, "t2", "a", prom)
            # rate() and increase() need two samples inside their window; a few more settle the result.
            prom.wait_scrapes(SIDECAR_JOB, 3)
            prom.wait_scrapes(CONTROLLER_JOB, 1)
        assert traffic.status.get(("PUT", 200)) and traffic.status.get(("GET", 200)), traffic.status
        for job in (SIDECAR_JOB, CONTROLLER_JOB):
            assert prom.query(f'up{{job="{job}"}}')[0]["value"][1] == "1", f"{job} not scraped"

        # As Grafana asks: time-series panels over the test's time range, stat and bar panels at the end.
        end = time.time()
        results = {}
        for where, expr, is_range in panel_queries(with_kind=True):
            results[where] = (prom.query_range(substitute(expr), started, end) if is_range
                              else prom.query(substitute(expr)))
        empty = [where for where, result in results.items()
                 if not result and where.split(" / ")[1] not in NOT_IN_THIS_FLEET]
        assert not empty, f"panel queries with no data: {empty}"
        # Beyond "returns a series": after a migration under traffic each panel shows a non-zero number,
        # except those that are zero on a healthy fleet.
        dead = [where for where, result in results.items()
                if not any(_number(v) for r in result for v in r.get("values", [r.get("value")]))
                and not {where.split(" / ")[1], where.split(" / ", 1)[1]} & (QUIET_WHEN_HEALTHY | NOT_IN_THIS_FLEET)]
        assert not dead, f"panels showing only 0/NaN after a migration under traffic: {dead}"

        for where, expr in rule_exprs():
            prom.query(expr)  # parses and evaluates (an error fails inside query())

        for where, query in variable_queries():
            selector, label = query.strip()[len("label_values("):-1].rsplit(",", 1)
            status, doc = prom.api(f"label/{label.strip()}/values", **{"match[]": substitute(selector)})
            assert status == 200 and doc["status"] == "success", f"{where}: {doc}"
            assert doc["data"], f"{where}: variable has no values"
            if label.strip() == "job":
                assert set(doc["data"]) == {SIDECAR_JOB, CONTROLLER_JOB}, where

        # Prometheus evaluates the rule file itself, every second: all rules loaded and healthy.
        status, doc = prom.api("rules", type="alert")
        rules = [r for g in doc["data"]["groups"] for r in g["rules"]]
        assert {r["name"] for r in rules} == {name for name, _ in rule_exprs()}
        assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]

        # A healthy fleet with a leader: these alerts must not be pending or firing.
        for name in ("EpochgateNoControllerLeader", "EpochgateSidecarFailingClosed", "EpochgateStoreContactStale",
                     "EpochgateReplicaBlocked"):
            assert not prom.query(dict(rule_exprs())[name]), f"{name} would fire on a healthy fleet"
        # And the migration shows where an operator looks for it.
        assert float(prom.query('sum(epochgate_migration_jobs_total{status="completed"})')[0]["value"][1]) == 1
        assert float(prom.query("sum(epochgate_cutover_window_seconds_count)")[0]["value"][1]) == 1
        assert float(prom.query(f'max(epochgate_table_epoch{{job="{SIDECAR_JOB}"}})')[0]["value"][1]) > 0
        assert float(prom.query(f'sum(epochgate_controller_leader{{job="{CONTROLLER_JOB}"}})')[0]["value"][1]) == 1

        # Then break things: each alert's expression must catch the real failure it is named after.
        rules = dict(rule_exprs())
        procs.procs["controller"].terminate()
        procs.procs["controller"].wait(10)
        prom.wait_true(rules["EpochgateNoControllerLeader"])
        prom.wait_true(rules["EpochgateTargetDown"])
        assert [r["metric"]["instance"] for r in prom.query(rules["EpochgateTargetDown"])] == [addr["controller_admin"]]
        consul.freeze()  # the sidecar's store stops answering: past its 3 s lease it must fail closed
        for name in ("EpochgateSidecarFailingClosed", "EpochgateStoreContactStale"):
            prom.wait_true(rules[name], deadline_s=20)
            assert [r["metric"]["instance"] for r in prom.query(rules[name])] == [addr["sidecar_admin"]], name
    finally:
        prom.stop()
