"""A controller-side push hub on a loopback gRPC port, and push participants (issue 31)."""

from __future__ import annotations

import grpc

from gate import ConsulConsensus, InflightTracker, Participant, PushHub, Replica


async def serve_hub(consensus, fence: int = 1, *, hub_cls=PushHub, wait_s: float = 2.0, options=None):
    """A started ``hub_cls`` on 127.0.0.1:<free port>; returns (hub, server, target)."""
    hub = hub_cls(consensus, fence, wait_s=wait_s)
    server = grpc.aio.server(options=PushHub.server_options() if options is None else options)
    hub.add_to(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await hub.start()
    return hub, server, f"127.0.0.1:{port}"


async def push_participant(url: str, prefix: str, pid: str, target: str | None, *, ttl_s: float = 10.0,
                           push_token: str | None = None):
    """A started participant (own Consul clients, own replica) pushing via ``target``."""
    c = ConsulConsensus(url, prefix, connections=1)
    holder: dict = {}
    p = Participant(url, prefix, participant_id=pid, ttl_s=ttl_s, tracker=InflightTracker(),
                    replica_factory=lambda: Replica(c, wait_s=holder["p"].wait_s), push_target=target,
                    push_token=push_token, http_session=c.http_session)
    holder["p"] = p
    await p.start(wait_joined_s=20)
    p._test_consensus = c
    return p


async def stop_participants(ps) -> None:
    for p in ps:
        await p.stop()
        await p._test_consensus.close()


class FreezingProxy:
    """A loopback TCP proxy that, once ``freeze()`` is called, forwards nothing more in either
    direction and keeps both sockets open: to each end, its peer vanished without a FIN."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.frozen = False
        self.bytes_up = 0   # forwarded from the client to the upstream
        self._tasks: set = set()
        self._writers: list = []
        self._server = None

    async def start(self) -> str:
        import asyncio
        self._server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        return f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def freeze(self) -> None:
        self.frozen = True

    async def _pump(self, reader, writer, up: bool = False) -> None:
        import asyncio
        while True:
            data = await reader.read(65536)
            if self.frozen:
                await asyncio.Event().wait()   # swallow it and everything after; never close
            if not data:
                writer.close()
                return
            if up:
                self.bytes_up += len(data)
            writer.write(data)
            await writer.drain()

    async def _conn(self, reader, writer) -> None:
        import asyncio
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._writers += [writer, up_w]
        for t in (asyncio.ensure_future(self._pump(reader, up_w, True)), asyncio.ensure_future(self._pump(up_r, writer))):
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        import asyncio
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for w in self._writers:
            w.close()
        if self._server is not None:
            self._server.close()
