"""The mover hooks belong to the controller's trust domain (DESIGN §6): the sidecar
never forwards ``/_epochgate/`` from its data listener, however it is spelled, while
every other path (including ones that merely contain the word) still passes."""

from __future__ import annotations

import aiohttp
import pytest

from sidecar.proxy.hookpath import is_hook_path
from tests._sidecar_util import Upstream, config, raw_request, running_sidecar, write_placement

KEY = {"X-Partition-Key": "t1"}
SPELLINGS = [
    "/_epochgate/import?partition=t1", "/_epochgate/export?partition=t1", "/_epochgate/delta?partition=t1&since=0",
    "/%5Fepochgate/import?partition=t1", "/%5fepochgate/import", "/%255Fepochgate/import", "/kv/../_epochgate/import",
    "//_epochgate/import", "/./_epochgate/import", "/_EPOCHGATE/import", "/_epochgate",
]


@pytest.mark.parametrize("path", SPELLINGS)
def test_hook_spellings_are_recognised(path):
    assert is_hook_path(path.encode())


@pytest.mark.parametrize("path", ["/kv/x", "/kv/_epochgate", "/kv/epochgate/x", "/kv/a%20b", "/_epochgatex/y"])
def test_other_paths_are_not(path):
    assert not is_hook_path(path.encode())


@pytest.fixture
async def upstream():
    up = await Upstream("a").start()
    yield up
    await up.stop()


async def test_sidecar_refuses_the_hook_prefix_and_forwards_the_rest(upstream, tmp_path):
    p = write_placement(tmp_path / "p.toml", {"a": upstream.url}, {"t1": "a"})
    async with running_sidecar(config(p)) as sc:
        base = f"http://127.0.0.1:{sc.port}"
        async with aiohttp.ClientSession() as http:
            for path in SPELLINGS[:3]:
                for method in ("GET", "POST"):
                    async with http.request(method, base + path, headers=KEY, data=b"{}") as r:
                        body = await r.json(content_type=None)
                        assert r.status == 404 and "_epochgate" in body["detail"], (path, r.status)
            async with http.put(base + "/kv/x", headers=KEY, data=b"v") as r:
                assert r.status == 200
        # spellings aiohttp would normalise away, sent raw
        for path in SPELLINGS[3:]:
            out = await raw_request(sc.port, f"POST {path} HTTP/1.1\r\nHost: x\r\nX-Partition-Key: t1\r\n"
                                             "Content-Length: 2\r\n\r\n{}".encode())
            assert out.startswith(b"HTTP/1.1 404"), (path, out[:80])
        out = await raw_request(sc.port, b"POST http://x/_epochgate/import HTTP/1.1\r\nHost: x\r\n"
                                         b"X-Partition-Key: t1\r\nContent-Length: 0\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 404") or out.startswith(b"HTTP/1.1 400"), out[:80]
    assert not [s for s in upstream.seen if "epochgate" in s["path"].lower()]
