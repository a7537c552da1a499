"""The control port, held until first used (issue 20: memory per sidecar).

grpc, protobuf and the services behind them (for a one-process sidecar on the
embedded store, its migration controller, with aiohttp for the mover) cost a
sidecar ~25 MiB resident, while most sidecars are never called on
``--control``. ``LazyControl`` binds the control address at start with a plain
asyncio listener, so the port, its address checks and its bind errors are the
same as before. The first connection starts the real gRPC server (``start``,
given by the sidecar) on a private loopback port (``127.0.0.1:0``: no file, so
a read-only root filesystem works; it is reachable by no more than the public
loopback listener is, and it checks the same token), and every connection,
that one included, is relayed to it byte for byte: the bearer-token check and
everything else of the gRPC API stay end to end.

The first call pays the imports and the start (92 ms measured on the 2-core
development machine, under load; the imports run on a thread so the data path
keeps its loop), and the sidecar's memory grows by that much from then on
(bench/bench_rss.py prints it). Each later call pays one relay through this
process (a loopback hop; bench/bench_control_relay.py finds it within the
noise of a ~500 µs unary call on the development machine); the relay applies backpressure both ways (a side
whose write buffer fills stops the other side's reading). A start that fails
closes the waiting connections and is retried by the next connection.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Awaitable, Callable

from gate import ConfigError

from .._log import event


class _Pipe(asyncio.Protocol):
    """One side of a relayed connection; ``other`` is the opposite side's transport."""

    def __init__(self, owner: "set[_Pipe] | None" = None) -> None:
        self.owner = owner               # the client-side pipes of a LazyControl (closed at stop)
        if owner is not None:
            owner.add(self)
        self.transport: asyncio.Transport | None = None
        self.other: asyncio.Transport | None = None
        self.pending: list[bytes] = []   # bytes read before the other side existed (then reading pauses)
        self.done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def attach(self, other: asyncio.Transport) -> None:
        self.other = other
        for data in self.pending:
            other.write(data)
        self.pending = []
        if self.done:
            other.close()
        elif self.transport is not None:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.other is not None:
            self.other.write(data)
        else:
            self.pending.append(data)
            self.transport.pause_reading()  # type: ignore[union-attr]

    def eof_received(self) -> bool:
        if self.other is not None and self.other.can_write_eof() and not self.other.is_closing():
            self.other.write_eof()
            return True   # half-closed: the other direction keeps flowing
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.done = True
        self.transport = None
        if self.owner is not None:
            self.owner.discard(self)
        if self.other is not None:
            self.other.close()   # after flushing what it holds

    def pause_writing(self) -> None:
        if self.other is not None and not self.other.is_closing():
            self.other.pause_reading()

    def resume_writing(self) -> None:
        if self.other is not None and not self.other.is_closing():
            self.other.resume_reading()


def _import_off_loop(modules: tuple[str, ...]) -> "asyncio.Future[None]":
    """Import ``modules`` on a short-lived thread (a plain one: no executor left idle)."""
    import importlib

    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()

    def run() -> None:
        try:
            for m in modules:
                importlib.import_module(m)
        except BaseException as exc:  # reported to the waiting coroutine
            err: BaseException | None = exc
        else:
            err = None
        loop.call_soon_threadsafe(_settle, fut, err)

    threading.Thread(target=run, name="control-import", daemon=True).start()
    return fut


def _settle(fut: "asyncio.Future[None]", err: BaseException | None) -> None:
    if not fut.done():
        if err is None:
            fut.set_result(None)
        else:
            fut.set_exception(err)


class LazyControl:
    """Holds ``addr`` and starts the gRPC server behind it on the first connection.

    ``start(private_addr)`` starts the server on ``127.0.0.1:0`` and returns it (with
    ``epochgate_port`` and ``stop(grace)``); ``imports`` are imported off the loop first.
    """

    def __init__(self, addr: str, start: Callable[[str], Awaitable[Any]], imports: tuple[str, ...] = ()) -> None:
        self.addr = addr
        self._start = start
        self._imports = imports
        self.listener: asyncio.base_events.Server | None = None
        self.backend: Any = None            # the gRPC server, once started
        self.epochgate_port = 0
        self._backend_port = 0
        self._starting: asyncio.Task[None] | None = None
        self._conns: set[_Pipe] = set()
        self._stopped = False

    async def listen(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        try:
            self.listener = await loop.create_server(self._accept, host.strip("[]") or None, port,
                                                     reuse_address=True)
        except OSError as exc:
            from .._ports import bind_error

            raise bind_error("control", self.addr, exc) from exc
        self.epochgate_port = self.listener.sockets[0].getsockname()[1]
        return self.epochgate_port

    @property
    def started(self) -> bool:
        return self.backend is not None

    def _accept(self) -> _Pipe:
        pipe = _Pipe(self._conns)
        asyncio.get_running_loop().create_task(self._connect(pipe))
        return pipe

    async def _ensure(self) -> None:
        if self.backend is not None:
            return
        s = self._starting
        if s is None or (s.done() and (s.cancelled() or s.exception() is not None)):   # a failed start: again
            self._starting = asyncio.get_running_loop().create_task(self._start_backend())
        await asyncio.shield(self._starting)

    async def _start_backend(self) -> None:
        t0 = asyncio.get_running_loop().time()
        if self._imports:
            await _import_off_loop(self._imports)
        server = await self._start("127.0.0.1:0")
        if self._stopped:
            await server.stop(0)
            raise ConnectionAbortedError("sidecar stopping")
        self._backend_port = server.epochgate_port
        self.backend = server
        event("control API started on first use", control=self.addr,
              ms=round(1000 * (asyncio.get_running_loop().time() - t0)))

    async def _connect(self, pipe: _Pipe) -> None:
        try:
            await self._ensure()
            loop = asyncio.get_running_loop()
            back_t, back = await loop.create_connection(_Pipe, "127.0.0.1", self._backend_port)
        except Exception as exc:
            if not self._stopped:
                event("control API could not start", logging.ERROR, control=self.addr,
                      error=f"{type(exc).__name__}: {exc}")
            if pipe.transport is not None:
                pipe.transport.abort()
            return
        if pipe.transport is None:      # the client left while the server started
            back_t.close()
            return
        back.attach(pipe.transport)
        pipe.attach(back_t)  # type: ignore[arg-type]

    async def stop(self, grace: float | None = None) -> None:
        self._stopped = True
        if self.listener is not None:
            self.listener.close()
        if self.backend is not None:
            await self.backend.stop(grace)
        elif self._starting is not None and not self._starting.done():
            self._starting.cancel()
        for pipe in list(self._conns):
            if pipe.transport is not None:
                pipe.transport.abort()
        if self.listener is not None:
            await self.listener.wait_closed()
