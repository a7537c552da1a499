"""TLS through the sidecar with a throw-away CA made in the test: verified
``https://`` nodes (h2 chosen by ALPN, or http/1.1), a wrong CA refused with a
502 problem naming the reason, mTLS to the node accepted and refused, and TLS
on the listener with ALPN h2 / http/1.1 (gRPC over TLS included)."""

from __future__ import annotations

import json
import ssl

import grpc
import httpx
import pytest
from aiohttp import web

from tests._h2_util import H2Upstream, live_copy, make_ca, make_cert
from tests._sidecar_util import Upstream, config, running_sidecar, write_placement

KEY = {"x-partition-key": "t1"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca = make_ca(d, "ca")
    other = make_ca(d, "other-ca")
    return {"dir": d, "ca": ca, "other": other, "server": make_cert(d, ca, "server"),
            "client": make_cert(d, ca, "client")}


def server_ctx(pki, alpn=("h2",), require_client=False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*map(str, pki["server"]))
    ctx.set_alpn_protocols(list(alpn))
    if require_client:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(str(pki["ca"][0]))
    return ctx


def h2client(**kw) -> httpx.AsyncClient:
    return httpx.AsyncClient(http1=False, http2=True, timeout=20, **kw)


async def test_verified_h2_upstream_by_alpn_and_wrong_ca_refused(pki, tmp_path):
    up = await H2Upstream("a", server_ctx(pki)).start()
    try:
        p = write_placement(tmp_path / "p.toml", {"a": up.url}, {"t1": "a"})
        async with running_sidecar(config(p, upstream_ca=str(pki["ca"][0]))) as sc, h2client() as c:
            r = await c.put(f"http://127.0.0.1:{sc.port}/echo", content=b"x" * 70000, headers=KEY)
            assert r.status_code == 200 and r.json()["len"] == 70000
            assert up.seen[-1]["headers"][":scheme"] == "https"
            assert sc.ctx.h2pool.alpn_h1 == set()  # h2 negotiated by ALPN
        async with running_sidecar(config(p, upstream_ca=str(pki["other"][0]))) as sc:
            async with h2client() as c:
                r = await c.put(f"http://127.0.0.1:{sc.port}/echo", content=b"x", headers=KEY)
            assert r.status_code == 502
            doc = r.json()
            assert doc["type"].endswith("upstream-tls") and "certificate verify failed" in doc["detail"]
            async with httpx.AsyncClient() as c1:  # the HTTP/1.1 path names it too
                r = await c1.put(f"http://127.0.0.1:{sc.port}/echo", content=b"x", headers=KEY)
            assert r.status_code == 502 and "CERTIFICATE_VERIFY_FAILED" in r.json()["detail"]
        assert len(up.seen) == 1
    finally:
        await up.stop()


async def test_mtls_to_the_node_accepted_and_refused(pki, tmp_path):
    up = await H2Upstream("a", server_ctx(pki, require_client=True)).start()
    try:
        p = write_placement(tmp_path / "p.toml", {"a": up.url}, {"t1": "a"})
        cert, key = map(str, pki["client"])
        async with running_sidecar(config(p, upstream_ca=str(pki["ca"][0]), upstream_cert=cert,
                                          upstream_key=key)) as sc, h2client() as c:
            r = await c.put(f"http://127.0.0.1:{sc.port}/echo", content=b"m", headers=KEY)
            assert r.status_code == 200
        async with running_sidecar(config(p, upstream_ca=str(pki["ca"][0]))) as sc, h2client() as c:
            r = await c.put(f"http://127.0.0.1:{sc.port}/echo", content=b"m", headers=KEY)
            assert r.status_code == 502
            detail = r.json()["detail"]
            assert "certificate required" in detail.lower() or "client certificate refused" in detail, detail
        assert len(up.seen) == 1
    finally:
        await up.stop()


class TlsUpstream(Upstream):
    """The HTTP/1.1 test upstream, over TLS (ALPN http/1.1 only)."""

    def __init__(self, name: str, ctx: ssl.SSLContext) -> None:
        super().__init__(name)
        self.ctx = ctx

    async def start(self) -> "TlsUpstream":
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.echo)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=self.ctx)
        await site.start()
        self.url = f"https://127.0.0.1:{self.runner.addresses[0][1]}"
        return self


async def test_https_node_choosing_http11_serves_both_client_kinds(pki, tmp_path):
    up = await TlsUpstream("a", server_ctx(pki, alpn=("http/1.1",))).start()
    try:
        p = write_placement(tmp_path / "p.toml", {"a": up.url}, {"t1": "a"})
        async with running_sidecar(config(p, upstream_ca=str(pki["ca"][0]))) as sc:
            async with h2client() as c:
                r = await c.put(f"http://127.0.0.1:{sc.port}/kv/1", content=b"v", headers=KEY)
                assert r.status_code == 200 and r.http_version == "HTTP/2"
                assert sc.ctx.h2pool.alpn_h1 == {sc.ctx.nodes["a"].key}
                r = await c.put(f"http://127.0.0.1:{sc.port}/kv/2", content=b"v", headers=KEY)
                assert r.status_code == 200
            async with httpx.AsyncClient() as c1:
                r = await c1.put(f"http://127.0.0.1:{sc.port}/kv/3", content=b"v", headers=KEY)
                assert r.status_code == 200 and r.http_version == "HTTP/1.1"
        assert [s["path"] for s in up.seen] == ["/kv/1", "/kv/2", "/kv/3"]
        assert [{k.lower(): v for k, v in s["headers"].items()}["x-placement"] for s in up.seen] == ["a"] * 3
    finally:
        await up.stop()


async def test_tls_listener_alpn_h2_and_http11_and_grpc(pki, tmp_path):
    up = await H2Upstream("a").start()
    try:
        p = write_placement(tmp_path / "p.toml", {"a": up.url}, {"t1": "a"})
        cert, key = map(str, pki["server"])
        ca = str(pki["ca"][0])
        async with running_sidecar(config(p, tls_cert=cert, tls_key=key)) as sc:
            async with httpx.AsyncClient(http2=True, verify=ssl.create_default_context(cafile=ca)) as c:
                r = await c.put(f"https://127.0.0.1:{sc.port}/echo", content=b"t", headers=KEY)
                assert r.status_code == 200 and r.http_version == "HTTP/2"
                assert up.seen[-1]["headers"]["x-forwarded-proto"] == "https"
            async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=ca)) as c:
                # ALPN http/1.1 on the same listener, carried to the h2c node as a stream
                r = await c.get(f"https://127.0.0.1:{sc.port}/echo", headers=KEY)
                assert r.status_code == 200 and r.http_version == "HTTP/1.1"
            creds = grpc.ssl_channel_credentials(root_certificates=pki["ca"][0].read_bytes())
            async with grpc.aio.secure_channel(f"127.0.0.1:{sc.port}", creds,
                                               options=[("grpc.ssl_target_name_override", "localhost")]) as ch:
                # the h2 test node is no gRPC server: its JSON reply is the "message" bytes here
                call = ch.unary_unary("/echo")
                with pytest.raises(grpc.aio.AioRpcError):
                    await call(b"", metadata=(("x-partition-key", "t1"),), timeout=5)
            assert up.seen[-1]["path"] == "/echo" and up.seen[-1]["headers"]["content-type"] == "application/grpc"
    finally:
        await up.stop()


def test_tls_flags_are_checked_at_start(tmp_path):
    from gate import ConfigError

    p = write_placement(tmp_path / "p.toml", {"a": "https://127.0.0.1:1"}, {"t1": "a"})
    with pytest.raises(ConfigError, match="upstream_cert"):
        config(p, upstream_cert="/x")
    with pytest.raises(ConfigError, match="tls_cert.*cannot read"):
        config(p, tls_cert="/nonexistent", tls_key="/nonexistent")
    assert json.loads(config(p).to_json())["tls_cert"] is None


async def test_sighup_rereads_the_listener_certificate(pki, tmp_path):
    import shutil

    up = await H2Upstream("a").start()
    try:
        p = write_placement(tmp_path / "p.toml", {"a": up.url}, {"t1": "a"})
        cert, key = live_copy(tmp_path, pki["server"])
        new = make_cert(pki["dir"], pki["other"], "server2")  # signed by the other CA
        async with running_sidecar(config(p, tls_cert=str(cert), tls_key=str(key))) as sc:
            def client_for(ca):
                return httpx.AsyncClient(http2=True, verify=ssl.create_default_context(cafile=str(ca)))

            async with client_for(pki["ca"][0]) as c:
                assert (await c.get(f"https://127.0.0.1:{sc.port}/echo", headers=KEY)).status_code == 200
            shutil.copy(new[0], cert)
            shutil.copy(new[1], key)
            sc.reload()  # what SIGHUP runs
            async with client_for(pki["other"][0]) as c:
                assert (await c.get(f"https://127.0.0.1:{sc.port}/echo", headers=KEY)).status_code == 200
            async with client_for(pki["ca"][0]) as c:
                with pytest.raises(httpx.ConnectError):
                    await c.get(f"https://127.0.0.1:{sc.port}/echo", headers=KEY)
    finally:
        await up.stop()
