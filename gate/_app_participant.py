"""One call to make an application process a barrier participant (DESIGN §5 rule 6).

An application that admits writes in-process (``LocalAdmitter``) must answer
from a participant of the cutover barrier, never from a plain cache. Wiring
one takes five parts that must fit together — a Consul consensus, a replica
factory whose blocking queries wait at most a third of the lease (rule 3), an
in-flight tracker shared by the admitter and the participant's cutover ack,
the participant itself, and an admitter that asks it — and the sidecar and the
example application used to each write that wiring out. ``open_participant``
is that wiring, once::

    app_gate = await open_participant("http://127.0.0.1:8500", participant_id="kv-a")
    middleware = aiohttp_middleware(app_gate.admitter)
    ...
    await app_gate.close()

The sidecar builds its ``Participant`` the same way (``make_participant``),
with its own tracker, and wires its write gate instead of a ``LocalAdmitter``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._admit import LocalAdmitter
from ._consul_consensus import ConsulConsensus
from ._inflight import InflightTracker
from ._participant import Participant
from ._replica import Replica


def make_participant(consensus: ConsulConsensus, consul_url: str, prefix: str = "epochgate/", *,
                     participant_id: str, tracker: InflightTracker | None = None, ttl_s: float = 10.0,
                     lease_s: float | None = None, token: str | None = None,
                     push_target: str | None = None, push_token: str | None = None) -> Participant:
    """An unstarted ``Participant`` whose replicas follow ``consensus`` with a
    blocking-query wait of ``lease / 3`` (a quiet table still counts as fresh)."""
    participant: Participant | None = None

    def replica() -> Replica:
        assert participant is not None  # called only once the participant runs
        return Replica(consensus, wait_s=participant.wait_s)

    # One HTTP client to Consul: the session calls share the replica's pool when it speaks with
    # the same token (a pool of one connection, ``ConsulConsensus(connections=1)``: DESIGN §5).
    shared = consensus.http_session if consensus.token == token and consensus.url == consul_url.rstrip("/") else None
    participant = Participant(consul_url, prefix, participant_id=participant_id, replica_factory=replica,
                              tracker=tracker, ttl_s=ttl_s, lease_s=lease_s, token=token, push_target=push_target,
                              push_token=push_token, http_session=shared)
    return participant


@dataclass(frozen=True, slots=True)
class AppParticipant:
    """A started participant for an application, and the admitter that asks it."""

    participant: Participant
    admitter: LocalAdmitter
    tracker: InflightTracker
    consensus: ConsulConsensus

    async def close(self) -> None:
        """Stop admitting, give the session up, close the Consul connections."""
        try:
            await self.participant.stop()
        finally:
            await self.consensus.close()

    async def __aenter__(self) -> "AppParticipant":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


async def open_participant(consul_url: str, prefix: str = "epochgate/", *, participant_id: str,
                           token: str | None = None, ttl_s: float = 10.0, lease_s: float | None = None,
                           wait_joined_s: float | None = 30.0) -> AppParticipant:
    """Start a barrier participant on ``consul_url`` and return it with its ``LocalAdmitter``.

    With ``wait_joined_s`` (default 30 s) it waits for the first join and
    raises ``BackendError`` when that does not happen in time (nothing is left
    running). Until it has joined, every admit is refused (``fail_closed``).
    """
    consensus = ConsulConsensus(consul_url, prefix, token, connections=1)
    tracker = InflightTracker()
    try:
        participant = make_participant(consensus, consul_url, prefix, participant_id=participant_id, tracker=tracker,
                                       ttl_s=ttl_s, lease_s=lease_s, token=token)
    except BaseException:
        await consensus.close()
        raise
    try:
        await participant.start(wait_joined_s=wait_joined_s)
    except BaseException:
        await participant.stop()
        await consensus.close()
        raise
    admitter = LocalAdmitter(participant, participant, tracker=tracker)
    return AppParticipant(participant, admitter, tracker, consensus)
