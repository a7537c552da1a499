"""Import only what the configured mode needs (issue 20: memory per sidecar).

* A real ``python -m sidecar`` start-up path on the embedded store, in a fresh
  interpreter, after it proxied a request and answered ``/metrics``: none of the
  heavy libraries it does not need is in ``sys.modules`` (aiohttp, py-consul,
  requests, grpc, protobuf, h2, re2, sqlite3, the migration controller). Then
  the first control call (gRPC, through the lazy listener) and an HTTP/2
  connection load grpc, the controller and the HTTP/2 engine's library (ngh2, or h2
  without it) — so laziness, not absence, is
  what the first check saw — and still no aiohttp or py-consul until a
  migration moves data. (On main before this change the idle check fails:
  aiohttp, consul, requests, grpc, google.protobuf, h2, re2 and sqlite3 are all
  loaded at start.) Memory figures are printed by ``bench/bench_rss.py``, not
  asserted here (noisy).
* The control port held by ``sidecar.api.lazy.LazyControl``: bound at start (a
  port in use stops the start, as before); the first call works, concurrent
  first calls share one start, the bearer token is still checked end to end,
  deadlines and a stopped sidecar behave as with the gRPC server bound
  directly, a failed start is retried by the next connection.
* ``gate``'s lazy names: the ``TYPE_CHECKING`` imports (what mypy sees), the
  runtime table and ``__all__`` agree.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import socket
import subprocess
from pathlib import Path

import grpc
import pytest

import gate
from gate import EmbeddedStore, PlacementTable
from gate.pb.epochgate.v1 import epochgate_pb2 as pb
from gate.pb.epochgate.v1 import epochgate_pb2_grpc as pb_grpc
from sidecar.api.lazy import LazyControl
from sidecar.api.start import start_control_server
from tests._procs import spawn_python
from tests._sidecar_util import ROOT, clean_env, config, free_port, nodes, placement, running_sidecar  # noqa: F401

HEAVY = ("aiohttp", "consul", "requests", "urllib3", "yarl", "multidict", "grpc", "google.protobuf", "h2", "ngh2", "hpack",
         "hyperframe", "re2", "sqlite3", "gate._consul_consensus", "gate._sessions", "gate._fence",
         "sidecar.api.server", "sidecar.control.controller", "sidecar.control.embedded", "opentelemetry")

# The sidecar's own entry point (run_sidecar, as `python -m sidecar` runs it) in this
# interpreter; a thread drives it with raw sockets only (urllib would load http.client)
# and prints sys.modules: once after a proxied request and a scrape, once more when told.
_DRIVER = r"""
import json, os, signal, socket, sys, threading, time
from sidecar.__main__ import run_sidecar

argv = sys.argv[1:]
listen = int(argv[argv.index("--listen") + 1].rsplit(":", 1)[1])
admin = int(argv[argv.index("--admin") + 1].rsplit(":", 1)[1])

def raw(port, data):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk

def drive():
    end = time.monotonic() + 30
    while True:
        try:
            if raw(admin, b"GET /readyz HTTP/1.0\r\n\r\n").split(b"\r\n", 1)[0].endswith(b" 200 OK"):
                break
        except OSError:
            pass
        if time.monotonic() > end:
            os._exit(3)
        time.sleep(0.05)
    proxied = raw(listen, b"GET /x HTTP/1.1\r\nHost: a\r\nX-Partition-Key: t1\r\nConnection: close\r\n\r\n")
    scrape = raw(admin, b"GET /metrics HTTP/1.0\r\n\r\n")
    print(json.dumps({"proxied": proxied.split(b"\r\n", 1)[0].decode(),
                      "scrape": scrape.split(b"\r\n", 1)[0].decode(),
                      "modules": sorted(sys.modules)}), flush=True)
    sys.stdin.readline()
    print(json.dumps({"modules": sorted(sys.modules)}), flush=True)
    os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=drive, daemon=True).start()
sys.exit(run_sidecar(argv))
"""

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _heavy(modules: list[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


async def _line(proc: subprocess.Popen) -> dict:
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
    assert line, proc.stderr.read() if proc.poll() is not None else "no output"
    return json.loads(line)


async def test_idle_embedded_sidecar_imports_only_what_it_needs(placement):
    listen, admin, control = free_port(), free_port(), free_port()
    proc = spawn_python(["-c", _DRIVER, "--placement", str(placement), "--listen", f"127.0.0.1:{listen}",
                         "--admin", f"127.0.0.1:{admin}", "--control", f"127.0.0.1:{control}", "--workers", "1",
                         "--no-access-log"],
                        cwd=ROOT, env=clean_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, text=True)
    try:
        idle = await _line(proc)
        assert idle["proxied"].endswith(" 200 OK") and idle["scrape"].endswith(" 200 OK"), idle
        assert _heavy(idle["modules"]) == []

        # the first control call starts the gRPC API behind the lazy listener, and it answers
        async with grpc.aio.insecure_channel(f"127.0.0.1:{control}") as ch:
            r = await pb_grpc.GateStub(ch).Resolve(pb.ResolveRequest(partition="t1"), timeout=30)
        assert (r.partition, r.placement) == ("t1", "a")
        # an HTTP/2 (prior knowledge) client: the server answers with its SETTINGS frame
        reader, writer = await asyncio.open_connection("127.0.0.1", listen)
        writer.write(PREFACE + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        frame = await asyncio.wait_for(reader.readexactly(9), 10)
        assert frame[3] == 0x4   # SETTINGS
        writer.close()

        proc.stdin.write("again\n")
        proc.stdin.flush()
        after = await _line(proc)
        loaded = set(after["modules"])
        from sidecar.proxy.h2 import engine   # (the HTTP/2 engine's library: the binding, ngh2 or h2)

        h2_lib = {"nghttp2": "sidecar.proxy.h2.engine_nghttp2", "ngh2": "ngh2", "h2": "h2"}[engine.choice()]
        assert {"grpc", "google.protobuf", "sidecar.api.server", "sidecar.control.embedded", h2_lib} <= loaded
        # the embedded controller moves no data yet: no HTTP client, no Consul client
        assert not {"aiohttp", "consul", "requests"} & loaded
        assert await asyncio.wait_for(asyncio.to_thread(proc.wait), 30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for f in (proc.stdin, proc.stdout, proc.stderr):
            f.close()


async def _code(call) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code()


async def test_first_control_call_through_the_lazy_listener(placement):
    token = "lazy-listener-test-token-0123456789"
    async with running_sidecar(config(placement, token=token)) as sc:
        assert isinstance(sc.control, LazyControl) and not sc.control.started
        addr = f"127.0.0.1:{sc.control_port}"
        auth = (("authorization", f"Bearer {token}"),)
        chans = [grpc.aio.insecure_channel(addr) for _ in range(4)]
        try:
            # concurrent first calls: one start, every call answered
            got = await asyncio.gather(*(pb_grpc.GateStub(ch).Resolve(pb.ResolveRequest(partition="t2"),
                                                                      metadata=auth, timeout=30) for ch in chans))
            assert [g.placement for g in got] == ["b"] * 4 and sc.control.started
            assert sc.controller is not None   # the embedded controller came with it
            gate_, mig = pb_grpc.GateStub(chans[0]), pb_grpc.MigrationStub(chans[0])
            # the token is checked by the gRPC server, end to end through the relay
            assert await _code(gate_.Resolve(pb.ResolveRequest(partition="t1"), timeout=10)) \
                == grpc.StatusCode.UNAUTHENTICATED
            bad = (("authorization", "Bearer wrong"),)
            assert await _code(gate_.Resolve(pb.ResolveRequest(partition="t1"), metadata=bad, timeout=10)) \
                == grpc.StatusCode.UNAUTHENTICATED
            # a deadline on a stream that never ends by itself
            watch = mig.Watch(pb.WatchRequest(), metadata=auth, timeout=0.5)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in watch:
                    pass
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            # a large message crosses the relay whole (backpressure both ways)
            big = "p" * (1 << 20)
            assert await _code(gate_.Resolve(pb.ResolveRequest(partition=big), metadata=auth, timeout=10)) \
                in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
            # a client that leaves at once does not disturb the next
            with socket.create_connection(("127.0.0.1", sc.control_port)):
                pass
            r = await gate_.Resolve(pb.ResolveRequest(partition="t1"), metadata=auth, timeout=10)
            assert r.placement == "a"
        finally:
            for ch in chans:
                await ch.close()
    # stopped: refused, as with the gRPC server bound directly
    async with grpc.aio.insecure_channel(addr) as ch:
        assert await _code(pb_grpc.GateStub(ch).Resolve(pb.ResolveRequest(partition="t1"), metadata=auth,
                                                        timeout=5)) == grpc.StatusCode.UNAVAILABLE


async def test_a_failed_start_is_retried_by_the_next_connection():
    table = PlacementTable({"t1": "a"})
    store = EmbeddedStore(table, {"a": "http://127.0.0.1:9001"})
    attempts = []

    async def start(addr: str):
        attempts.append(addr)
        if len(attempts) == 1:
            raise RuntimeError("first start fails")
        return await start_control_server(addr, store=store, source=table)

    lazy = LazyControl("127.0.0.1:0", start)
    port = await lazy.listen("127.0.0.1", 0)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.GateStub(ch)
            assert await _code(stub.Resolve(pb.ResolveRequest(partition="t1"), timeout=10)) \
                == grpc.StatusCode.UNAVAILABLE
            assert not lazy.started
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:   # (after grpc's reconnect backoff)
            r = await pb_grpc.GateStub(ch).Resolve(pb.ResolveRequest(partition="t1"), timeout=20,
                                                   wait_for_ready=True)
        assert r.placement == "a" and len(attempts) == 2 and lazy.started
        assert attempts == ["127.0.0.1:0"] * 2   # the gRPC server itself: a private loopback port, no file
    finally:
        await lazy.stop(0)


def test_gate_lazy_names_agree_with_the_type_checking_imports():
    tree = ast.parse(Path(gate.__file__).read_text())
    typed: dict[str, tuple[str, str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING":
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom) and imp.level == 1, ast.dump(imp)
                for a in imp.names:
                    typed[a.asname or a.name] = (imp.module, a.name)
    assert typed == gate._WHERE
    assert sorted(typed) == gate.__all__
    assert set(gate.__all__) <= set(dir(gate))


async def test_a_control_port_in_use_still_stops_the_start(placement):
    from gate import ConfigError
    from sidecar._sidecar import Sidecar

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        sc = Sidecar(config(placement, control=f"127.0.0.1:{port}"))
        with pytest.raises(ConfigError) as info:
            await sc.start()
        await sc.shutdown()
    assert info.value.field == "control" and f"port {port} (127.0.0.1:{port}) is already in use" in str(info.value)
