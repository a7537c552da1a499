"""A small real gRPC service for the forwarder tests (tests/test_bare_h2_forwarder.py,
tests/test_cng_forwarder.py): ``kv.v1.Store/Put`` echoes its request with ``!`` after a delay that
makes replies overtake each other across streams; ``Fail`` answers NOT_FOUND in trailers."""

from __future__ import annotations

import asyncio

import grpc


async def start_store() -> tuple[grpc.aio.Server, int]:
    """A started grpcio server on loopback and its port."""
    async def put(request: bytes, context) -> bytes:
        await asyncio.sleep(0.01 * (request[-1] % 3))  # replies overtake each other across streams
        return request + b"!"

    async def fail(request: bytes, context) -> bytes:
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such key")

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("kv.v1.Store", {
        "Put": grpc.unary_unary_rpc_method_handler(put), "Fail": grpc.unary_unary_rpc_method_handler(fail)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port
