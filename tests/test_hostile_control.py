"""Hostile input — the control API's token and the access log (issue 15, Medium/Low)."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import grpc
import pytest

from gate import ConfigError, EmbeddedStore, PlacementTable
from sidecar._config import parse_args
from sidecar.api.start import start_control_server
from gate.pb.epochgate.v1 import epochgate_pb2 as pb
from gate.pb.epochgate.v1 import epochgate_pb2_grpc as pb_grpc
from tests._hostile import h11_nodes, hostile_sidecar, send_raw, statuses  # noqa: F401
from tests._sidecar_util import ROOT, clean_env, write_placement


def _placement(tmp_path):
    return write_placement(tmp_path / "p.toml", {"a": "http://127.0.0.1:1"}, {"t1": "a"})


@pytest.mark.parametrize("addr", ["0.0.0.0:0", "[::]:0", "10.1.2.3:50051"])
def test_non_loopback_control_without_a_token_is_refused(tmp_path, addr):
    with pytest.raises(ConfigError, match="^control: .*needs a token"):
        parse_args(["--placement", str(_placement(tmp_path)), "--control", addr], environ={})


async def test_start_control_server_refuses_too():
    table = PlacementTable({"t1": "a"})
    with pytest.raises(ConfigError, match="^control: "):
        await start_control_server("0.0.0.0:0", store=EmbeddedStore(table, {"a": "http://127.0.0.1:1"}),
                                   source=table)


def test_token_from_a_file_or_the_environment(tmp_path):
    tf = tmp_path / "token"
    tf.write_text("s3cret\n")
    cfg = parse_args(["--placement", str(_placement(tmp_path)), "--control", "0.0.0.0:0", "--token-file", str(tf)],
                     environ={})
    assert cfg.control_token() == "s3cret" and "s3cret" not in cfg.to_json()
    cfg = parse_args(["--placement", str(_placement(tmp_path)), "--control", "0.0.0.0:0"],
                     environ={"EPOCHGATE_TOKEN_FILE": str(tf)})
    assert cfg.control_token() == "s3cret"
    cfg = parse_args(["--placement", str(_placement(tmp_path)), "--control", "0.0.0.0:0"],
                     environ={"EPOCHGATE_TOKEN": "envtok"})
    assert cfg.control_token() == "envtok"
    with pytest.raises(ConfigError, match="^token_file: .*cannot read"):
        parse_args(["--placement", str(_placement(tmp_path)), "--token-file", str(tmp_path / "missing")], environ={})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="^token_file: .*empty"):
        parse_args(["--placement", str(_placement(tmp_path)), "--token-file", str(tmp_path / "empty")], environ={})


def test_the_sidecar_command_refuses_a_public_control_bind_without_a_token(tmp_path):
    r = subprocess.run([sys.executable, "-m", "sidecar", "--placement", str(_placement(tmp_path)),
                        "--control", "0.0.0.0:0", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"],
                       cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "control:" in r.stderr and "needs a token" in r.stderr and "Traceback" not in r.stderr


async def test_token_file_is_enforced_on_the_control_api(tmp_path, h11_nodes):
    tf = tmp_path / "token"
    tf.write_text("from-a-file")
    async with hostile_sidecar(tmp_path, h11_nodes, token_file=str(tf)) as sc:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{sc.control_port}") as ch:
            mig = pb_grpc.MigrationStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await mig.List(pb.ListRequest())
            assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
            resp = await mig.List(pb.ListRequest(), metadata=(("authorization", "Bearer from-a-file"),))
            assert {p.partition for p in resp.partitions} == {"t1", "t2", "t3"}


async def test_access_log_escapes_client_bytes(tmp_path, h11_nodes, capsys):
    async with hostile_sidecar(tmp_path, h11_nodes, access_log=True) as sc:
        raw = (b'GET /a"b\\d HTTP/1.1\r\nHost: app\r\nX-Partition-Key: t1\r\n'
               b'X-Request-Id: x" status=200 \x85forged\r\nConnection: close\r\n\r\n')
        out = await send_raw(sc.port, raw)
        assert statuses(out) == [200], out
        await asyncio.sleep(0)
        sc.ctx.access.flush()
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "partition=t1" in ln]
    assert len(lines) == 1, lines
    line = lines[0]
    assert '"GET /a\\x22b\\x5cd"' in line, line
    assert line.endswith("rid=x\\x22\\x20status=200\\x20\\x85forged"), line
    assert "\x85" not in line and line.count('"') == 2
