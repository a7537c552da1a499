"""The gate middleware for ASGI applications (plain ASGI; Starlette, FastAPI).

Pure ASGI: it imports no framework. Add it with
``app.add_middleware(AsgiGateMiddleware, admitter=client)`` under Starlette/FastAPI,
or wrap any ASGI app: ``AsgiGateMiddleware(app, admitter=client)``.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Collection, MutableMapping

from ._exceptions import ConfigError, MisdirectedWrite, StaleEpoch, UnstampedWrite
from ._guard import WRITE_METHODS, _current, request_guard
from ._problem import ProblemDocument, misdirected_problem, problem_document, unstamped_problem

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

GUARD_SCOPE_KEY = "epochgate.guard"
"""``scope["epochgate.guard"]`` is the request's ``CommitGuard``."""

_PARTITION = b"x-partition"
_EPOCH = b"x-placement-epoch"
_PLACEMENT = b"x-placement"


class AsgiGateMiddleware:
    """ASGI middleware that gates writes at their commit point.

    Per HTTP request it builds a ``CommitGuard`` from the stamped headers
    (``scope["epochgate.guard"]``; ``gate.current_guard()`` in the endpoint). A
    write without a valid stamp gets a ``428`` problem naming the header unless
    ``allow_unstamped=True``. A ``StaleEpoch`` from the app becomes the
    stale-epoch problem (503, ``Retry-After``) — provided the app has not
    started its response yet (it cannot be unsent; the guard belongs before the
    response anyway). With ``node`` (this node's name, as in the placement
    table) a write whose ``X-Placement`` names another node is answered ``421``
    (``misdirected-write``) before the app runs, as the aiohttp middleware does.
    Other scope types (websocket, lifespan) pass through.
    """

    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        admitter: Any = None,
        *,
        allow_unstamped: bool = False,
        write_methods: Collection[str] = WRITE_METHODS,
        retry_after_s: int = 1,
        node: str | None = None,
    ) -> None:
        if admitter is None or not callable(getattr(admitter, "admit", None)):
            raise ConfigError("admitter", f"needs admit(partition, epoch), got {admitter!r}")
        self.app = app
        self.admitter = admitter
        self.allow_unstamped = allow_unstamped
        self.write_methods = frozenset(m.upper() for m in write_methods)
        self.retry_after_s = retry_after_s
        if node is not None:
            from ._types import node_name

            node = node_name(node, "node")
        self.node = node

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        partition = epoch = placement = None
        for name, value in scope.get("headers", ()):
            if name == _PARTITION:
                partition = value
            elif name == _EPOCH:
                epoch = value
            elif name == _PLACEMENT:
                placement = value
        try:
            guard = request_guard(
                self.admitter,
                scope["method"] in self.write_methods,
                partition,
                epoch,
                allow_unstamped=self.allow_unstamped,
                node=self.node,
                placement=None if self.node is None else placement,
            )
        except UnstampedWrite as exc:
            await _send_problem(send, unstamped_problem(exc.field, str(exc).split(": ", 1)[-1]))
            return
        except MisdirectedWrite as exc:
            await _send_problem(send, misdirected_problem(exc.partition, exc.placement, exc.node))
            return
        scope[GUARD_SCOPE_KEY] = guard
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        token = _current.set(guard)
        try:
            await self.app(scope, receive, tracking_send)
        except StaleEpoch as exc:
            if started:
                raise
            await _send_problem(send, problem_document(exc.reject, exc.partition, retry_after_s=self.retry_after_s))
        finally:
            _current.reset(token)


async def _send_problem(send: Send, doc: ProblemDocument) -> None:
    await send({"type": "http.response.start", "status": doc.status, "headers": doc.header_list()})
    await send({"type": "http.response.body", "body": doc.encode()})
