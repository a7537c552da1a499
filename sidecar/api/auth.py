"""Who may call the control API: the bearer-token interceptor and the
loopback check (DESIGN §9: loopback by default, a token when configured)."""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any, AsyncIterator

import grpc

from gate import ConfigError


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuse every call that lacks ``authorization: Bearer <token>``."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        for key, value in details.invocation_metadata or ():
            if key == "authorization":
                got = value.encode() if isinstance(value, str) else value
                if hmac.compare_digest(got, self._expected):
                    return handler
                break
        return _refusal(handler)


def _refusal(handler: Any) -> Any:
    if handler is None:
        return None

    async def deny_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

    async def deny_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
        yield  # pragma: no cover - makes this an async generator

    kw = dict(request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(deny_stream, **kw)
    return grpc.unary_unary_rpc_method_handler(deny_unary, **kw)


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_hostport(addr: str, field: str = "control") -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT``) → (host, port); ``ConfigError`` naming ``field``."""
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(field, f"expected HOST:PORT, got {addr!r}")
    return host, int(port)
