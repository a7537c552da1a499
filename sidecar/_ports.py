"""A listen port that is taken: one line, first (issue 27).

Before, a sidecar whose ``--listen`` port was busy printed "draining … drained"
and then ``cannot listen on …: error while attempting to bind on address …``;
with ``--consul`` it first waited up to 20 s for the agent. Now every process
checks the ports it will bind before it starts anything, and a taken one is

    error: listen: port 8080 (127.0.0.1:8080) is already in use by another process; move it with --listen or EPOCHGATE_LISTEN

The real bind still reports the same way (a race with another process, or a
port the check could not see).
"""

from __future__ import annotations

import errno
import socket

from gate import ConfigError

from ._config import parse_hostport


def bind_error(field: str, addr: str, exc: BaseException) -> ConfigError:
    """The ``ConfigError`` for a failed bind of ``addr`` (flag ``--field``)."""
    if getattr(exc, "errno", None) == errno.EADDRINUSE or "address already in use" in str(exc).lower():
        try:
            _, port = parse_hostport(addr, field)
        except ConfigError:
            port = addr  # type: ignore[assignment]
        return ConfigError(field, f"port {port} ({addr}) is already in use by another process; "
                                  f"move it with --{field.replace('_', '-')} or EPOCHGATE_{field.upper()}")
    return ConfigError(field, f"cannot listen on {addr}: {getattr(exc, 'strerror', None) or exc}")


def check_free(field: str, addr: str) -> None:
    """Raise ``bind_error`` now if ``addr`` cannot be bound (port 0: nothing to check).

    Binds with SO_REUSEADDR, as the servers do, so a port in TIME_WAIT passes and
    only a socket someone listens on (or a bad address) fails."""
    host, port = parse_hostport(addr, field)
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(field, f"cannot listen on {addr}: {exc.strerror or exc}") from exc
    for family, kind, proto, _, sockaddr in infos[:1]:
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(sockaddr)
            except OSError as exc:
                raise bind_error(field, addr, exc) from exc
