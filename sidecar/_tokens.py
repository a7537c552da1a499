"""Where the control API's bearer token comes from, and when one is required.

A token on the command line shows in ``ps`` and in shell history, so it can
also come from a file (``--token-file``, env ``EPOCHGATE_TOKEN_FILE``) or the
environment (``EPOCHGATE_TOKEN``). A control API bound to anything but
loopback moves partitions for whoever can reach it: it is refused without a
token (``require_token_for``), not merely warned about.

The address checks (``split_hostport``, ``is_loopback``, ``check_control``) live
here rather than beside the gRPC server: the sidecar checks and binds
``--control`` at start without importing grpc (``sidecar/api/lazy.py``).
"""

from __future__ import annotations

import ipaddress
import os
from typing import Mapping

from gate import ConfigError

MAX_TOKEN_FILE = 4096


def read_token_file(path: str, field: str = "token_file") -> str:
    """The token in ``path`` (surrounding whitespace and the final newline stripped)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_TOKEN_FILE + 1)
    except OSError as exc:
        raise ConfigError(field, f"cannot read {path!r}: {exc.strerror or exc}") from exc
    if len(raw) > MAX_TOKEN_FILE:
        raise ConfigError(field, f"{path!r} is larger than {MAX_TOKEN_FILE} bytes: not a token file")
    try:
        token = raw.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise ConfigError(field, f"{path!r} is not UTF-8 text") from exc
    if not token:
        raise ConfigError(field, f"{path!r} is empty")
    if any(c.isspace() or not c.isprintable() for c in token):
        raise ConfigError(field, f"{path!r} holds whitespace or control characters inside the token")
    return token


def resolve_token(token: str | None, token_file: str | None, environ: Mapping[str, str] | None = None,
                  field: str = "token") -> str | None:
    """``token`` if given, else the file's content, else ``EPOCHGATE_TOKEN`` /
    ``EPOCHGATE_TOKEN_FILE`` from ``environ`` (when passed). Both a token and a file: refused."""
    if token is not None and token_file is not None:
        raise ConfigError(field, "give a token or a token file, not both")
    if token_file is not None:
        return read_token_file(token_file, field + "_file")
    if token is not None:
        if not token:
            raise ConfigError(field, "an empty token would refuse nothing; omit it instead")
        return token
    if environ is not None:
        if environ.get("EPOCHGATE_TOKEN_FILE"):
            return read_token_file(environ["EPOCHGATE_TOKEN_FILE"], "EPOCHGATE_TOKEN_FILE")
        return environ.get("EPOCHGATE_TOKEN") or None
    return None


def require_token_for(addr: str, token: str | None, field: str = "control") -> None:
    """Refuse a non-loopback control bind without a token."""
    host, _ = split_hostport(addr, field)
    if token is None and not is_loopback(host):
        raise ConfigError(field, f"the control API on non-loopback {addr} needs a token (--token-file FILE or "
                                 "EPOCHGATE_TOKEN): anyone who can reach it could move partitions")


def check_control(addr: str, token: str | None) -> tuple[str, int]:
    """The control API's ``HOST:PORT`` and token, checked before anything binds: (host, port)."""
    host, port = split_hostport(addr)
    if token is not None and not token:
        raise ConfigError("token", "an empty token would refuse nothing; omit it instead")
    require_token_for(addr, token)  # refused, not warned about (anyone reaching it could move partitions)
    return host, port


def env_token(environ: Mapping[str, str] | None = None) -> str | None:
    """For clients (the CLI): ``EPOCHGATE_TOKEN_FILE`` or ``EPOCHGATE_TOKEN``."""
    return resolve_token(None, None, os.environ if environ is None else environ)


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_hostport(addr: str, field: str = "control") -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT``) → (host, port); ``ConfigError`` naming ``field``."""
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(field, f"expected HOST:PORT, got {addr!r}")
    return host, int(port)
