"""The fleet harness gives each process a port of its own (tests/_consul.py ``free_ports``,
tests/_fleet.py ``Fleet.node``).

A drain test once failed INV-M2 with every write of node c's partitions committed on
node a, from the first write on, no write lost: ``free_ports`` had handed nodes a and c
the same port (a probe socket is closed before its process binds), c failed to bind, and
a answered c's URL. A controller's port was once taken the same way by some other process
on the machine (the controller exited: "already in use"). These tests fail without the
guards (``free_ports``' memory of the ports it handed out; ``Fleet`` checking a node says it
listens on its own port, and starting a process that lost its port again)."""

from __future__ import annotations

import socket

import pytest

from . import _fleet
from ._consul import free_ports
from ._fleet import Fleet


def test_free_ports_never_hands_out_a_port_twice():
    # Without the memory of ports handed out, 3000 probes of ~14,000 candidate ports
    # repeat one with near certainty (about 300 repeats expected).
    ports = [p for _ in range(1500) for p in free_ports(1)] + [p for _ in range(500) for p in free_ports(3)]
    assert len(ports) == 3000
    assert len(set(ports)) == len(ports)


@pytest.mark.consul
async def test_a_node_that_lost_its_port_is_started_again_on_a_port_of_its_own(consul_agent, kv_prefix, tmp_path,
                                                                               monkeypatch):
    fleet = Fleet(consul_agent.url, kv_prefix, tmp_path)
    try:
        a = await fleet.node("a")
        taken = int(a.info["url"].rsplit(":", 1)[1])
        given: list[int] = []

        def racing_free_ports(n: int) -> list[int]:   # the first port b gets is a's (a lost race)
            given.append(taken if not given else free_ports(n)[0])
            return [given[-1]]

        monkeypatch.setattr(_fleet, "free_ports", racing_free_ports)
        b = await fleet.node("b")
        assert given[0] == taken and len(given) == 2
        assert b.info["url"] != a.info["url"]
        assert b.popen is not None and b.popen.poll() is None
        assert f"examples.kv node b listening on {b.info['url']}" in b.tail()
        assert [p.popen.poll() for p in fleet.procs] == [None, None]
    finally:
        fleet.stop()


@pytest.mark.consul
async def test_a_controller_whose_port_was_taken_is_started_again_on_fresh_ports(consul_agent, kv_prefix, tmp_path,
                                                                                monkeypatch):
    fleet = Fleet(consul_agent.url, kv_prefix, tmp_path)
    thief = socket.socket()
    try:
        thief.bind(("127.0.0.1", 0))
        thief.listen()
        taken = thief.getsockname()[1]
        given: list[list[int]] = []

        def racing_free_ports(n: int) -> list[int]:   # the control port the first try gets is taken
            given.append([taken, *free_ports(n - 1)] if not given else free_ports(n))
            return given[-1]

        monkeypatch.setattr(_fleet, "free_ports", racing_free_ports)
        c = await fleet.controller("c1")
        assert len(given) == 2 and given[0][0] == taken
        assert c.info["control"] == f"127.0.0.1:{given[1][0]}"
        assert [p.popen.poll() for p in fleet.procs] == [None]
    finally:
        thief.close()
        fleet.stop()
