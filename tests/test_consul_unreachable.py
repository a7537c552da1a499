"""An unreachable Consul is one clear line, repeated with capped backoff (issue 27).

Before: a sidecar pointed at a Consul that is not running printed 11 ``ClientConnectorError …
ssl:default`` warnings in 15 s (a controller 48) and never said what it was waiting for.
"""

from __future__ import annotations

import errno
import logging
import socket
import time

import aiohttp
import pytest

from gate import BackendError, ConsulUnreachable, failure_level
from gate._reachability import Reachability, connect_failure
from tests._procs import reap
from tests._sidecar_util import ManualClock, free_port, spawn_sidecar


def test_notice_backs_off_to_a_cap_and_says_when_consul_is_back(caplog):
    clock = ManualClock()
    reach = Reachability(clock, logging.getLogger("t.reach"))
    url = "http://127.0.0.1:8500"
    with caplog.at_level(logging.DEBUG, "t.reach"):
        for _ in range(2000):          # an attempt every 50 ms for 100 s
            reach.failed(url, "connection refused")
            clock.t += 0.05
        reach.reached(url)
        reach.reached(url)             # once only
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == f"waiting for Consul at {url}: connection refused"
    # 0, 2, 6, 14, 30, 60, 90 s: doubling from 2 s, capped at 30 s
    assert [ln.split("(")[-1] for ln in lines[1:-1]] == [f"{s} s so far)" for s in (2, 6, 14, 30, 60, 90)]
    assert lines[-1].startswith(f"Consul at {url} reachable again after 100.0 s")
    assert len(lines) == 8


def test_connect_failures_are_told_apart_from_other_errors():
    refused = aiohttp.ClientConnectorError(None, ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed"))
    assert connect_failure(refused) == "connection refused"
    assert connect_failure(ConnectionRefusedError()) == "connection refused"
    assert "resolve" in connect_failure(socket.gaierror(-2, "Name or service not known"))
    assert connect_failure(OSError("Multiple exceptions: [Errno 111] Connect call failed ('::1', 1), "
                                   "[Errno 111] Connect call failed ('127.0.0.1', 1)")) == "connection refused"
    assert connect_failure(ConnectionResetError()) is None     # mid-exchange: not "waiting for Consul"
    assert connect_failure(TimeoutError()) is None
    assert failure_level(ConsulUnreachable("x", "u", "r")) == logging.DEBUG
    assert failure_level(BackendError("x")) == logging.WARNING


@pytest.mark.parametrize("role", ["sidecar", "controller"])
def test_process_without_consul_says_so_on_one_line(role):
    port = free_port()          # nothing listens there
    url = f"http://127.0.0.1:{port}"
    args = ["--consul", url, "--control", "127.0.0.1:0", "--admin", "127.0.0.1:0"]
    args = ["controller", *args] if role == "controller" else ["--listen", "127.0.0.1:0", *args]
    proc = spawn_sidecar(args)
    lines: list[str] = []
    try:
        end = time.monotonic() + 30
        assert proc.stderr is not None
        # wait for the second notice (the first repeat comes ≥ 2 s after the first line)
        while sum("waiting for Consul" in ln for ln in lines) < 2:
            line = proc.stderr.readline()
            assert line and time.monotonic() < end, f"no second 'waiting for Consul' line; got:\n{''.join(lines)}"
            lines.append(line)
    finally:
        reap(proc)
    waiting = [ln for ln in lines if "waiting for Consul" in ln]
    assert waiting[0].rstrip().endswith(f"waiting for Consul at {url}: connection refused"), waiting
    assert not [ln for ln in lines if "ClientConnectorError" in ln or "Traceback" in ln], lines
    assert len(lines) <= 4, lines    # the two notices and at most the controller's own start-up lines
