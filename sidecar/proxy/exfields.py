"""The fields every proxied exchange has that the code shared by both protocols reads and
writes: an HTTP/1.1 request (``exchange.Request``, through ``response.ResponseMixin``) and an
HTTP/2 stream (``h2.stream.H2Exchange``, through ``h2.response.H2ResponseMixin``) both derive
from ``ExchangeFields``. (Their ``ctx`` and ``node`` stay typed in each: a base type that cimported
the context would make the compiled modules' imports a cycle, see exfields.pxd.)

The shared code is ``resolve`` (partition → phase, epoch, placement, node) and the body budget
(``limits``: ``charge``/``uncharge``/``keep_for_replay``). With one base type, the compiled
build reaches these fields as C struct members instead of Python attribute look-ups on an
untyped object (~150 instructions each; see docs/compiled-build.md, "HTTP/1.1 cuts, stop 36").
What each field means is said where each exchange sets it (``Request.__init__``,
``H2Exchange.__init__``).
"""

from __future__ import annotations


class ExchangeFields:
    __slots__ = ("partition", "phase", "epoch", "placement", "is_write", "t_res", "charged", "replay",
                 "replay_len")
