"""One clear line for an unreachable Consul agent (issue 27).

A sidecar or controller started before its agent used to print a
``ClientConnectorError … ssl:default`` warning from every loop that talks to
Consul, on every attempt (11 lines in 15 s for a sidecar, 48 for a controller),
and never said what it was waiting for. Now the three places that turn a
foreign error into ours (the aiohttp calls, the blocking-query client, the
py-consul sessions) raise ``ConsulUnreachable`` when no connection could be
made, and report it here; the process says

    waiting for Consul at http://127.0.0.1:8500: connection refused

at once, again with capped backoff (2, 4, 8, 16, 30, 30 … s) while it lasts,
and "Consul at URL reachable again" when a call gets through. The loops
themselves log such a failure at DEBUG (``failure_level``); any other backend
failure keeps its own warning.
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from typing import Callable

from ._exceptions import ConsulUnreachable

log = logging.getLogger("epochgate.consul")

_FIRST_REPEAT_S = 2.0
_MAX_REPEAT_S = 30.0
_NO_ROUTE = (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL)


def connect_failure(exc: BaseException) -> str | None:
    """Why no connection could be made (``"connection refused"``), or None when
    ``exc`` is not a failure to connect (a timeout, a reset, a bad answer)."""
    os_error = getattr(exc, "os_error", None)   # aiohttp.ClientConnectorError wraps the OSError
    if isinstance(os_error, OSError):
        exc = os_error
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host ({exc.strerror or exc})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError):
        if exc.errno in _NO_ROUTE:
            return (exc.strerror or str(exc)).lower()
        # asyncio tried several addresses (localhost: ::1 and 127.0.0.1) and every one failed
        text = str(exc)
        if text.startswith("Multiple exceptions:") and "Connect call failed" in text:
            return "connection refused"
    return None


class Reachability:
    """Per agent URL: when it went away and when to say so again."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, logger: logging.Logger = log) -> None:
        self._clock = clock
        self._log = logger
        self.down: dict[str, tuple[float, float, float]] = {}   # url → (since, next notice, repeat)

    def failed(self, url: str, reason: str) -> None:
        now = self._clock()
        st = self.down.get(url)
        if st is None:
            self._log.warning("waiting for Consul at %s: %s", url, reason)
            self.down[url] = (now, now + _FIRST_REPEAT_S, _FIRST_REPEAT_S)
            return
        since, due, repeat = st
        if now >= due:
            self._log.warning("waiting for Consul at %s: %s (%.0f s so far)", url, reason, now - since)
            repeat = min(_MAX_REPEAT_S, repeat * 2)
            self.down[url] = (since, now + repeat, repeat)

    def reached(self, url: str) -> None:
        st = self.down.pop(url, None)
        if st is not None:
            self._log.warning("Consul at %s reachable again after %.1f s", url, self._clock() - st[0])


REACHABILITY = Reachability()


def unreachable(url: str, what: str, exc: BaseException) -> ConsulUnreachable | None:
    """The ``ConsulUnreachable`` to raise for ``exc`` (reported once per backoff step), or None."""
    reason = connect_failure(exc)
    if reason is None:
        return None
    REACHABILITY.failed(url, reason)
    return ConsulUnreachable(f"consul {what}: Consul at {url} is unreachable: {reason}", url, reason)


def reached(url: str) -> None:
    """A call to ``url`` got an answer (cheap when nothing was down)."""
    if REACHABILITY.down:
        REACHABILITY.reached(url)


def failure_level(exc: BaseException, level: int = logging.WARNING) -> int:
    """The log level for a loop's failure: DEBUG when the agent is simply not there
    (already said once, on its own line), ``level`` otherwise."""
    return logging.DEBUG if isinstance(exc, ConsulUnreachable) else level
