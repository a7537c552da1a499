"""The sidecar's configuration (DESIGN §10): TOML file < ``EPOCHGATE_*`` env < flags.

``SidecarConfig`` is a frozen dataclass validated in ``__post_init__``; every
error is a ``ConfigError`` naming the field (``listen``, ``node.a``, …). The
command line reports it as one line and exits 2.

Flags of DESIGN §10 (exact names): ``--config --listen --admin --control
--placement --consul --prefix --node --partition-from --workers
--drain-seconds --log-format``. The rest are additions (lease, hold, timeouts,
hash slots, route rules, tokens); run ``python -m sidecar --help``.
"""

from __future__ import annotations

import argparse
import json
import os
import tomllib
from dataclasses import dataclass, fields
from typing import Any, Mapping, Sequence

from gate import ConfigError, node_name, validate_url

ENV_PREFIX = "EPOCHGATE_"


SUBCOMMANDS = """subcommands (each has its own --help):
  controller    the migration controller (Consul; one leads)
  migrate       move a partition to another node (--dry-run: the plan only)
  jobs          list | show | abort | pause | resume | throttle | controls
  drain         move every partition off a node;  balance  even out the fleet
  ops           drain/balance operations: list | show | abort | watch
  history       a partition's transitions (who moved it, when, which job)
  partitions    list | set P NODE;  nodes  list | set NAME URL"""


def parse_hostport(value: object, field_name: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:80`` for IPv6) → ``(host, port)``; port 0 = any free port."""
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError(field_name, f"expected HOST:PORT, got {value!r}")
    host, _, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(field_name, f"expected HOST:PORT with a port 0-65535, got {value!r}")
    return host, int(port)


@dataclass(frozen=True, slots=True)
class SidecarConfig:
    """Everything a sidecar process needs to start. Field names = flag names."""

    listen: str = "127.0.0.1:8080"
    admin: str = "127.0.0.1:9901"
    control: str = "127.0.0.1:50051"
    placement: str | None = None
    state: str | None = None                         # embedded: jobs + history file (default beside placement; ":memory:")
    consul: str | None = None
    prefix: str = "epochgate/"
    node: tuple[str, ...] = ()                       # NAME=URL, adds to the placement file's [nodes]
    partition_from: tuple[str, ...] = ("header:X-Partition-Key",)
    hash_slots: int = 0                              # >0: partition = "slot-<crc32(key) % N>"
    route: tuple[str, ...] = ()                      # "METHOD PATH-REGEX=read|write", first match wins
    workers: int = 1
    drain_seconds: float = 30.0
    log_format: str = "text"
    access_log: bool = True
    lease_seconds: float = 5.0                       # Consul mode: fail closed when the table/session is older
    session_ttl: float = 10.0                        # Consul session TTL of the barrier participant (> lease)
    push_from: str | None = None                     # Consul mode: the controller's control address (issue 31 push path)
    hold_max: int = 1000                             # writes held at once (0 = never hold)
    hold_seconds: float = 15.0                       # > cutover deadline (10) + abort: a held write outlives an aborted cutover
    retry_body_max: int = 1 << 20                    # request bytes kept to replay after an app stale-epoch
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    idle_timeout: float = 75.0                       # client keep-alive / header read timeout
    upstream_idle: float = 4.0                       # close pooled upstream connections idle this long
    max_header_bytes: int = 32768
    head_timeout: float = 20.0                       # a request head must be complete within this (→ 408)
    max_connections: int = 10000                     # client connections per process; more are refused (503)
    body_budget: int = 64 << 20                      # request-body bytes held/kept for replay, per process
    max_path_bytes: int = 8192                       # longer request targets get 414 (bounds what a rule sees)
    token: str | None = None                         # bearer token for the control API (prefer token_file)
    token_file: str | None = None                    # file holding the control API's bearer token
    consul_token: str | None = None
    participant_id: str | None = None                # default: hostname-pid
    upstream_ca: str | None = None                   # CA bundle verifying https:// nodes: replaces the system's
    upstream_ca_add_system: bool = False             # trust the system's CAs as well as --upstream-ca
    upstream_cert: str | None = None                 # client certificate for mTLS to nodes
    upstream_key: str | None = None
    tls_cert: str | None = None                      # serve TLS on --listen (ALPN h2, http/1.1)
    tls_key: str | None = None
    h2_max_streams: int = 100                        # concurrent HTTP/2 streams per client connection
    h2_window: int = 256 * 1024                      # HTTP/2 per-stream receive window (bytes buffered per stream)
    trace_otlp_endpoint: str | None = None           # OTLP/HTTP collector: traces on (docs/tracing.md); None = off
    trace_sample_ratio: float = 1.0                  # parent-based: requests without a sampled parent, this share
    config: str | None = None

    def __post_init__(self) -> None:
        for name in ("listen", "admin", "control"):
            parse_hostport(getattr(self, name), name)
        if self.placement is None and self.consul is None:
            raise ConfigError("placement", "give --placement FILE (embedded store) or --consul URL")
        if self.placement is not None and self.consul is not None:
            raise ConfigError("consul", "--placement and --consul are exclusive (pick one store)")
        if self.push_from is not None:   # dialled later, in the background: a typo would only show as retries
            if self.consul is None:
                raise ConfigError("push_from", "the push path follows a Consul fleet's controller: give --consul URL too")
            if parse_hostport(self.push_from, "push_from")[1] == 0:
                raise ConfigError("push_from", f"expected the controller's HOST:PORT, got {self.push_from!r}")
        if self.consul is not None:
            validate_url(self.consul, "consul")
        if not isinstance(self.prefix, str) or not self.prefix.endswith("/"):
            raise ConfigError("prefix", f"must end with '/', got {self.prefix!r}")
        self.nodes()  # validates node
        if not self.partition_from:
            raise ConfigError("partition_from", "at least one rule is needed")
        from .proxy.router import parse_key_rule, parse_route_rule  # cycle-free: _partition imports nothing here

        for i, rule in enumerate(self.partition_from):
            parse_key_rule(rule, f"partition_from[{i}]")
        for i, rule in enumerate(self.route):
            parse_route_rule(rule, f"route[{i}]")
        _check_int(self, "hash_slots", 0, 1 << 20)
        _check_int(self, "workers", 1, 256)
        _check_int(self, "hold_max", 0, 1 << 20)
        _check_int(self, "retry_body_max", 0, 1 << 30)
        _check_int(self, "max_header_bytes", 1024, 1 << 20)
        _check_int(self, "max_connections", 1, 1 << 20)
        _check_int(self, "body_budget", 0, 1 << 40)
        _check_int(self, "max_path_bytes", 256, 1 << 20)
        if not 0 < self.head_timeout <= 3600:
            raise ConfigError("head_timeout", f"expected seconds in (0, 3600], got {self.head_timeout!r}")
        from ._tokens import require_token_for, resolve_token

        require_token_for(self.control, resolve_token(self.token, self.token_file))
        _check_int(self, "h2_max_streams", 1, 10000)
        _check_int(self, "h2_window", 65535, (1 << 31) - 1)
        from .proxy.tls import check_tls_config  # (imports ssl only)

        check_tls_config(self)
        for name in ("drain_seconds", "hold_seconds", "connect_timeout", "read_timeout", "idle_timeout", "upstream_idle",
                     "lease_seconds", "session_ttl"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 86400:
                raise ConfigError(name, f"expected seconds between 0 and 86400, got {v!r}")
        if self.session_ttl < 10:
            raise ConfigError("session_ttl", f"Consul session TTL must be ≥ 10 s, got {self.session_ttl:g}")
        if not 0 < self.lease_seconds <= 0.8 * self.session_ttl:
            raise ConfigError("lease_seconds", f"must be > 0 and ≤ 0.8 × session_ttl ({0.8 * self.session_ttl:g}), "
                                               f"got {self.lease_seconds:g}")
        if self.trace_otlp_endpoint is not None:
            from .trace.otlp import traces_url  # (imports no OpenTelemetry)

            traces_url(self.trace_otlp_endpoint)
        if isinstance(self.trace_sample_ratio, bool) or not 0.0 <= self.trace_sample_ratio <= 1.0:
            raise ConfigError("trace_sample_ratio", f"expected a ratio between 0 and 1, got {self.trace_sample_ratio!r}")
        if self.log_format not in ("text", "json"):
            raise ConfigError("log_format", f"expected 'text' or 'json', got {self.log_format!r}")

    def control_token(self) -> str | None:
        """The control API's bearer token: ``token``, or read from ``token_file``."""
        from ._tokens import resolve_token

        return resolve_token(self.token, self.token_file)

    @property
    def listen_addr(self) -> tuple[str, int]:
        return parse_hostport(self.listen, "listen")

    @property
    def admin_addr(self) -> tuple[str, int]:
        return parse_hostport(self.admin, "admin")

    def nodes(self) -> dict[str, str]:
        """``--node NAME=URL`` entries as a dict (validated)."""
        out: dict[str, str] = {}
        for item in self.node:
            name, sep, url = str(item).partition("=")
            if not sep:
                raise ConfigError("node", f"expected NAME=URL, got {item!r}")
            out[node_name(name.strip(), f"node.{name}")] = validate_url(url.strip(), f"node.{name}")
        return out

    def to_json(self) -> str:
        """For handing the configuration to worker processes."""
        return json.dumps({f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def from_json(cls, text: str) -> "SidecarConfig":
        return build(json.loads(text), {}, {})


def _check_int(cfg: SidecarConfig, name: str, lo: int, hi: int) -> None:
    v = getattr(cfg, name)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ConfigError(name, f"expected an integer {lo}..{hi}, got {v!r}")


_FIELDS = {f.name: f for f in fields(SidecarConfig)}
_LISTS = {"node", "partition_from", "route"}
_INTS = {"hash_slots", "workers", "hold_max", "retry_body_max", "max_header_bytes", "max_connections",
         "body_budget", "max_path_bytes", "h2_max_streams", "h2_window"}
_FLOATS = {"head_timeout", "drain_seconds", "hold_seconds", "connect_timeout", "read_timeout", "idle_timeout", "lease_seconds",
           "session_ttl", "upstream_idle", "trace_sample_ratio"}
_BOOLS = {"access_log", "upstream_ca_add_system"}


def _coerce(name: str, value: Any, origin: str) -> Any:
    """Turn a file/env/flag value into the field's type; errors name the field."""
    try:
        if name in _LISTS:
            if isinstance(value, str):
                text = value.strip()
                value = json.loads(text) if text.startswith("[") else [v for v in text.split(",") if v.strip()]
            if isinstance(value, Mapping) and name == "node":  # TOML [node] table: a = "http://…"
                value = [f"{k}={v}" for k, v in value.items()]
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise ConfigError(name, f"expected a list of strings ({origin}), got {value!r}")
            return tuple(v.strip() for v in value)
        if name in _INTS:
            if isinstance(value, str):
                value = int(value.strip())
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError
            return value
        if name in _FLOATS:
            if isinstance(value, str):
                value = float(value.strip())
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError
            return float(value)
        if name in _BOOLS:
            if isinstance(value, str):
                low = value.strip().lower()
                if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError
                return low in ("1", "true", "yes", "on")
            if not isinstance(value, bool):
                raise ValueError
            return value
        if value is not None and not isinstance(value, str):
            raise ConfigError(name, f"expected a string ({origin}), got {value!r}")
        return value
    except (ValueError, json.JSONDecodeError) as exc:
        if isinstance(exc, ConfigError):
            raise
        kind = "integer" if name in _INTS else "number" if name in _FLOATS else "boolean" if name in _BOOLS else "list"
        raise ConfigError(name, f"expected a {kind} ({origin}), got {value!r}") from None


def load_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError("config", f"cannot read {path!r}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", f"{path}: invalid TOML: {exc}") from exc
    out = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name == "nodes":
            name = "node"
        if name not in _FIELDS or name == "config":
            raise ConfigError(key, f"unknown setting in {path}")
        out[name] = _coerce(name, value, path)
    return out


def from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    out = {}
    for name in _FIELDS:
        key = ENV_PREFIX + name.upper()
        if key in environ and name != "config":
            out[name] = _coerce(name, environ[key], key)
    return out


def build(file_values: Mapping[str, Any], env_values: Mapping[str, Any], flag_values: Mapping[str, Any]) -> SidecarConfig:
    merged: dict[str, Any] = {}
    for layer in (file_values, env_values, flag_values):
        for k, v in layer.items():
            if v is not None:
                merged[k] = _coerce(k, v, "value")
    try:
        return SidecarConfig(**merged)
    except TypeError as exc:  # unknown key: only reachable through from_json
        raise ConfigError("config", str(exc)) from exc


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="epochgate-sidecar", description="epochgate sidecar: epoch-gated reverse proxy",
                                argument_default=None, epilog=SUBCOMMANDS,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--config", metavar="FILE", help="TOML file holding any of these settings")
    a("--listen", metavar="HOST:PORT", help="proxy listener (default 127.0.0.1:8080)")
    a("--admin", metavar="HOST:PORT", help="/metrics /healthz /readyz (default 127.0.0.1:9901)")
    a("--control", metavar="HOST:PORT", help="gRPC control API (default 127.0.0.1:50051)")
    a("--placement", metavar="FILE", help="embedded store loaded from a placement file")
    a("--state", metavar="FILE",
      help="embedded store: SQLite file keeping migration jobs and transition history across restarts "
           "(default: beside the placement file, NAME.state.sqlite; ':memory:' keeps them in memory only)")
    a("--consul", metavar="URL", help="use the Consul replica instead")
    a("--prefix", help="Consul KV prefix (default epochgate/)")
    a("--node", action="append", metavar="NAME=URL", help="a node's upstream (repeatable)")
    a("--partition-from", action="append", metavar="RULE",
      help="key rule, repeatable, ordered: header:NAME | path:REGEX | query:NAME | host (default header:X-Partition-Key)")
    a("--hash-slots", metavar="N", help="map keys onto N hash slots named slot-0..slot-N-1 (default off)")
    a("--route", action="append", metavar="'METHOD REGEX=read|write'",
      help="mark method+path as read or write (repeatable; METHOD may be *)")
    a("--workers", metavar="N", help="worker processes sharing the listener (default 1)")
    a("--drain-seconds", metavar="S", help="grace for requests in flight on SIGTERM (default 30)")
    a("--log-format", choices=("text", "json"), help="access and event log lines (default text)")
    a("--access-log", dest="access_log", action="store_const", const=True, help="write access log lines (default)")
    a("--no-access-log", dest="access_log", action="store_const", const=False, help="no access log lines")
    a("--lease-seconds", metavar="S", help="Consul mode: fail closed when the table is older than this (default 5)")
    a("--session-ttl", metavar="S", help="Consul session TTL of the barrier participant (default 10, > lease)")
    a("--push-from", metavar="HOST:PORT",
      help="Consul mode: follow the log and ack cutovers over one stream from the controller's control port "
           "(Consul stays the fallback; default off)")
    a("--hold-max", metavar="N", help="rejected writes held at once for retry (default 1000; 0 = off)")
    a("--hold-seconds", metavar="S", help="how long a write may be held (default 15)")
    a("--retry-body-max", metavar="BYTES", help="request body kept to replay after an app stale-epoch (default 1 MiB)")
    a("--connect-timeout", metavar="S", help="upstream connect timeout → 502 (default 5)")
    a("--read-timeout", metavar="S", help="upstream read timeout → 504 (default 60)")
    a("--idle-timeout", metavar="S", help="client keep-alive idle timeout (default 75)")
    a("--upstream-idle", metavar="S",
      help="close pooled upstream keep-alive connections idle this long; keep it below the app's own "
           "keep-alive timeout (default 4)")
    a("--max-header-bytes", metavar="BYTES", help="larger request heads get 431 (default 32768)")
    a("--head-timeout", metavar="S", help="a request head must arrive complete within S seconds, else 408 (default 20)")
    a("--max-connections", metavar="N", help="client connections per process; more get 503 (default 10000)")
    a("--body-budget", metavar="BYTES",
      help="request-body bytes held or kept for replay, per process; when spent, writes are not held (default 64 MiB)")
    a("--max-path-bytes", metavar="BYTES", help="longer request targets get 414 (default 8192)")
    a("--token", help="bearer token required by the control API (env EPOCHGATE_TOKEN; prefer --token-file: "
                      "a flag shows in ps)")
    a("--token-file", metavar="FILE", help="read the control API's bearer token from FILE (env EPOCHGATE_TOKEN_FILE)")
    a("--consul-token", help="Consul ACL token")
    a("--participant-id", help="barrier participant id (default host-pid)")
    a("--upstream-ca", metavar="FILE",
      help="CA bundle that verifies https:// nodes, instead of the system's CAs (default: the system's)")
    a("--upstream-ca-add-system", dest="upstream_ca_add_system", action="store_const", const=True,
      help="with --upstream-ca: trust the system's CAs too (env EPOCHGATE_UPSTREAM_CA_ADD_SYSTEM=1)")
    a("--upstream-cert", metavar="FILE", help="client certificate for mTLS to nodes (with --upstream-key)")
    a("--upstream-key", metavar="FILE", help="private key of --upstream-cert")
    a("--tls-cert", metavar="FILE", help="serve TLS on --listen with this certificate (ALPN h2, http/1.1)")
    a("--tls-key", metavar="FILE", help="private key of --tls-cert")
    a("--h2-max-streams", metavar="N", help="concurrent HTTP/2 streams per client connection (default 100)")
    a("--h2-window", metavar="BYTES", help="HTTP/2 per-stream receive window (default 262144)")
    a("--trace-otlp-endpoint", metavar="URL",
      help="export OpenTelemetry traces over OTLP/HTTP to URL, e.g. http://collector:4318 (default off; "
           "needs the [otel] extra; docs/tracing.md)")
    a("--trace-sample-ratio", metavar="R",
      help="share of requests traced when no sampled parent traceparent came (parent-based; default 1.0)")
    return p


def parse_args(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> SidecarConfig:
    """Flags > environment > ``--config`` file > defaults. Raises ``ConfigError``."""
    environ = os.environ if environ is None else environ
    ns = make_parser().parse_args(list(argv))
    flags = {k: v for k, v in vars(ns).items() if v is not None}
    cfg_path = flags.get("config") or environ.get(ENV_PREFIX + "CONFIG")
    file_values = load_file(cfg_path) if cfg_path else {}
    if cfg_path:
        flags["config"] = cfg_path
    return build(file_values, from_env(environ), flags)
