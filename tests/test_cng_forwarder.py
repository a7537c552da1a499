"""bench/_cng_forwarder.pyx (``cng-h2`` in bench_grpc: libnghttp2 driven from C, docs/figures-peers.md
stop 37) is a real gRPC forwarder, so its figure is not cheaper for the wrong reason: a real grpcio
server behind it and a real grpcio client in front; replies, error trailers and concurrent calls pass
intact. Skipped where libnghttp2's headers (Debian libnghttp2-dev) or a C compiler are missing."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc
import pytest

from bench._compiled_copy import compiled_argv
from bench.bench_proxy import wait_port
from tests._grpc_store import start_store
from tests._sidecar_util import free_port

pytest.importorskip("uvloop")
pytest.importorskip("Cython")
SOURCE = Path(__file__).resolve().parent.parent / "bench" / "_cng_forwarder.pyx"
if not Path("/usr/include/nghttp2/nghttp2.h").is_file():
    pytest.skip("libnghttp2's headers are not installed (Debian: libnghttp2-dev)", allow_module_level=True)


async def test_unary_calls_and_error_trailers_pass_through_the_c_driven_forwarder():
    # built once per source (Cython + cc take ~4 s of CPU), then reused by later runs
    key = hashlib.sha256(SOURCE.read_bytes() + sys.implementation.cache_tag.encode()).hexdigest()[:16]
    dest = Path(tempfile.gettempdir()) / f"epochgate-cng-{key}"
    argv = await asyncio.to_thread(compiled_argv, SOURCE, dest)
    if argv is None:
        pytest.skip("bench/_cng_forwarder.pyx could not be built (said on stderr)")

    server, up = await start_store()
    port = free_port()
    proc = subprocess.Popen([*argv, str(port), str(up)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        await asyncio.to_thread(wait_port, port)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            put_call = ch.unary_unary("/kv.v1.Store/Put")
            got = await asyncio.wait_for(asyncio.gather(*(put_call(b"k%d" % i) for i in range(30))), 10)
            assert got == [b"k%d!" % i for i in range(30)]
            big = b"x" * 200_000  # several DATA frames and window updates each way
            assert await asyncio.wait_for(put_call(big), 10) == big + b"!"
            with pytest.raises(grpc.aio.AioRpcError) as err:  # the client resets its stream mid-call
                await put_call(b"slow\x02", timeout=0.005)
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await asyncio.wait_for(ch.unary_unary("/kv.v1.Store/Fail")(b"k"), 10)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            assert err.value.details() == "no such key"
            assert await asyncio.wait_for(put_call(b"after"), 10) == b"after!"
    finally:
        proc.kill()
        proc.wait()
        print(proc.stdout.read())
        proc.stdout.close()
        await server.stop(None)
