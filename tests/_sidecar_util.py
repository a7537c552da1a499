"""Helpers for the sidecar tests: a real upstream aiohttp server and an in-process sidecar."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from sidecar._config import SidecarConfig
from sidecar._sidecar import Sidecar

ROOT = Path(__file__).resolve().parent.parent


class Upstream:
    """A real HTTP server with the handlers the tests need; records what it saw."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: list[dict[str, Any]] = []
        self.stale_left = 0          # answer this many writes with the app's stale-epoch problem
        self.release = asyncio.Event()
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def echo(self, r: web.Request) -> web.StreamResponse:
        h = hashlib.sha256()
        n = 0
        async for chunk in r.content.iter_chunked(1 << 16):
            h.update(chunk)
            n += len(chunk)
        rec = {"node": self.name, "method": r.method, "path": r.path_qs, "headers": dict(r.headers), "len": n,
               "sha": h.hexdigest()}
        if r.method not in ("GET", "HEAD", "OPTIONS") and self.stale_left > 0:
            self.stale_left -= 1
            rec["stale"] = True
            self.seen.append(rec)
            body = {"type": "urn:epochgate:problem:stale-epoch", "title": "stale", "status": 503,
                    "partition": r.headers.get("X-Partition"), "reason": "stale_epoch"}
            return web.Response(status=503, body=json.dumps(body), content_type="application/problem+json",
                                headers={"Retry-After": "1"})
        self.seen.append(rec)
        status = int(r.query.get("status", "200"))
        if status in (204, 304):
            return web.Response(status=status)
        return web.json_response(rec, status=status, headers={"X-Custom": "v", "Connection": "X-Hop",
                                                               "X-Hop": "secret"})

    async def big(self, r: web.Request) -> web.StreamResponse:
        size = int(r.query["size"])
        resp = web.StreamResponse()
        if r.query.get("chunked") != "1":
            resp.content_length = size
        else:
            resp.enable_chunked_encoding()
        await resp.prepare(r)
        block = b"x" * 65536
        left = size
        while left > 0:
            await resp.write(block[: min(left, len(block))])
            left -= len(block)
        await resp.write_eof()
        return resp

    async def slow(self, r: web.Request) -> web.StreamResponse:
        await asyncio.sleep(float(r.query.get("s", "5")))
        return web.Response(text="late")

    async def wait(self, r: web.Request) -> web.StreamResponse:
        await r.read()
        self.seen.append({"node": self.name, "method": r.method, "path": r.path_qs, "headers": dict(r.headers)})
        await self.release.wait()
        return web.Response(text="released")

    async def ws(self, r: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(r)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str("echo:" + msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        return ws

    async def start(self) -> "Upstream":
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/big", self.big)
        app.router.add_route("*", "/slow", self.slow)
        app.router.add_route("*", "/wait", self.wait)
        app.router.add_get("/ws", self.ws)
        app.router.add_route("*", "/{tail:.*}", self.echo)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        self.release.set()
        if self.runner is not None:
            await self.runner.cleanup()


def write_placement(path: Path, nodes: dict[str, str], partitions: dict[str, str]) -> Path:
    lines = ["[nodes]"] + [f'{k} = "{v}"' for k, v in nodes.items()]
    lines += ["", "[partitions]"] + [f'"{k}" = "{v}"' for k, v in partitions.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def config(placement: Path, **kw: Any) -> SidecarConfig:
    base = dict(placement=str(placement), listen="127.0.0.1:0", admin="127.0.0.1:0", control="127.0.0.1:0",
                access_log=False, drain_seconds=2.0)
    base.update(kw)
    return SidecarConfig(**base)


class ManualClock:
    """A monotonic clock the test moves by hand (``clock.t += 5``)."""

    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def consul_config(consul_url: str, prefix: str, **kw: Any) -> SidecarConfig:
    """A sidecar on a Consul store under ``prefix``: loopback ports picked by the OS, a 3 s lease,
    Consul's minimum session TTL (10 s), no holds (a refusal is seen at once)."""
    base = dict(consul=consul_url, prefix=prefix, listen="127.0.0.1:0", admin="127.0.0.1:0", control="127.0.0.1:0",
                lease_seconds=3.0, session_ttl=10, access_log=False, drain_seconds=1, hold_max=0)
    base.update(kw)
    return SidecarConfig(**base)


@contextlib.asynccontextmanager
async def running_sidecar(cfg: SidecarConfig) -> AsyncIterator[Sidecar]:
    sc = Sidecar(cfg)
    await sc.start()
    try:
        yield sc
    finally:
        await sc.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: kept for a spawned process: which build runs is the test run's choice (a pure run's children pure too)
KEEP_ENV = ("EPOCHGATE_PURE_PYTHON",)


def clean_env() -> dict[str, str]:
    """The environment without EPOCHGATE_* settings (scripts/test exports EPOCHGATE_CONSUL as the
    Consul *binary* path; to a sidecar that variable is its --consul URL), but ``KEEP_ENV``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EPOCHGATE_") or k in KEEP_ENV}
    env["PYTHONPATH"] = str(ROOT)
    return env


def spawn_sidecar(args: list[str], **kw: Any) -> subprocess.Popen:
    """``python -m sidecar *args`` in its own process group; reaped (with its workers)
    at the end of the test if still running (``tests/_procs.py``)."""
    from tests._procs import spawn_python

    env = clean_env()
    return spawn_python(["-m", "sidecar", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, text=True, **kw)


def wait_http(url: str, timeout: float = 15.0, status: int | None = 200) -> None:
    """Block until ``url`` answers (with ``status`` when given)."""
    import urllib.error
    import urllib.request

    end = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if status is None or r.status == status:
                    return
                last = r.status
        except urllib.error.HTTPError as exc:
            last = exc.code
            if status is None or exc.code == status:
                return
        except OSError as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"{url} not answering {status}: {last}")


async def raw_request(port: int, data: bytes, read_until_close: bool = True, timeout: float = 5.0) -> bytes:
    """Send raw bytes, return what comes back (until close or timeout)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    out = b""
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), timeout)
            if not chunk:
                break
            out += chunk
            if not read_until_close and b"\r\n\r\n" in out:
                break
    except asyncio.TimeoutError:
        pass
    writer.close()
    return out


# ---- shared fixtures for in-process sidecar tests (import them into the test module) ----

KEY = {"X-Partition-Key": "t1"}


@pytest.fixture
async def nodes():
    """Two real upstream servers, nodes ``a`` and ``b``."""
    a = await Upstream("a").start()
    b = await Upstream("b").start()
    yield a, b
    await a.stop()
    await b.stop()


@pytest.fixture
def placement(nodes, tmp_path):
    """A placement file: t1 on a, t2 on b."""
    a, b = nodes
    return write_placement(tmp_path / "p.toml", {"a": a.url, "b": b.url}, {"t1": "a", "t2": "b"})


@pytest.fixture
async def session():
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
        yield s


async def until(pred, timeout: float = 10.0) -> None:
    """Wait (bounded) until ``pred()`` holds."""
    end = asyncio.get_running_loop().time() + timeout
    while not pred():
        if asyncio.get_running_loop().time() > end:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


def writes(up: Upstream) -> list[dict[str, Any]]:
    """The PUTs an upstream saw."""
    return [s for s in up.seen if s["method"] == "PUT"]
