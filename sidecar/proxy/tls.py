"""TLS for the data path (DESIGN §10): ``https://`` nodes and an optional TLS listener.

Upstream: one client context per ALPN offer, verifying the node's certificate
against ``--upstream-ca`` — which *replaces* the system's store, as Envoy's
``trusted_ca`` does, so a node certificate from any other CA (a public one
included) is refused; ``--upstream-ca-add-system`` trusts the system's CAs as
well; without ``--upstream-ca``, the system's store — with SNI and host
name checking, presenting ``--upstream-cert``/``--upstream-key`` when given
(mTLS). HTTP/1.1 clients reach ``https://`` nodes offering only ``http/1.1``;
HTTP/2 clients offer ``h2, http/1.1`` and the node's choice decides the framing
(remembered per node, see ``_h2_upstream``).

Listener: ``--tls-cert``/``--tls-key`` with ALPN ``h2, http/1.1``; an ``h2``
choice goes straight to the HTTP/2 protocol, anything else is HTTP/1.1 (and the
HTTP/2 preface is still recognised on it).

``reload()`` (SIGHUP) re-reads the files into *new* contexts and swaps them in only
when every one loaded: new connections use them, open ones keep theirs. A file
that no longer loads (a certificate and key that do not match mid-rotation) is
logged and the old certificate *and* key stay in use. The listener keeps the
context asyncio was given; its SNI callback (called for every handshake, with or
without SNI) moves each new connection onto the current one.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

from gate import ConfigError

ALPN_BOTH = ["h2", "http/1.1"]


def check_tls_config(cfg: Any) -> None:
    """Pairing and readability of the TLS files; errors name the field."""
    if (cfg.upstream_key is None) != (cfg.upstream_cert is None):
        raise ConfigError("upstream_cert", "--upstream-cert and --upstream-key go together")
    if (cfg.tls_key is None) != (cfg.tls_cert is None):
        raise ConfigError("tls_cert", "--tls-cert and --tls-key go together")
    if getattr(cfg, "upstream_ca_add_system", False) and cfg.upstream_ca is None:
        raise ConfigError("upstream_ca_add_system", "--upstream-ca-add-system goes with --upstream-ca "
                                                    "(without it the system's CAs are used anyway)")
    for name in ("upstream_ca", "upstream_cert", "upstream_key", "tls_cert", "tls_key"):
        path = getattr(cfg, name)
        if path is None:
            continue
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise ConfigError(name, f"cannot read {path!r}: {exc.strerror}") from exc


def client_context(ca: str | None, cert: str | None, key: str | None, alpn: list[str],
                   add_system: bool = False) -> ssl.SSLContext:
    """Verifies nodes against ``ca`` only (``add_system``: and the system's CAs), or the
    system's CAs when no ``ca`` is given; host names checked."""
    if ca is None:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    else:   # create_default_context(cafile=) would load the system's CAs as well
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)   # CERT_REQUIRED, check_hostname, secure defaults
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_verify_locations(cafile=ca)
        if add_system:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(alpn)
    return ctx


def server_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(ALPN_BOTH)
    return ctx


class Tls:
    """The process's TLS contexts (built at start; ``reload`` on SIGHUP)."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self._h1: ssl.SSLContext | None = None
        self._h2: ssl.SSLContext | None = None
        self.server: ssl.SSLContext | None = None   # the listener's (fixed: asyncio keeps it)
        self._serving: ssl.SSLContext | None = None  # the current certificate and key
        try:
            if cfg.tls_cert:
                self.server = self._serving = server_context(cfg.tls_cert, cfg.tls_key)
                self.server.sni_callback = self._pick
            if cfg.upstream_ca or cfg.upstream_cert:  # (files checked at start; the system store lazily:
                self._h1, self._h2 = self._clients()  # it costs tens of ms and most sidecars never use it)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConfigError("tls", f"cannot load TLS files: {exc}") from exc

    def _clients(self) -> tuple[ssl.SSLContext, ssl.SSLContext]:
        c = self.cfg
        add = bool(getattr(c, "upstream_ca_add_system", False))
        return (client_context(c.upstream_ca, c.upstream_cert, c.upstream_key, ["http/1.1"], add),
                client_context(c.upstream_ca, c.upstream_cert, c.upstream_key, ALPN_BOTH, add))

    def _pick(self, conn: ssl.SSLObject, server_name: str | None, ctx: ssl.SSLContext) -> None:
        """The listener's SNI callback: serve the current certificate and key."""
        if self._serving is not None and ctx is not self._serving:
            conn.context = self._serving

    @property
    def upstream_h1(self) -> ssl.SSLContext:
        if self._h1 is None:
            self._h1, self._h2 = self._clients()
        return self._h1

    @property
    def upstream_h2(self) -> ssl.SSLContext:
        if self._h2 is None:
            self._h1, self._h2 = self._clients()
        return self._h2

    def reload(self) -> bool:
        """Re-read the certificate files into fresh contexts; swap them in only if all loaded.
        Never loads into a live context: ``load_cert_chain`` installs the certificate before it
        finds that the key does not match, which left the new certificate with the old key."""
        c = self.cfg
        try:
            h1, h2 = self._clients()
            serving = server_context(c.tls_cert, c.tls_key) if self.server is not None else None
        except (OSError, ssl.SSLError, ValueError) as exc:
            logging.getLogger("epochgate.sidecar").error("TLS reload refused; keeping the current certificates: %s",
                                                         exc)
            return False
        self._h1, self._h2 = h1, h2
        if serving is not None:
            self._serving = serving
        return True


def tls_reason(exc: BaseException) -> str:
    """A TLS failure as one line for a problem document."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    return str(getattr(exc, "strerror", None) or exc)
