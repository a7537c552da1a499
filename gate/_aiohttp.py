"""The gate middleware for aiohttp applications.

aiohttp is imported when the middleware is built, not when ``gate`` is.
"""

from __future__ import annotations

import functools
from typing import Any, Collection

from ._exceptions import MisdirectedWrite, StaleEpoch, UnstampedWrite
from ._guard import EPOCH_HEADER, PARTITION_HEADER, PLACEMENT_HEADER, WRITE_METHODS, _current, request_guard
from ._problem import ProblemDocument, misdirected_problem, problem_document, unstamped_problem



@functools.cache
def guard_key() -> Any:
    """The ``web.RequestKey`` under which the request's ``CommitGuard`` is stored
    (``request[guard_key()]``); handlers normally use ``gate.current_guard()``."""
    from aiohttp import web

    from ._guard import CommitGuard

    return web.RequestKey("epochgate_guard", CommitGuard)


def aiohttp_middleware(
    admitter: Any,
    *,
    allow_unstamped: bool = False,
    write_methods: Collection[str] = WRITE_METHODS,
    retry_after_s: int = 1,
    node: str | None = None,
) -> Any:
    """An aiohttp middleware that gates writes at their commit point.

    For every request it builds a ``CommitGuard`` from ``X-Partition`` and
    ``X-Placement-Epoch`` (``gate.current_guard()`` inside the
    handler; also ``request[gate._aiohttp.guard_key()]``). A write (``write_methods``)
    without a valid stamp is answered ``428`` with a problem naming the header,
    unless ``allow_unstamped=True`` (local development: the guard then admits
    everything). A ``StaleEpoch`` raised by the handler becomes the stale-epoch
    problem (503, ``Retry-After``), which the sidecar retries. With ``node`` (this
    node's name, as in the placement table) a write whose ``X-Placement`` names
    another node is answered ``421`` (``misdirected-write`` problem naming both)
    before the handler runs; the sidecar relays it, never retries it.
    """
    from aiohttp import web

    if node is not None:
        from ._types import node_name

        node = node_name(node, "node")
    methods = frozenset(m.upper() for m in write_methods)
    key = guard_key()

    def respond(doc: ProblemDocument) -> web.Response:
        return web.Response(status=doc.status, body=doc.encode(), headers=dict(doc.headers))

    @web.middleware
    async def epochgate_gate(request: web.Request, handler: Any) -> web.StreamResponse:
        headers = request.headers
        try:
            guard = request_guard(
                admitter,
                request.method in methods,
                headers.get(PARTITION_HEADER),
                headers.get(EPOCH_HEADER),
                allow_unstamped=allow_unstamped,
                node=node,
                placement=None if node is None else headers.get(PLACEMENT_HEADER),
            )
        except UnstampedWrite as exc:
            return respond(unstamped_problem(exc.field, str(exc).split(": ", 1)[-1]))
        except MisdirectedWrite as exc:
            return respond(misdirected_problem(exc.partition, exc.placement, exc.node))
        request[key] = guard
        token = _current.set(guard)
        try:
            response: web.StreamResponse = await handler(request)
            return response
        except StaleEpoch as exc:
            return respond(problem_document(exc.reject, exc.partition, retry_after_s=retry_after_s))
        finally:
            _current.reset(token)

    return epochgate_gate
