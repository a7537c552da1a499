"""The sidecar as a process: CLI errors, SIGTERM drain, SIGHUP reload, bounded memory, workers."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import aiohttp
import pytest

from tests._sidecar_util import (  # noqa: F401 (nodes, placement, session are fixtures)
    KEY,
    ROOT,
    clean_env,
    free_port,
    nodes,
    spawn_sidecar,
    wait_http,
    write_placement,
)


def ports() -> dict[str, int]:
    return {"listen": free_port(), "admin": free_port(), "control": free_port()}


def args(placement, p, *extra: str) -> list[str]:
    return ["--placement", str(placement), "--listen", f"127.0.0.1:{p['listen']}", "--admin",
            f"127.0.0.1:{p['admin']}", "--control", f"127.0.0.1:{p['control']}", *extra]


async def start(placement, p, *extra: str) -> subprocess.Popen:
    proc = spawn_sidecar(args(placement, p, *extra))
    await asyncio.to_thread(wait_http, f"http://127.0.0.1:{p['admin']}/readyz")
    return proc


async def stop(proc: subprocess.Popen) -> tuple[int, str, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    out, err = await asyncio.to_thread(proc.communicate, timeout=20)
    return proc.returncode, out, err


def run_cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sidecar", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=30, env=clean_env())


@pytest.mark.parametrize("argv, field", [
    (["--placement", "/nonexistent.toml", "--listen", "127.0.0.1:0"], "placement"),
    (["--listen", "nope"], "listen"),
    (["--placement", "x.toml", "--workers", "zero"], "workers"),
    (["--placement", "x.toml", "--partition-from", "path:^/t/(?P<other>x)"], "partition_from[0]"),
    (["--placement", "x.toml", "--node", "a=ftp://x"], "node.a"),
    ([], "placement"),
    (["--placement", "examples/placement.toml", "--upstream-cert", "/nonexistent"], "upstream_cert"),  # (https:// nodes are supported now)
])
def test_config_errors_one_line_exit_2(argv, field):
    r = run_cli(*argv)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and field in lines[0] and "Traceback" not in r.stderr


def test_env_and_config_file_layers(tmp_path):
    from sidecar._config import parse_args

    cfg_file = tmp_path / "s.toml"
    cfg_file.write_text('placement = "p.toml"\nlisten = "127.0.0.1:1111"\nworkers = 3\nhold-seconds = 2\n'
                        'partition_from = ["query:t", "host"]\n')
    env = {"EPOCHGATE_LISTEN": "127.0.0.1:2222", "EPOCHGATE_DRAIN_SECONDS": "7"}
    cfg = parse_args(["--config", str(cfg_file), "--workers", "2"], env)
    assert (cfg.listen, cfg.workers, cfg.drain_seconds, cfg.hold_seconds) == ("127.0.0.1:2222", 2, 7.0, 2.0)
    assert cfg.partition_from == ("query:t", "host")
    from gate import ConfigError

    with pytest.raises(ConfigError) as ei:
        parse_args(["--placement", "p.toml"], {"EPOCHGATE_HOLD_MAX": "many"})
    assert ei.value.field == "hold_max"


async def test_sigterm_drains_in_flight_then_exits_0(nodes, tmp_path):
    a, _ = nodes
    placement = write_placement(tmp_path / "p.toml", {"a": a.url}, {"t1": "a"})
    p = ports()
    proc = await start(placement, p, "--drain-seconds", "10")
    async with aiohttp.ClientSession() as s:
        req = asyncio.create_task(s.put(f"http://127.0.0.1:{p['listen']}/wait", data=b"v", headers=KEY))
        while not a.seen:
            await asyncio.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        # readiness fails at once, and the listener stops accepting
        await asyncio.to_thread(wait_http, f"http://127.0.0.1:{p['admin']}/readyz", 5, None)
        deadline = time.monotonic() + 5
        refused = False
        while time.monotonic() < deadline and not refused:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{p['admin']}/readyz", timeout=1) as r:
                    pass
            except urllib.error.HTTPError as exc:
                refused = exc.code == 503
            except OSError:
                refused = True
            await asyncio.sleep(0.02)
        assert refused
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", p["listen"])
        assert proc.poll() is None  # still draining the in-flight write
        a.release.set()
        resp = await req
        assert resp.status == 200 and await resp.text() == "released"
        resp.release()
    code, _, err = await stop(proc)
    assert code == 0 and "drained" in err


async def test_sighup_reloads_and_refuses_bad_file(nodes, tmp_path):
    a, b = nodes
    placement = write_placement(tmp_path / "p.toml", {"a": a.url, "b": b.url}, {"t1": "a"})
    p = ports()
    proc = await start(placement, p, "--log-format", "json")
    base = f"http://127.0.0.1:{p['listen']}/kv/k"
    async with aiohttp.ClientSession() as s:
        async with s.get(base, headers={"X-Partition-Key": "t9"}) as r:
            assert r.status == 404
        write_placement(placement, {"a": a.url, "b": b.url}, {"t1": "b", "t9": "a"})
        proc.send_signal(signal.SIGHUP)
        for _ in range(200):
            async with s.get(base, headers={"X-Partition-Key": "t9"}) as r:
                if r.status == 200:
                    break
            await asyncio.sleep(0.02)
        async with s.get(base, headers=KEY) as r:
            assert (await r.json())["node"] == "b"
        placement.write_text("[partitions]\nt1 = 'nowhere'\n")  # references an unknown node
        proc.send_signal(signal.SIGHUP)
        await asyncio.sleep(0.5)
        async with s.get(base, headers=KEY) as r:
            assert r.status == 200 and (await r.json())["node"] == "b"  # old table kept
    code, out, err = await stop(proc)
    assert code == 0
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    refused = [e for e in events if e["event"].startswith("placement reload refused")]
    assert refused and "partitions.t1" in refused[0]["error"]
    access = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert access and {"method", "path", "partition", "phase", "epoch", "decision", "status", "upstream_ms",
                       "total_ms"} <= set(access[-1])


async def test_200mb_upload_and_download_bounded_memory(nodes, tmp_path):
    a, _ = nodes
    placement = write_placement(tmp_path / "p.toml", {"a": a.url}, {"t1": "a"})
    p = ports()
    proc = await start(placement, p, "--no-access-log")
    size = 200 * 1024 * 1024

    async def gen():
        block = b"u" * (1 << 20)
        for _ in range(200):
            yield block

    async with aiohttp.ClientSession() as s:
        async with s.post(f"http://127.0.0.1:{p['listen']}/kv/big", data=gen(),
                          headers={**KEY, "Content-Length": str(size)}) as r:
            assert (await r.json())["len"] == size
        async with s.get(f"http://127.0.0.1:{p['listen']}/big?size={size}", headers=KEY) as r:
            n = 0
            async for chunk in r.content.iter_chunked(1 << 20):
                n += len(chunk)
        assert n == size
    with open(f"/proc/{proc.pid}/status") as f:
        status = f.read()
    hwm_kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))
    await stop(proc)
    assert hwm_kb < 120 * 1024, f"sidecar peak RSS {hwm_kb} kB for a 200 MB body each way"


async def test_two_workers_share_port_and_agree(nodes, tmp_path):
    a, b = nodes
    placement = write_placement(tmp_path / "p.toml", {"a": a.url, "b": b.url}, {"t1": "a"})
    p = ports()
    proc = await start(placement, p, "--workers", "2")
    try:
        base = f"http://127.0.0.1:{p['listen']}/kv/k"
        rids = set()
        for _ in range(40):  # fresh connections: SO_REUSEPORT spreads them over both workers
            async with aiohttp.ClientSession() as s:
                async with s.put(base, headers=KEY, data=b"v") as r:
                    assert r.status == 200
                    rids.add((await r.json())["headers"]["X-Request-ID"].split("-")[0])
        assert len(rids) == 2  # request ids carry a per-process prefix: both workers served
        # a transition counts only once every worker applied it: right after the CLI returns,
        # no worker may still route to the old node
        r = await asyncio.to_thread(run_cli, "partitions", "set", "t1", "b", "--control", f"127.0.0.1:{p['control']}")
        assert r.returncode == 0, r.stderr
        for _ in range(40):
            async with aiohttp.ClientSession() as s:
                async with s.put(base, headers=KEY, data=b"v") as r:
                    assert (await r.json())["node"] == "b"
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{p['admin']}/metrics") as r:
                text = await r.text()
        line = [l for l in text.splitlines()
                if l.startswith('epochgate_requests_total{kind="write",outcome="ok",phase="active"}')]
        assert float(line[0].split()[-1]) == 80.0  # summed over both workers
    finally:
        code, _, err = await stop(proc)
    assert code == 0, err
