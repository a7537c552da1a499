"""The invariants a Kubernetes deployment of epochgate must keep, checked on rendered manifests.

``violations(docs)`` returns one line per broken rule (empty = fine). Container arguments and
environment are read with the sidecar's and the controller's own parsers, so a flag the
programs would refuse is a violation too. Values Kubernetes fills in at run time (downward
API, Secrets) are replaced by recognisable placeholders before parsing, which is how "the
participant id comes from the pod name" and "tokens come from Secrets" are checked.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from unittest import mock

from tests._kustomize import pod_spec

POD_NAME = "kv-5d8c7f9b6-x7k2p"
HOST_IP = "10.20.30.40"
FIELD_VALUES = {"metadata.name": POD_NAME, "status.hostIP": HOST_IP, "metadata.namespace": "epochgate",
                "status.podIP": "10.1.2.3", "spec.nodeName": "node-1"}
SECRET = "<secret {name}/{key}>"
APP_SHUTDOWN_S = 10   # what the grace period must leave the application for its own shutdown
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_ANY = ("0.0.0.0", "::", "")


def _env(container: dict) -> dict[str, str]:
    """The container's environment as the process would see it (placeholders for runtime values)."""
    env: dict[str, str] = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = _expand(str(var["value"]), env)
            continue
        src = var.get("valueFrom", {})
        if "fieldRef" in src:
            env[var["name"]] = FIELD_VALUES.get(src["fieldRef"]["fieldPath"], "<field>")
        elif "secretKeyRef" in src:
            env[var["name"]] = SECRET.format(**src["secretKeyRef"])
        else:
            env[var["name"]] = "<configmap or resource>"
    return env


def _expand(text: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), text)


def _from_secret(value: object) -> bool:
    return isinstance(value, str) and value.startswith("<secret ")


def _secret_file(spec: dict, container: dict, path: object) -> bool:
    """``path`` lies in a volume mounted from a Secret (a token file)."""
    if not isinstance(path, str):
        return False
    secret_volumes = {v["name"] for v in spec.get("volumes", []) if "secret" in v}
    return any(m["name"] in secret_volumes and path.startswith(m["mountPath"].rstrip("/") + "/")
               for m in container.get("volumeMounts", []))


def _token_ok(spec: dict, container: dict, token: object, token_file: object) -> bool:
    """A token from a Secret: an env var from a secretKeyRef, or a file in a Secret volume."""
    return _from_secret(token) if token is not None else _secret_file(spec, container, token_file)


def _port(container: dict, port: Any) -> int | None:
    if isinstance(port, int):
        return port
    return next((p["containerPort"] for p in container.get("ports", []) if p.get("name") == port), None)


def _is_epochgate(container: dict) -> bool:
    """The image's own entry point (``python -m sidecar``): a sidecar or, with ``controller``, the controller."""
    image = container.get("image", "").split("@")[0].rsplit("/", 1)[-1].split(":")[0]
    return image == "epochgate" and "command" not in container


def _probe_errors(where: str, container: dict, admin_port: int) -> list[str]:
    out = []
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = (container.get(probe) or {}).get("httpGet")
        if get is None:
            out.append(f"{where}: no {probe} httpGet {path}")
            continue
        if get.get("path") != path:
            out.append(f"{where}: {probe} path {get.get('path')!r}, the admin port serves {path}")
        if _port(container, get.get("port")) != admin_port:
            out.append(f"{where}: {probe} port {get.get('port')!r} is not the --admin port {admin_port}")
    return out


def _security_errors(where: str, spec: dict, container: dict) -> list[str]:
    pod_sc, sc = spec.get("securityContext", {}), container.get("securityContext", {})
    out = []
    if not sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")):
        out.append(f"{where}: runAsNonRoot is not set")
    if sc.get("allowPrivilegeEscalation") is not False:
        out.append(f"{where}: allowPrivilegeEscalation is not false")
    if "ALL" not in (sc.get("capabilities") or {}).get("drop", []):
        out.append(f"{where}: capabilities are not all dropped")
    seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
    if seccomp not in ("RuntimeDefault", "Localhost"):
        out.append(f"{where}: no RuntimeDefault seccomp profile")
    return out


def _token_errors(where: str, container: dict) -> list[str]:
    out = []
    env = _env(container)
    for name, value in env.items():
        if "TOKEN" in name and not name.endswith("_FILE") and not _from_secret(value):
            out.append(f"{where}: {name} is not taken from a Secret")
    for arg in container.get("args", []) + container.get("command", []):
        if re.match(r"--(consul-)?token(=|$)", str(arg)):
            out.append(f"{where}: a token on the command line ({arg.split('=')[0]}); take it from a Secret")
    return out


def _check_sidecar(where: str, obj: dict, spec: dict, container: dict, native: bool) -> tuple[list[str], Any]:
    from gate import ConfigError
    from sidecar._config import parse_args

    out: list[str] = []
    env = _env(container)
    args = [_expand(str(a), env) for a in container.get("args", [])]
    try:
        cfg = parse_args(args, env)
    except (ConfigError, SystemExit) as exc:
        return [f"{where}: the sidecar refuses its arguments: {exc}"], None
    if not native:
        out.append(f"{where}: not a native sidecar (an initContainer with restartPolicy: Always)")
    if cfg.workers != 1:
        out.append(f"{where}: --workers {cfg.workers} suffixes the participant id with a pid; it would not "
                   "survive a restart")
    if cfg.participant_id != POD_NAME:
        out.append(f"{where}: the participant id is {cfg.participant_id!r}, not the pod name "
                   "(EPOCHGATE_PARTICIPANT_ID from fieldRef metadata.name)")
    if cfg.consul is None or cfg.consul.split("//", 1)[-1].rsplit(":", 1)[0] != HOST_IP:
        out.append(f"{where}: Consul is {cfg.consul!r}, not the node's agent (status.hostIP)")
    # token_file (EPOCHGATE_TOKEN_FILE) exists in later versions of the sidecar's configuration
    if not _token_ok(spec, container, cfg.token, getattr(cfg, "token_file", None) or env.get("EPOCHGATE_TOKEN_FILE")):
        out.append(f"{where}: token is not taken from a Secret")
    if not _from_secret(cfg.consul_token):
        out.append(f"{where}: consul_token is not taken from a Secret")
    admin_host, admin_port = cfg.admin_addr
    if admin_host not in _ANY:
        out.append(f"{where}: --admin {cfg.admin} is not reachable by the kubelet's probes")
    if cfg.control.rsplit(":", 1)[0].strip("[]") not in _LOOPBACK:
        out.append(f"{where}: --control {cfg.control} is not loopback (the Gate API is for this pod's app)")
    out += _probe_errors(where, container, admin_port)
    grace = spec.get("terminationGracePeriodSeconds", 30)
    pre_stop = max([((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {}).get("seconds", 0)
                    for c in spec.get("containers", [])] or [0])
    if pre_stop < 1:
        out.append(f"{where}: no preStop sleep on the application: it can stop before the Service stops "
                   "sending to the pod")
    need = pre_stop + APP_SHUTDOWN_S + cfg.drain_seconds
    if grace <= cfg.drain_seconds or grace < need:
        out.append(f"{where}: terminationGracePeriodSeconds {grace} < app preStop {pre_stop} + app shutdown "
                   f"{APP_SHUTDOWN_S} + --drain-seconds {cfg.drain_seconds:g}")
    if cfg.drain_seconds <= cfg.hold_seconds:
        out.append(f"{where}: --drain-seconds {cfg.drain_seconds:g} ≤ --hold-seconds {cfg.hold_seconds:g}: a held "
                   "write can be cut off by the drain")
    notes = (obj.get("spec", {}).get("template", {}).get("metadata", {}) or {}).get("annotations", {})
    if notes.get("prometheus.io/scrape") != "true" or notes.get("prometheus.io/port") != str(admin_port):
        out.append(f"{where}: scrape annotations do not point at the admin port {admin_port}")
    return out, cfg


def _check_controller(where: str, obj: dict, spec: dict, container: dict) -> tuple[list[str], Any]:
    from sidecar.control.controller_main import _parse

    env = _env(container)
    args = [_expand(str(a), env) for a in container.get("args", [])][1:]
    out: list[str] = []
    try:
        with mock.patch.dict(os.environ, env, clear=True):
            ns = _parse(args)
    except SystemExit:
        return [f"{where}: the controller refuses its arguments {args}"], None
    # the parser may leave the control token to the environment (EPOCHGATE_TOKEN[_FILE]) for later
    token = ns.token if ns.token is not None else env.get("EPOCHGATE_TOKEN")
    token_file = getattr(ns, "token_file", None) or env.get("EPOCHGATE_TOKEN_FILE")
    if not _token_ok(spec, container, token, token_file):
        out.append(f"{where}: controller token is not taken from a Secret")
    if not _from_secret(ns.consul_token):
        out.append(f"{where}: controller consul_token is not taken from a Secret")
    if HOST_IP not in (ns.consul or ""):
        out.append(f"{where}: the controller's Consul is {ns.consul!r}, not the node's agent (status.hostIP)")
    admin_host, _, admin_port = ns.admin.rpartition(":")
    if admin_host not in _ANY:
        out.append(f"{where}: controller --admin {ns.admin} is not reachable by the kubelet's probes")
    out += _probe_errors(where, container, int(admin_port))
    if obj.get("kind") != "Deployment" or obj["spec"].get("replicas", 1) < 2:
        out.append(f"{where}: the controller should run as a Deployment with at least 2 replicas")
    return out, ns


def _selects(selector: dict, labels: dict) -> bool:
    match = selector.get("matchLabels", {})
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


def violations(docs: list[dict], dashboards_dir: Path | None = None) -> list[str]:
    out: list[str] = []
    sidecars, controllers = [], []
    for obj in docs:
        spec = pod_spec(obj)
        if spec is None:
            continue
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        for kind, group in (("initContainers", spec.get("initContainers", [])),
                            ("containers", spec.get("containers", []))):
            for c in group:
                where = f"{name} {c['name']}"
                out += _security_errors(where, spec, c) + _token_errors(where, c)
                if not _is_epochgate(c):
                    continue
                if (c.get("args") or [None])[0] == "controller":
                    errs, ns = _check_controller(where, obj, spec, c)
                    controllers.append((obj, ns))
                else:
                    native = kind == "initContainers" and c.get("restartPolicy") == "Always"
                    errs, cfg = _check_sidecar(where, obj, spec, c, native)
                    sidecars.append((obj, c, cfg))
                out += errs
    if not sidecars:
        out.append("no workload runs the epochgate sidecar")
    if not controllers:
        out.append("no workload runs the epochgate controller")
    pdbs = [d for d in docs if d.get("kind") == "PodDisruptionBudget"]
    for obj, ns in controllers:
        labels = obj["spec"]["template"]["metadata"].get("labels", {})
        pdb = next((p for p in pdbs if _selects(p["spec"].get("selector", {}), labels)), None)
        if pdb is None:
            out.append(f"Deployment/{obj['metadata']['name']}: no PodDisruptionBudget selects the controller")
        elif pdb["spec"].get("minAvailable", 0) < 1 and "maxUnavailable" not in pdb["spec"]:
            out.append(f"PodDisruptionBudget/{pdb['metadata']['name']}: minAvailable < 1")
        for _, _, cfg in sidecars:
            if ns is not None and cfg is not None and cfg.hold_seconds <= ns.cutover_deadline:
                out.append(f"--hold-seconds {cfg.hold_seconds:g} ≤ the controller's --cutover-deadline "
                           f"{ns.cutover_deadline:g}: writes held through a slow cutover get 503s")
    services = [d for d in docs if d.get("kind") == "Service"]
    for obj, c, cfg in sidecars:
        if cfg is None:
            continue
        labels = obj["spec"]["template"]["metadata"].get("labels", {})
        for svc in services:
            if not svc["spec"].get("selector") or not all(labels.get(k) == v
                                                          for k, v in svc["spec"]["selector"].items()):
                continue
            for port in svc["spec"].get("ports", []):
                if _port(c, port.get("targetPort", port["port"])) != cfg.listen_addr[1]:
                    out.append(f"Service/{svc['metadata']['name']}: port {port.get('name', port['port'])} does not "
                               f"target the sidecar's --listen port {cfg.listen_addr[1]}")
    if dashboards_dir is not None:
        out += _dashboard_errors(docs, dashboards_dir)
    return out


def _dashboard_errors(docs: list[dict], dashboards_dir: Path) -> list[str]:
    maps = [d for d in docs if d.get("kind") == "ConfigMap"
            and d["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    if not maps:
        return ["no ConfigMap labelled grafana_dashboard=1"]
    data = {k: v for m in maps for k, v in m.get("data", {}).items()}
    files = {p.name: p.read_text() for p in sorted(dashboards_dir.glob("*.json"))}
    out = []
    if set(data) != set(files):
        out.append(f"dashboard ConfigMap holds {sorted(data)}, grafana/dashboards has {sorted(files)}")
    out += [f"dashboard {k} differs from grafana/dashboards/{k}" for k in files if k in data and data[k] != files[k]]
    return out
