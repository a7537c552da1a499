"""The gate interceptor for grpc.aio servers.

The stamp travels as metadata ``x-partition`` and ``x-placement-epoch``. A
``StaleEpoch`` raised by a handler aborts the call with ``ABORTED`` (the code
DESIGN §9 gives a stale epoch); the details carry the stale-epoch problem
document as JSON and the trailing metadata its key fields
(``x-epochgate-reason``, ``x-placement``, ``x-placement-epoch``,
``x-epochgate-phase``, ``retry-after``). A call without a valid stamp is
refused with ``FAILED_PRECONDITION`` naming the missing key, unless its method
is listed in ``read_methods`` or ``allow_unstamped=True``. With ``node`` (this
node's name, as in the placement table) a write whose ``x-placement`` names
another node is refused before the handler runs with ``FAILED_PRECONDITION``
(retrying cannot fix a swapped node URL, and the sidecar relays every status but
the interceptor's ``ABORTED`` as it is): the details carry the
``misdirected-write`` problem as JSON, the trailing metadata
``x-epochgate-type``, ``x-partition``, ``x-placement`` and ``x-epochgate-node``.

grpc is imported when the interceptor is built, not when ``gate`` is.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Collection

from ._exceptions import ConfigError, MisdirectedWrite, StaleEpoch, UnstampedWrite
from ._guard import CommitGuard, _current, request_guard
from ._problem import misdirected_problem, problem_document

PARTITION_KEY = "x-partition"
EPOCH_KEY = "x-placement-epoch"
PLACEMENT_KEY = "x-placement"


def grpc_interceptor(
    admitter: Any,
    *,
    allow_unstamped: bool = False,
    read_methods: Collection[str] = (),
    node: str | None = None,
) -> Any:
    """A ``grpc.aio.ServerInterceptor`` that gates writes at their commit point.

    Every method is a write except the full method names in ``read_methods``
    (e.g. ``"/kv.v1.Store/Get"``) — gRPC has no safe methods to go by. Handlers
    reach the guard with ``gate.current_guard()``; async handlers only (the
    grpc.aio default). ``node``: this node's name; a write stamped for another
    node is refused (module doc).
    """
    if node is not None:
        from ._types import node_name

        node = node_name(node, "node")
    return _interceptor_class()(admitter, allow_unstamped, frozenset(read_methods), node)


@functools.cache
def _interceptor_class() -> type:
    import grpc

    async def abort_stale(context: Any, exc: StaleEpoch) -> None:
        doc = problem_document(exc.reject, exc.partition)
        current = exc.reject.current
        trailing = [
            ("x-epochgate-reason", exc.reject.reason.value),
            ("x-partition", exc.partition),
            ("retry-after", doc.headers["Retry-After"]),
        ]
        if current is not None:
            trailing += [("x-placement", str(current.placement)), (EPOCH_KEY, str(int(current.epoch)))]
        if exc.reject.phase is not None:
            trailing.append(("x-epochgate-phase", exc.reject.phase.value))
        await context.abort(grpc.StatusCode.ABORTED, doc.encode().decode(), trailing_metadata=tuple(trailing))

    def wrap_unary(behavior: Any, guard: CommitGuard) -> Any:
        async def run(request_or_iterator: Any, context: Any) -> Any:
            token = _current.set(guard)
            try:
                return await behavior(request_or_iterator, context)
            except StaleEpoch as exc:
                await abort_stale(context, exc)
            finally:
                _current.reset(token)

        return run

    def wrap_stream(behavior: Any, guard: CommitGuard) -> Any:
        if not inspect.isasyncgenfunction(behavior):
            return wrap_unary(behavior, guard)  # a coroutine writing with context.write

        async def run(request_or_iterator: Any, context: Any) -> Any:
            token = _current.set(guard)
            try:
                async for item in behavior(request_or_iterator, context):
                    yield item
            except StaleEpoch as exc:
                await abort_stale(context, exc)
            finally:
                _current.reset(token)

        return run

    class GateInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc is untyped
        """Builds each call's ``CommitGuard`` from its metadata (see module doc)."""

        def __init__(self, admitter: Any, allow_unstamped: bool, read_methods: frozenset[str],
                     node: str | None = None) -> None:
            if not callable(getattr(admitter, "admit", None)):
                raise ConfigError("admitter", f"needs admit(partition, epoch), got {type(admitter).__name__}")
            self.admitter = admitter
            self.allow_unstamped = allow_unstamped
            self.read_methods = read_methods
            self.node = node

        async def intercept_service(self, continuation: Any, details: Any) -> Any:
            handler = await continuation(details)
            if handler is None:
                return None
            partition = epoch = placement = None
            for key, value in details.invocation_metadata or ():
                if key == PARTITION_KEY:
                    partition = value
                elif key == EPOCH_KEY:
                    epoch = value
                elif key == PLACEMENT_KEY:
                    placement = value
            try:
                guard = request_guard(
                    self.admitter,
                    details.method not in self.read_methods,
                    partition,
                    epoch,
                    allow_unstamped=self.allow_unstamped,
                    node=self.node,
                    placement=None if self.node is None else placement,
                )
            except UnstampedWrite as exc:
                return _refusal(handler, grpc.StatusCode.FAILED_PRECONDITION, f"{exc.field.lower()} metadata: {str(exc).split(': ', 1)[-1]}")
            except MisdirectedWrite as exc:
                doc = misdirected_problem(exc.partition, exc.placement, exc.node)
                return _refusal(handler, grpc.StatusCode.FAILED_PRECONDITION, doc.encode().decode(), (
                    ("x-epochgate-type", str(doc.body["type"])), ("x-partition", exc.partition),
                    (PLACEMENT_KEY, exc.placement), ("x-epochgate-node", exc.node)))
            if handler.unary_unary:
                return handler._replace(unary_unary=wrap_unary(handler.unary_unary, guard))
            if handler.unary_stream:
                return handler._replace(unary_stream=wrap_stream(handler.unary_stream, guard))
            if handler.stream_unary:
                return handler._replace(stream_unary=wrap_unary(handler.stream_unary, guard))
            return handler._replace(stream_stream=wrap_stream(handler.stream_stream, guard))

    def _refusal(handler: Any, code: Any, message: str, trailing: tuple[tuple[str, str], ...] = ()) -> Any:
        async def refuse(request_or_iterator: Any, context: Any) -> Any:
            await context.abort(code, message, trailing_metadata=trailing)

        if handler.unary_unary:
            return handler._replace(unary_unary=refuse)
        if handler.unary_stream:
            return handler._replace(unary_stream=refuse)
        if handler.stream_unary:
            return handler._replace(stream_unary=refuse)
        return handler._replace(stream_stream=refuse)

    return GateInterceptor
