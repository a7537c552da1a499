"""A controller-side push hub on a loopback gRPC port, and push participants (issue 31)."""

from __future__ import annotations

import grpc

from gate import ConsulConsensus, InflightTracker, Participant, PushHub, Replica


async def serve_hub(consensus, fence: int = 1, *, hub_cls=PushHub, wait_s: float = 2.0):
    """A started ``hub_cls`` on 127.0.0.1:<free port>; returns (hub, server, target)."""
    hub = hub_cls(consensus, fence, wait_s=wait_s)
    server = grpc.aio.server()
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
