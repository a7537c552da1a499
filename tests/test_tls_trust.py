"""TLS trust and rotation (issue 26 #10, #11), with real handshakes against a sidecar.

* A refused certificate reload (the new certificate written, its key not yet: a mismatch
  mid-rotation) keeps the old certificate AND key serving; before, the new certificate was
  installed with the old key and every new handshake failed while the log said it kept the old.
* ``--upstream-ca`` replaces the system's CAs (as Envoy's ``trusted_ca``): a node certificate
  from a CA the system trusts — a "public" CA, put in the system default here through
  ``SSL_CERT_FILE`` — but not in the bundle is refused; ``--upstream-ca-add-system`` opts in.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
import ssl

import httpx
import pytest

from gate import ConfigError
from sidecar._config import parse_args
from tests._h2_util import H2Upstream, live_copy, make_ca, make_cert
from tests._sidecar_util import config, running_sidecar, write_placement

KEY = {"x-partition-key": "t1"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca, public = make_ca(d, "private-ca"), make_ca(d, "public-ca")
    return {"dir": d, "ca": ca, "public": public, "server": make_cert(d, ca, "server"),
            "rotated": make_cert(d, ca, "rotated"), "public_node": make_cert(d, public, "public-node")}


async def peer_cert(port: int, ca, server_hostname: str) -> bytes:
    """One real handshake verified against ``ca``: the certificate the listener served."""
    ctx = ssl.create_default_context(cafile=str(ca))
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=server_hostname)
    try:
        return writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()


def der(pem_path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(Path(pem_path).read_text())


async def test_refused_reload_keeps_the_old_certificate_and_key(pki, tmp_path):
    up = await H2Upstream("a").start()
    try:
        p = write_placement(tmp_path / "p.toml", {"a": up.url}, {"t1": "a"})
        cert, key = live_copy(tmp_path, pki["server"])
        async with running_sidecar(config(p, tls_cert=str(cert), tls_key=str(key))) as sc:
            old = der(pki["server"][0])
            assert await peer_cert(sc.port, pki["ca"][0], "localhost") == old
            shutil.copy(pki["rotated"][0], cert)       # mid-rotation: the new certificate, the old key
            assert sc.ctx.tls.reload() is False        # refused (what SIGHUP runs)
            for name in ("localhost", "127.0.0.1"):    # with SNI, and without (an IP address)
                assert await peer_cert(sc.port, pki["ca"][0], name) == old
            async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(pki["ca"][0]))) as c:
                assert (await c.get(f"https://127.0.0.1:{sc.port}/echo", headers=KEY)).status_code == 200
            shutil.copy(pki["rotated"][1], key)        # the rotation completes
            assert sc.ctx.tls.reload() is True
            for name in ("localhost", "127.0.0.1"):
                assert await peer_cert(sc.port, pki["ca"][0], name) == der(pki["rotated"][0])
    finally:
        await up.stop()


def h2client() -> httpx.AsyncClient:
    return httpx.AsyncClient(http1=False, http2=True, timeout=20)


def node_ctx(pair) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*map(str, pair))
    ctx.set_alpn_protocols(["h2"])
    return ctx


async def test_upstream_ca_replaces_the_system_store(pki, tmp_path, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(pki["public"][0]))   # the system trusts the "public" CA
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    up = await H2Upstream("a", node_ctx(pki["public_node"])).start()
    try:
        p = write_placement(tmp_path / "p.toml", {"a": up.url}, {"t1": "a"})
        async with running_sidecar(config(p)) as sc, h2client() as c:   # no bundle: the system's
            r = await c.put(f"http://127.0.0.1:{sc.port}/echo", content=b"x", headers=KEY)
            assert r.status_code == 200, r.text
        async with running_sidecar(config(p, upstream_ca=str(pki["ca"][0]))) as sc, h2client() as c:
            r = await c.put(f"http://127.0.0.1:{sc.port}/echo", content=b"x", headers=KEY)
            assert r.status_code == 502 and "certificate verify failed" in r.json()["detail"], r.text
        async with running_sidecar(config(p, upstream_ca=str(pki["ca"][0]), upstream_ca_add_system=True)) as sc, \
                h2client() as c:
            assert (await c.put(f"http://127.0.0.1:{sc.port}/echo", content=b"x", headers=KEY)).status_code == 200
        assert len(up.seen) == 2
    finally:
        await up.stop()


def test_upstream_ca_add_system_flag_env_and_pairing(pki, tmp_path):
    p = write_placement(tmp_path / "p.toml", {"a": "http://127.0.0.1:1"}, {"t1": "a"})
    ca = str(pki["ca"][0])
    base = ["--placement", str(p), "--upstream-ca", ca]
    assert parse_args(base, {}).upstream_ca_add_system is False
    assert parse_args(base + ["--upstream-ca-add-system"], {}).upstream_ca_add_system is True
    assert parse_args(base, {"EPOCHGATE_UPSTREAM_CA_ADD_SYSTEM": "1"}).upstream_ca_add_system is True
    with pytest.raises(ConfigError, match="upstream_ca_add_system.*boolean"):
        parse_args(base, {"EPOCHGATE_UPSTREAM_CA_ADD_SYSTEM": "maybe"})
    with pytest.raises(ConfigError, match="upstream_ca_add_system.*goes with --upstream-ca"):
        parse_args(["--placement", str(p), "--upstream-ca-add-system"], {})
