"""TCP_NODELAY is on for every proxy socket although ``set_nodelay`` skips the loops' own transports.

``sidecar.proxy.httpmsg.set_nodelay`` does nothing for the transport types in ``_LOOP_SETS_NODELAY``
(it saves a ``getsockname`` and a ``setsockopt`` per connection) on the claim that uvloop and asyncio
turn TCP_NODELAY on for every TCP socket they accept or connect, TLS included. This checks the claim
on both loops, plain and TLS, server and client side: an upgrade of either loop that stopped doing it
would otherwise leave the proxy's heads waiting on Nagle's algorithm without a test noticing.
"""

from __future__ import annotations

import asyncio
import socket
import ssl

import pytest

from sidecar.proxy import httpmsg as H

from tests._h2_util import make_ca, make_cert

uvloop = pytest.importorskip("uvloop")


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca = make_ca(d, "ca")
    cert, key = make_cert(d, ca, "server")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(ca[0]))
    return server, client


def _nodelay(transport: asyncio.BaseTransport) -> int:
    sock = transport.get_extra_info("socket")
    with socket.socket(fileno=socket.dup(sock.fileno())) as dup:  # (uvloop's socket object has no getsockopt)
        return dup.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


async def _both_sides(use_tls: bool, tls) -> list[tuple[str, int]]:
    seen: list[tuple[str, int]] = []
    done = asyncio.get_running_loop().create_future()

    class P(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
            seen.append((type(transport).__name__, _nodelay(transport)))
            if len(seen) == 2 and not done.done():
                done.set_result(None)

    loop = asyncio.get_running_loop()
    server = await loop.create_server(P, "127.0.0.1", 0, ssl=tls[0] if use_tls else None)
    port = server.sockets[0].getsockname()[1]
    transport, _ = await loop.create_connection(P, "127.0.0.1", port, ssl=tls[1] if use_tls else None,
                                                server_hostname="localhost" if use_tls else None)
    await asyncio.wait_for(done, 5)
    transport.close()
    server.close()
    await server.wait_closed()
    return seen


@pytest.mark.parametrize("use_tls", [False, True], ids=["tcp", "tls"])
@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_loops_turn_nodelay_on_for_the_transports_set_nodelay_skips(loop_kind, use_tls, tls):
    run = asyncio.run if loop_kind == "asyncio" else uvloop.run
    seen = run(_both_sides(use_tls, tls))
    assert len(seen) == 2
    for name, on in seen:
        assert name in H._LOOP_SETS_NODELAY, f"{loop_kind} transport {name}: set_nodelay would set the option itself"
        assert on, f"{loop_kind} {name}: TCP_NODELAY off on a socket set_nodelay skips"


def test_set_nodelay_still_sets_it_on_another_transport():
    srv = socket.create_server(("127.0.0.1", 0))
    a = socket.create_connection(srv.getsockname())
    b, _ = srv.accept()
    srv.close()
    try:
        class T:
            def get_extra_info(self, name, default=None):
                return a if name == "socket" else default

        a.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
        H.set_nodelay(T())
        assert a.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        a.close()
        b.close()
