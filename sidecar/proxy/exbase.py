"""What the client connection (``conn.ClientConn``) reaches on its HTTP/1.1 exchange: the
request head, the keep-alive flag, the batched upstream writes, and the calls its parser
callbacks make (``make``, ``dispatch``, ``client_body``, ``client_body_end``, ``flush_up``).
``exchange.Request`` is the one implementation (through ``response.ResponseMixin``).

A type of its own so that the compiled ``conn`` can type ``current`` and ``parsing`` with it:
``conn.pxd`` cannot cimport the exchange (``response.pxd`` cimports ``conn.pxd``: a cycle),
and this base cimports only ``exfields`` and ``reqhead``. Compiled, those calls are C calls
and the fields C reads, not Python method and attribute look-ups (docs/compiled-build.md,
"Stop 37: HTTP/1.1 request half").
"""

from __future__ import annotations

from typing import Any

from .exfields import ExchangeFields


class ClientExchange(ExchangeFields):
    # head: the parsed request head (reqhead.ReqHead); keep_alive: this connection carries
    # another request after this one; uout: batched writes to the upstream (one client read)
    __slots__ = ("head", "keep_alive", "uout")

    def make(self, ctx: Any, conn: Any) -> "ClientExchange":
        """A new exchange of this kind for the connection's next request, called on the exchange
        module's template (``exchange.MAKER``) by ``conn.on_message_begin``: compiled, a C call to
        ``exchange.new_request`` (docs/compiled-build.md "Object makers")."""
        raise NotImplementedError

    def dispatch(self) -> None:
        """The head is parsed and this is the connection's current request: route it."""
        raise NotImplementedError

    def client_body(self, data: bytes) -> None:
        """Body bytes from the client."""
        raise NotImplementedError

    def client_body_end(self) -> None:
        """The client's body ended."""
        raise NotImplementedError

    def flush_up(self) -> None:
        """Send what was batched for the upstream."""
        raise NotImplementedError
