"""Real applications for the app-side write gate tests: one SQLite-backed KV
service, served by aiohttp, by uvicorn (Starlette, and plain ASGI) and by a
grpc.aio server, each with the matching gate middleware.

Every write runs ``BEGIN; INSERT; <pause>; guard; COMMIT`` and rolls back on
any exception, so "nothing committed" is a fact read back from the database.
The pause lets a test move the partition's epoch *after* the sidecar's
admission and *before* the commit.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import uvicorn
from aiohttp import web

import gate


@dataclass
class KV:
    """A SQLite key-value table with an explicit transaction per write."""

    path: Path
    pause: asyncio.Event | None = None  # when set, a write waits here before its commit
    pause_in_guard: asyncio.Event | None = None  # ... or inside the guard, just before COMMIT
    paused: asyncio.Event = field(default_factory=asyncio.Event)  # set once a write reached the pause
    conn: sqlite3.Connection = field(init=False)

    def __post_init__(self) -> None:
        self.conn = sqlite3.connect(self.path, isolation_level=None)
        self.conn.execute("CREATE TABLE IF NOT EXISTS kv (seq INTEGER PRIMARY KEY, partition TEXT, k TEXT, v TEXT, epoch INTEGER)")

    async def put(self, partition: str, key: str, value: str) -> int:
        """Insert a row; commit through the current request's guard."""
        self.conn.execute("BEGIN")
        try:
            epoch = gate.current_guard().epoch  # the stamp this attempt carries
            cur = self.conn.execute("INSERT INTO kv (partition, k, v, epoch) VALUES (?, ?, ?, ?)",
                                    (partition, key, value, None if epoch is None else int(epoch)))
            if self.pause is not None:
                self.paused.set()
                await self.pause.wait()
            async with gate.current_guard():
                if self.pause_in_guard is not None:  # admitted at the commit point, not yet committed
                    self.paused.set()
                    await self.pause_in_guard.wait()
                self.conn.execute("COMMIT")
            return int(cur.lastrowid)
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def rows(self) -> list[tuple[str, str, str]]:
        return self.conn.execute("SELECT partition, k, v FROM kv ORDER BY seq").fetchall()

    def epochs(self) -> list[int | None]:
        """The stamped epoch of every committed row."""
        return [r[0] for r in self.conn.execute("SELECT epoch FROM kv ORDER BY seq")]

    def close(self) -> None:
        self.conn.close()


# ---- aiohttp -----------------------------------------------------------------


async def start_aiohttp(kv: KV, admitter: Any, **opts: Any) -> tuple[web.AppRunner, str]:
    async def put(request: web.Request) -> web.Response:
        guard = gate.current_guard()
        seq = await kv.put(guard.partition or "-", request.match_info["key"], await request.text())
        return web.json_response({"seq": seq})

    async def get(request: web.Request) -> web.Response:
        rows = [r for r in kv.rows() if r[1] == request.match_info["key"]]
        return web.json_response({"values": [r[2] for r in rows]})

    app = web.Application(middlewares=[gate.aiohttp_middleware(admitter, **opts)])
    app.router.add_put("/kv/{key}", put)
    app.router.add_get("/kv/{key}", get)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


# ---- ASGI: Starlette and plain -------------------------------------------------


def starlette_app(kv: KV, admitter: Any, **opts: Any) -> Any:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def put(request: Request) -> JSONResponse:
        guard = request.scope["epochgate.guard"]
        seq = await kv.put(guard.partition or "-", request.path_params["key"], (await request.body()).decode())
        return JSONResponse({"seq": seq})

    return Starlette(
        routes=[Route("/kv/{key}", put, methods=["PUT"])],
        middleware=[Middleware(gate.AsgiGateMiddleware, admitter=admitter, **opts)],
    )


def plain_asgi_app(kv: KV, admitter: Any, **opts: Any) -> Any:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        guard = gate.current_guard()
        seq = await kv.put(guard.partition or "-", scope["path"].rsplit("/", 1)[-1], body.decode())
        out = json.dumps({"seq": seq}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": out})

    return gate.AsgiGateMiddleware(app, admitter, **opts)


async def start_uvicorn(app: Any) -> tuple[uvicorn.Server, asyncio.Task, str]:
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", loop="none")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, task, f"http://127.0.0.1:{port}"


async def stop_uvicorn(server: uvicorn.Server, task: asyncio.Task) -> None:
    server.should_exit = True
    await asyncio.wait_for(task, 10)


# ---- grpc.aio ------------------------------------------------------------------

GRPC_PUT = "/kv.v1.Store/Put"
GRPC_GET = "/kv.v1.Store/Get"


async def start_grpc_app(kv: KV, admitter: Any, **opts: Any) -> tuple[grpc.aio.Server, str]:
    """A KV service with JSON-in-bytes messages (generic handlers, no codegen)."""

    async def put(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        req = json.loads(request)
        guard = gate.current_guard()
        seq = await kv.put(guard.partition or "-", req["key"], req["value"])
        return json.dumps({"seq": seq}).encode()

    async def get(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        key = json.loads(request)["key"]
        return json.dumps({"values": [r[2] for r in kv.rows() if r[1] == key]}).encode()

    handlers = grpc.method_handlers_generic_handler(
        "kv.v1.Store",
        {"Put": grpc.unary_unary_rpc_method_handler(put), "Get": grpc.unary_unary_rpc_method_handler(get)},
    )
    server = grpc.aio.server(interceptors=[gate.grpc_interceptor(admitter, read_methods={GRPC_GET}, **opts)])
    server.add_generic_rpc_handlers((handlers,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"
