"""bench/_bare_h2_forwarder.py, the floor bench_grpc and bench_grpc_latency measure the sidecar
against (docs/figures-peers.md, stop 37), is a real gRPC forwarder: a floor that dropped trailers
or mixed up streams would be cheaper for the wrong reason. A real grpcio server behind it, a real
grpcio client in front: replies, error statuses (trailers) and concurrent calls pass intact."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from bench.bench_proxy import wait_port
from tests._grpc_store import start_store
from tests._sidecar_util import free_port

pytest.importorskip("ngh2")
pytest.importorskip("uvloop")
FORWARDER = Path(__file__).resolve().parent.parent / "bench" / "_bare_h2_forwarder.py"


async def test_unary_calls_and_error_trailers_pass_through_the_bare_forwarder():
    server, up = await start_store()
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(FORWARDER), str(port), str(up)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        await asyncio.to_thread(wait_port, port)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            put_call = ch.unary_unary("/kv.v1.Store/Put")
            got = await asyncio.wait_for(asyncio.gather(*(put_call(b"k%d" % i) for i in range(30))), 10)
            assert got == [b"k%d!" % i for i in range(30)]
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await asyncio.wait_for(ch.unary_unary("/kv.v1.Store/Fail")(b"k"), 10)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            assert err.value.details() == "no such key"
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        await server.stop(None)
