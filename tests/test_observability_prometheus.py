"""The dashboards and alerts against a real Prometheus scraping real epochgate processes.

A Prometheus (the Debian package's binary) scrapes a sidecar and the controller
every second while a migration runs; then every panel query of both dashboards
and every alert expression goes through ``/api/v1/query``: each must parse, and
each panel query must return data. The template-variable queries go through
the label-values API, and every alerting rule must evaluate without error.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests._consul import free_ports
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
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def api(self, path: str, **params) -> tuple[int, dict]:
        status, body = _get(f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params, doseq=True)}")
        return status, json.loads(body)

    def query(self, expr: str) -> list[dict]:
        status, doc = self.api("query", query=expr)
        assert status == 200 and doc["status"] == "success", f"{expr!r}: {doc}"
        return doc["data"]["result"]

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


# A stand-in for a sidecar/controller while those are being built: serves sidecar._metrics.Metrics()
# on a port and moves every metric the way one migration does.
STANDIN = r'''
import sys, time
from prometheus_client import start_http_server
from sidecar._metrics import Metrics
role, port = sys.argv[1], int(sys.argv[2])
m = Metrics()
start_http_server(port, addr="127.0.0.1", registry=m.registry)
m.partitions.labels("active").set(2)
m.table_epoch.set(10)
t0 = time.monotonic()
while True:
    m.store_last_contact.set(0.2)
    m.watch_updates.inc()
    if role == "sidecar":
        for kind in ("read", "write"):
            m.requests.labels(kind, "active", "ok").inc(5)
            for stage in ("resolve", "admit", "upstream", "total"):
                m.request_duration.labels(kind, stage).observe(0.002)
        m.gate_decisions.labels("active", "admit", "none").inc(5)
        m.gate_decisions.labels("cutover", "reject", "cutover").inc()
        m.requests.labels("write", "cutover", "held_ok").inc()
        m.hold_duration.observe(0.3)
        m.held_writes.set(1)
        m.inflight_writes.set(2)
    else:
        m.controller_leader.set(1)
        m.participants.set(1)
        m.migration_jobs.labels("completed").inc()
        for phase in ("draining", "cutover", "replaying"):
            m.migration_phase_duration.labels(phase).observe(0.5)
        m.cutover_window.observe(0.4)
        m.ack_lag.observe(0.05)
    time.sleep(0.2)
'''


@pytest.fixture
def fleet(tmp_path):
    """(sidecar admin address, controller admin address) of processes running a migration."""
    ports = free_ports(2)
    procs = [subprocess.Popen([sys.executable, "-c", STANDIN, role, str(port)], cwd=ROOT, start_new_session=True)
             for role, port in zip(("sidecar", "controller"), ports)]
    try:
        yield f"127.0.0.1:{ports[0]}", f"127.0.0.1:{ports[1]}"
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)


def test_every_panel_and_alert_query_evaluates_against_live_metrics(tmp_path, fleet):
    sidecar_admin, controller_admin = fleet
    prom = Prometheus(tmp_path, {SIDECAR_JOB: [sidecar_admin], CONTROLLER_JOB: [controller_admin]})
    prom.start()
    try:
        # rate() and increase() need two samples inside their window; a few more make the result settled.
        prom.wait_scrapes(SIDECAR_JOB, 4)
        prom.wait_scrapes(CONTROLLER_JOB, 1)
        for job in (SIDECAR_JOB, CONTROLLER_JOB):
            assert prom.query(f'up{{job="{job}"}}')[0]["value"][1] == "1", f"{job} not scraped"

        empty = [where for where, expr in panel_queries() if not prom.query(substitute(expr))]
        assert not empty, f"panel queries with no data: {empty}"

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
        for name in ("EpochgateNoControllerLeader", "EpochgateSidecarFailingClosed", "EpochgateStoreContactStale"):
            assert not prom.query(dict(rule_exprs())[name]), f"{name} would fire on a healthy fleet"
        # And the migration shows where an operator looks for it.
        assert float(prom.query('sum(epochgate_migration_jobs_total{status="completed"})')[0]["value"][1]) >= 1
    finally:
        prom.stop()
