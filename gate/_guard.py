"""``CommitGuard``: the commit-point admit, used right around the commit.

The sidecar admitted the request when it forwarded it and stamped it with
``X-Partition`` and ``X-Placement-Epoch``. Between that admission and the
application's commit a cutover can begin; so the application asks again,
immediately before committing::

    async with db.transaction():
        ...                                   # do the work
        async with current_guard():           # admit again, or raise StaleEpoch
            await db.commit()

A refusal raises ``StaleEpoch`` *before* the guarded block runs, so the
enclosing transaction rolls back; the gate middleware turns it into the
stale-epoch problem document, which the sidecar retries.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Mapping, TypeVar

from ._admission import FAIL_CLOSED
from ._exceptions import ConfigError, MisdirectedWrite, StaleEpoch, UnstampedWrite
from ._types import Epoch, Reject, WriteAdmission, partition_id

PARTITION_HEADER = "X-Partition"
EPOCH_HEADER = "X-Placement-Epoch"
PLACEMENT_HEADER = "X-Placement"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Stamp:
    """What the sidecar stamped on a request: the partition and its epoch."""

    partition: str
    epoch: Epoch

    def __post_init__(self) -> None:
        try:
            partition_id(self.partition, PARTITION_HEADER)
        except ConfigError as exc:
            raise UnstampedWrite(PARTITION_HEADER, str(exc)) from exc
        if not isinstance(self.epoch, Epoch):
            raise UnstampedWrite(EPOCH_HEADER, f"epoch must be an Epoch, got {self.epoch!r}")

    @classmethod
    def parse(cls, partition: str | bytes | None, epoch: str | bytes | None) -> "Stamp | None":
        """Build from raw header values; None when both are absent.

        Raises ``UnstampedWrite`` naming the header when only one is present or a
        value is malformed.
        """
        if partition is None and epoch is None:
            return None
        if partition is None:
            raise UnstampedWrite(PARTITION_HEADER, f"missing (the request has {EPOCH_HEADER})")
        if epoch is None:
            raise UnstampedWrite(EPOCH_HEADER, f"missing (the request has {PARTITION_HEADER})")
        if isinstance(partition, bytes):
            partition = partition.decode("utf-8", "replace")
        try:
            parsed = Epoch.parse(epoch)
        except ValueError as exc:
            raise UnstampedWrite(EPOCH_HEADER, str(exc)) from exc
        return cls(partition, parsed)

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> "Stamp | None":
        """From a case-insensitive mapping (aiohttp/Starlette headers, or a dict)."""
        return cls.parse(_get_ci(headers, PARTITION_HEADER), _get_ci(headers, EPOCH_HEADER))


def _get_ci(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None and type(headers) is dict:  # plain dicts are case-sensitive
        lname = name.lower()
        for k, v in headers.items():
            if k.lower() == lname:
                return str(v)
    return value


class CommitGuard:
    """Re-admit a stamped write at its commit point; raise ``StaleEpoch`` if refused.

    ``admitter`` is anything with ``admit(partition, epoch)`` (sync or async):
    ``AdmitClient``, ``SyncAdmitClient``, ``LocalAdmitter``. ``stamp=None``
    (an unstamped request let through by ``allow_unstamped=True``) makes the
    guard a no-op: only for local development.

    Use as ``async with guard:``, ``with guard:`` (sync admitters only), or as a
    decorator ``@guard`` on the commit function. Each use admits afresh. In
    async code use ``AdmitClient`` or ``LocalAdmitter``; ``SyncAdmitClient``
    belongs to threaded apps (it would block the event loop).
    """

    __slots__ = ("admitter", "stamp", "last", "_held")

    def __init__(self, admitter: Any, stamp: Stamp | None) -> None:
        if not callable(getattr(admitter, "admit", None)):
            raise ConfigError("admitter", f"needs admit(partition, epoch), got {type(admitter).__name__}")
        self.admitter = admitter
        self.stamp = stamp
        self.last: WriteAdmission | None = None
        self._held = False

    @classmethod
    def from_headers(cls, admitter: Any, headers: Mapping[str, str], *, allow_unstamped: bool = False) -> "CommitGuard":
        """Build from a request's headers; ``UnstampedWrite`` if they are missing (unless allowed)."""
        stamp = Stamp.from_headers(headers)
        if stamp is None and not allow_unstamped:
            raise UnstampedWrite(PARTITION_HEADER, f"missing (and {EPOCH_HEADER})")
        return cls(admitter, stamp)

    @property
    def partition(self) -> str | None:
        return None if self.stamp is None else self.stamp.partition

    @property
    def epoch(self) -> Epoch | None:
        return None if self.stamp is None else self.stamp.epoch

    def _not_held(self) -> None:
        if self._held:  # checked before admitting, so a refused nesting leaves no in-flight count
            raise RuntimeError("CommitGuard is not re-entrant: one commit at a time per guard")

    def _decide(self, result: WriteAdmission) -> None:
        self.last = result
        self._held = bool(result)
        if not result:
            assert self.stamp is not None
            # (an admitter answering some other falsy value is refused all the same)
            raise StaleEpoch(result if isinstance(result, Reject) else FAIL_CLOSED, self.stamp.partition,
                             self.stamp.epoch)

    async def check(self) -> None:
        """Admit now; raise ``StaleEpoch`` if refused (no in-flight accounting)."""
        await self.__aenter__()
        self._done()

    async def __aenter__(self) -> "CommitGuard":
        if self.stamp is None:
            return self
        self._not_held()
        result = self.admitter.admit(self.stamp.partition, self.stamp.epoch)
        if inspect.isawaitable(result):
            result = await result
        self._decide(result)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._done()

    def __enter__(self) -> "CommitGuard":
        if self.stamp is None:
            return self
        self._not_held()
        result = self.admitter.admit(self.stamp.partition, self.stamp.epoch)
        if inspect.isawaitable(result):
            close = getattr(result, "close", None)
            if close is not None:
                close()  # do not leave a never-awaited coroutine behind
            raise TypeError(f"{type(self.admitter).__name__} is async: use 'async with guard:'")
        self._decide(result)
        return self

    def __exit__(self, *exc: object) -> None:
        self._done()

    def _done(self) -> None:
        if self._held:
            self._held = False
            assert self.stamp is not None
            done = getattr(self.admitter, "done", None)
            if done is not None:
                done(self.stamp.partition, self.stamp.epoch)

    def __call__(self, fn: F) -> F:
        """Decorate a commit function so it runs inside this guard."""
        return _wrap(fn, lambda: self)

    def __repr__(self) -> str:
        return f"CommitGuard({self.admitter!r}, {self.stamp!r})"


_current: contextvars.ContextVar[CommitGuard | None] = contextvars.ContextVar("epochgate_commit_guard", default=None)


def current_guard() -> CommitGuard:
    """The guard of the request being handled (set by the gate middlewares).

    Raises ``LookupError`` outside a request the gate middleware handled.
    """
    guard = _current.get()
    if guard is None:
        raise LookupError("no CommitGuard: the request did not pass through an epochgate gate middleware")
    return guard


def commit_point(fn: F) -> F:
    """Decorator: run ``fn`` (sync or async) inside the current request's guard."""
    return _wrap(fn, current_guard)


def _wrap(fn: F, get: Callable[[], CommitGuard]) -> F:
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            async with get():
                return await fn(*args, **kwargs)

        return run_async  # type: ignore[return-value]

    @functools.wraps(fn)
    def run_sync(*args: Any, **kwargs: Any) -> Any:
        with get():
            return fn(*args, **kwargs)

    return run_sync  # type: ignore[return-value]


def request_guard(
    admitter: Any,
    is_write: bool,
    partition: str | bytes | None,
    epoch: str | bytes | None,
    *,
    allow_unstamped: bool = False,
    node: str | None = None,
    placement: str | bytes | None = None,
) -> CommitGuard:
    """The guard for one request, as every gate middleware builds it.

    Raises ``UnstampedWrite`` for a write whose stamp is missing or malformed
    (unless ``allow_unstamped``). A read with a bad stamp gets a no-op guard:
    reads are not gated. When the application configured its ``node`` name, a
    stamped write whose ``placement`` (``X-Placement``) names another node raises
    ``MisdirectedWrite`` here, before the handler runs; without ``node``, or
    without ``X-Placement``, nothing changes.
    """
    try:
        stamp = Stamp.parse(partition, epoch)
    except UnstampedWrite:
        if is_write and not allow_unstamped:
            raise
        stamp = None
    if stamp is None and is_write and not allow_unstamped:
        raise UnstampedWrite(PARTITION_HEADER, f"missing, and so is {EPOCH_HEADER}")
    if node is not None and placement is not None and stamp is not None and is_write:
        if isinstance(placement, bytes):
            placement = placement.decode("utf-8", "replace")
        if placement != node:  # a swapped URL or a wrong port: committing here would misplace the write
            raise MisdirectedWrite(stamp.partition, placement, node)
    return CommitGuard(admitter, stamp)
