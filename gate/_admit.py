"""The commit-point admit: ask a barrier participant whether a write may commit.

DESIGN §5 rule 6: an application re-admits each write immediately before its
commit, and the answer must come from a participant of the cutover barrier —
the local sidecar's ``Gate`` gRPC service (``AdmitClient``/``SyncAdmitClient``)
or an in-process replica that follows rules 1–5 itself (``LocalAdmitter``).

Every admitter fails closed: when the answer cannot be had (sidecar down,
frozen, slow, refusing, answering garbage) the answer is a ``Reject`` with
reason ``fail_closed``, never an admit.

grpc is imported lazily (on the first remote admit), so ``import gate`` does
not load it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Awaitable, Protocol, runtime_checkable

from ._admission import FAIL_CLOSED, fail_closed_admit
from ._exceptions import ConfigError
from ._types import WriteAdmission

log = logging.getLogger("epochgate.admit")


@runtime_checkable
class Admitter(Protocol):
    """What a ``CommitGuard`` asks. ``admit`` may be sync or async.

    An admitter may also have ``done(partition, epoch)``: the guard calls it
    after the guarded commit finished (admitted writes only), so in-flight
    tracking covers the commit itself.
    """

    def admit(self, partition: str, epoch: int) -> WriteAdmission | Awaitable[WriteAdmission]: ...


def _pb() -> tuple[Any, Any]:
    from .pb.epochgate.v1 import epochgate_pb2, epochgate_pb2_grpc

    return epochgate_pb2, epochgate_pb2_grpc


def admission_from_response(resp: Any) -> WriteAdmission:
    """See ``gate.wire.admission_from_response`` (imported lazily: it loads protobuf)."""
    from .wire import admission_from_response as convert

    return convert(resp)


# The sidecar is on loopback: after it restarts, reconnect within about a second
# instead of gRPC's default backoff (up to 120 s of failing closed).
_CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


def _check_timeout(timeout_s: float) -> float:
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not 0 < timeout_s <= 60:
        raise ConfigError("timeout_s", f"must be a number of seconds in (0, 60], got {timeout_s!r}")
    return float(timeout_s)


def _check_target(target: str) -> str:
    if not isinstance(target, str) or not target.strip():
        raise ConfigError("target", f"must be a gRPC target such as '127.0.0.1:50051', got {target!r}")
    return target.strip()


def _metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    if token is None:
        return ()
    if not isinstance(token, str) or not token or any(c in token for c in "\r\n"):
        raise ConfigError("token", "must be a non-empty single-line string")
    return (("authorization", f"Bearer {token}"),)


class AdmitClient:
    """Async client of the sidecar's ``epochgate.v1.Gate/AdmitWrite`` (grpc.aio).

    One channel per event loop, opened on first use and reused. Any failure —
    connection refused, deadline (``timeout_s``) exceeded, an error status, a
    malformed answer — gives ``Reject(fail_closed)``; ``last_error`` says why.
    """

    def __init__(self, target: str = "127.0.0.1:50051", *, timeout_s: float = 0.25, token: str | None = None) -> None:
        self.target = _check_target(target)
        self.timeout_s = _check_timeout(timeout_s)
        self._metadata = _metadata(token)
        self._channel: Any = None
        self._stub: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.last_error: str | None = None

    def _ensure(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._stub is None or self._loop is not loop:
            import grpc

            pb2, pb2_grpc = _pb()
            self._channel = grpc.aio.insecure_channel(self.target, options=_CHANNEL_OPTIONS)
            self._stub = pb2_grpc.GateStub(self._channel)
            self._request = pb2.AdmitWriteRequest
            self._loop = loop
        return self._stub

    async def admit(self, partition: str, epoch: int) -> WriteAdmission:
        """Ask the sidecar; ``Reject(fail_closed)`` when it cannot answer in time."""
        try:
            stub = self._ensure()
            resp = await stub.AdmitWrite(
                self._request(partition=partition, epoch=int(epoch)),
                timeout=self.timeout_s,
                metadata=self._metadata,
            )
            return admission_from_response(resp)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure is a refusal, never an admit
            self.last_error = f"{type(exc).__name__}: {_short(exc)}"
            log.warning("commit-point admit failed closed (%s): %s", self.target, self.last_error)
            return FAIL_CLOSED

    async def wait_ready(self, timeout_s: float = 5.0) -> bool:
        """Open the channel and wait (up to ``timeout_s``) until it is connected; True if it is.

        For an application's start-up: the first ``admit`` otherwise pays the TCP and HTTP/2
        handshake inside its own ``timeout_s`` (0.25 s), and a sidecar busy for that long (its
        first HTTP/2 connection loads the engine) makes that write fail closed — safe, replayed
        by the sidecar, but a refusal nobody needed. Never raises."""
        try:
            self._ensure()
            async with asyncio.timeout(timeout_s):
                await self._channel.channel_ready()
            return True
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - not ready: admit() fails closed as before
            self.last_error = f"{type(exc).__name__}: {_short(exc)}"
            return False

    async def close(self) -> None:
        """Close the channel (idempotent)."""
        channel, self._channel, self._stub, self._loop = self._channel, None, None, None
        if channel is not None:
            await channel.close()

    async def __aenter__(self) -> "AdmitClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AdmitClient({self.target!r}, timeout_s={self.timeout_s})"


class SyncAdmitClient:
    """Blocking client of ``Gate/AdmitWrite`` for threaded (WSGI-style) apps.

    Thread-safe; one channel, opened on first use. Fails closed like
    ``AdmitClient``. It blocks the calling thread for up to ``timeout_s``: do
    not call it on an event loop's thread (use ``AdmitClient`` there).
    """

    def __init__(self, target: str = "127.0.0.1:50051", *, timeout_s: float = 0.25, token: str | None = None) -> None:
        self.target = _check_target(target)
        self.timeout_s = _check_timeout(timeout_s)
        self._metadata = _metadata(token)
        self._lock = threading.Lock()
        self._channel: Any = None
        self._stub: Any = None
        self.last_error: str | None = None

    def _ensure(self) -> Any:
        stub = self._stub
        if stub is None:
            with self._lock:
                if self._stub is None:
                    import grpc

                    pb2, pb2_grpc = _pb()
                    self._channel = grpc.insecure_channel(self.target, options=_CHANNEL_OPTIONS)
                    self._request = pb2.AdmitWriteRequest
                    self._stub = pb2_grpc.GateStub(self._channel)
                stub = self._stub
        return stub

    def admit(self, partition: str, epoch: int) -> WriteAdmission:
        """Ask the sidecar; ``Reject(fail_closed)`` when it cannot answer in time."""
        try:
            stub = self._ensure()
            resp = stub.AdmitWrite(
                self._request(partition=partition, epoch=int(epoch)),
                timeout=self.timeout_s,
                metadata=self._metadata,
            )
            return admission_from_response(resp)
        except Exception as exc:  # any failure is a refusal, never an admit
            self.last_error = f"{type(exc).__name__}: {_short(exc)}"
            log.warning("commit-point admit failed closed (%s): %s", self.target, self.last_error)
            return FAIL_CLOSED

    def close(self) -> None:
        """Close the channel (idempotent)."""
        with self._lock:
            channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            channel.close()

    def __enter__(self) -> "SyncAdmitClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SyncAdmitClient({self.target!r}, timeout_s={self.timeout_s})"


class LocalAdmitter:
    """Answer the commit-point admit in-process (the embedded-replica case).

    ``source`` is a ``PlacementSource`` (a ``PlacementTable`` or a ``Replica``).
    A replica-backed admitter must be a barrier participant (DESIGN §5 rule 6):
    pass the ``participant`` (any object with ``writable() -> bool``, normally
    ``gate._participant.Participant``); every admit then also requires
    ``participant.writable()``. A source that has ``writable()`` (a
    ``Participant``, which serves reads from its current replica) is its own
    participant: ``LocalAdmitter(participant)``. Without one, a source that has ``last_read``
    (a replica) is refused unless ``require_participant=False`` is said out loud.

    ``tracker`` (``begin``/``end``; default: the participant's ``tracker``)
    counts the admitted write in flight until the guarded commit is done, so
    the participant's cutover ack waits for it.
    """

    def __init__(
        self,
        source: Any,
        participant: Any = None,
        *,
        tracker: Any = None,
        require_participant: bool | None = None,
    ) -> None:
        if not callable(getattr(source, "admit_write", None)):
            raise ConfigError("source", f"needs admit_write(partition, epoch), got {type(source).__name__}")
        if participant is None and callable(getattr(source, "writable", None)):
            participant = source  # a Participant is itself a PlacementSource
        if participant is not None and not callable(getattr(participant, "writable", None)):
            raise ConfigError("participant", f"needs writable() -> bool, got {type(participant).__name__}")
        if require_participant is None:
            require_participant = hasattr(source, "last_read")
        if require_participant and participant is None:
            raise ConfigError(
                "participant",
                "a replica-backed admitter must be a barrier participant (DESIGN §5 rule 6); "
                "pass participant=Participant(...) or require_participant=False",
            )
        if tracker is None and participant is not None:
            tracker = getattr(participant, "tracker", None)
        if tracker is not None and not (callable(getattr(tracker, "begin", None)) and callable(getattr(tracker, "end", None))):
            raise ConfigError("tracker", f"needs begin(p, epoch) and end(p, epoch), got {type(tracker).__name__}")
        self.source = source
        self.participant = participant
        self.tracker = tracker

    def admit(self, partition: str, epoch: int) -> WriteAdmission:
        """Admit against the local table, failing closed when the participant is not writable."""
        tracker = self.tracker
        # Count the write in flight *before* reading the table: a participant
        # that applies a cutover after our read then sees it and waits for it.
        if tracker is not None:
            tracker.begin(partition, epoch)
        try:
            writable = self.participant is None or self.participant.writable()
        except Exception as exc:
            log.warning("local admit failed closed: %s", _short(exc))
            writable = False
        result = fail_closed_admit(self.source, partition, epoch, writable)
        if not result and tracker is not None:
            tracker.end(partition, epoch)
        return result

    def done(self, partition: str, epoch: int) -> None:
        """The admitted write's commit finished (committed or rolled back)."""
        if self.tracker is not None:
            self.tracker.end(partition, epoch)

    def __repr__(self) -> str:
        return f"LocalAdmitter({type(self.source).__name__}, participant={self.participant is not None})"


def _short(exc: BaseException) -> str:
    details = getattr(exc, "details", None)
    if callable(details):
        try:
            text = details()
            code = exc.code()  # type: ignore[attr-defined]
            return f"{getattr(code, 'name', code)} {text}"
        except Exception:
            pass
    return str(exc)[:200]
