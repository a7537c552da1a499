"""The operator CLI (DESIGN §10) run as real subprocesses (`python -m sidecar ...`)
against a real control server on loopback: output, exit codes, one-line errors."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import sys
from pathlib import Path

import pytest

from gate import EmbeddedStore, PlacementTable
from sidecar.control import cli as _cli
from sidecar.api.start import start_control_server
from tests._control_fakes import FakeJobs

ROOT = Path(__file__).resolve().parent.parent
NODES = {"a": "http://127.0.0.1:9001", "b": "http://127.0.0.1:9002"}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EPOCHGATE_")}
    env.update(extra)
    return env


async def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sidecar", *args, cwd=ROOT, env=env or _env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


def _one_line_error(err: str) -> str:
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.fixture
async def server():
    table = PlacementTable({"t1": "a", "t2": "a", "t3": "a"})
    store = EmbeddedStore(table, NODES)
    started = []

    async def start(*, jobs: bool = True, token: str | None = None):
        fake = FakeJobs(store, outcomes={"t2": "failed", "t3": "aborted"}) if jobs else None
        srv = await start_control_server("127.0.0.1:0", store=store, source=table, jobs=fake, token=token)
        started.append((srv, fake))
        return f"127.0.0.1:{srv.epochgate_port}", fake

    yield table, start
    for srv, fake in started:
        if fake is not None:
            await fake.close()
        await srv.stop(0)


async def test_migrate_follows_to_completion_with_plain_lines(server):
    table, start = server
    addr, _ = await start()
    rc, out, err = await cli("migrate", "--partition", "t1", "--to", "b", "--control", addr)
    assert rc == _cli.EXIT_OK, err
    lines = out.splitlines()
    # one line per phase recorded (with its epoch and millisecond time), the first one the pending status
    assert [ln.split()[:4] for ln in lines[:5]] == [["job", "j1", s, f"bytes={1000 * i}"] for i, s in
                                                    enumerate(("pending", "draining", "cutover", "replaying", "completed"))]
    assert all(" epoch=" in ln and " at=" in ln for ln in lines[1:5])
    assert lines[5].startswith("job j1 completed: t1 a→b, 3.9 KiB copied in ")
    assert "\r" not in out and table.get("t1").placement == "b"
    rc, _, err = await cli("jobs", "abort", "j1", "--control", addr)
    assert rc == _cli.EXIT_REFUSED and _one_line_error(err) == "error: job j1 already completed; nothing to abort"


async def test_migrate_exit_codes_say_the_outcome(server):
    table, start = server
    addr, _ = await start()
    rc, out, err = await cli("migrate", "--partition", "t2", "--to", "b", "--control", addr)
    assert rc == _cli.EXIT_FAILED == 1
    # the failure line is on stderr (issue 27), the progress lines on stdout
    assert err.splitlines()[-1].endswith("s: mover: export from a failed: connection refused"), err
    assert err.splitlines()[-1].startswith("job j1 failed: ") and "job j1 failed:" not in out
    rc, out, err = await cli("migrate", "--partition", "t3", "--to", "b", "--control", addr, "--deadline", "1.5")
    assert rc == _cli.EXIT_ABORTED == 3 and "job j2 aborted:" in err and "cutover deadline passed" in err
    assert table.get("t2").placement == "a" and table.get("t3").placement == "a"
    rc, _, err = await cli("migrate", "--partition", "nope", "--to", "b", "--control", addr)
    assert rc == _cli.EXIT_REFUSED and "unknown partition 'nope'" in _one_line_error(err)
    rc, _, err = await cli("migrate", "--partition", "t1", "--to", "b", "--deadline", "-2", "--control", addr)
    assert rc == _cli.EXIT_REFUSED and "cutover_deadline_s:" in _one_line_error(err)


async def test_migrate_on_a_terminal_draws_a_progress_bar(server):
    _, start = server
    addr, _ = await start()
    master, slave = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sidecar", "migrate", "--partition", "t1", "--to", "b", "--control", addr,
        cwd=ROOT, env=_env(), stdout=slave, stderr=slave, stdin=asyncio.subprocess.DEVNULL,
    )
    os.close(slave)
    rc = await asyncio.wait_for(proc.wait(), 60)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    screen = b"".join(chunks).decode()
    assert rc == 0
    assert "\r" in screen and "[####################] completed" in screen and "[....................] pending" in screen
    assert "job j1 completed: t1 a→b" in screen


async def test_jobs_list_show_abort_and_no_follow(server):
    _, start = server
    addr, _ = await start()
    rc, out, _ = await cli("migrate", "--partition", "t1", "--to", "b", "--no-follow", "--control", addr)
    assert (rc, out) == (0, "job j1 pending: t1 a→b\n")
    rc, out, _ = await cli("jobs", "--control", addr)  # bare `jobs` lists
    assert rc == 0 and out.splitlines()[0].split() == ["ID", "STATUS", "PARTITION", "FROM", "TO", "BYTES", "STARTED", "FINISHED",
                                                   "KIND"]
    assert out.splitlines()[1].split()[:6] == ["j1", "pending", "t1", "a", "b", "0"]
    rc, out, _ = await cli("jobs", "show", "j1", "--control", addr)
    assert rc == 0 and "status:    pending" in out and "partition: t1" in out and "finished:  -" in out
    rc, out, _ = await cli("jobs", "--control", addr, "abort", "j1")  # common flags before the action too
    assert (rc, out) == (0, "job j1 aborted\n")
    rc, out, _ = await cli("jobs", "show", "j1", "--json", "--control", addr)
    job = json.loads(out)
    assert rc == 0 and job["status"] == "aborted" and job["finished"] > 0 and job["phases"][0]["phase"] == "aborted"
    rc, _, err = await cli("jobs", "show", "j9", "--control", addr)
    assert rc == _cli.EXIT_REFUSED and _one_line_error(err) == "error: unknown job 'j9' (not_found)"


async def test_partitions_and_nodes(server):
    table, start = server
    addr, _ = await start(jobs=False)
    rc, out, _ = await cli("partitions", "list", "--control", addr)
    assert rc == 0 and out.splitlines() == [
        "PARTITION  PHASE   FROM  TO  EPOCH", "t1         active  a     -   1",
        "t2         active  a     -   2", "t3         active  a     -   3"]
    rc, out, _ = await cli("partitions", "set", "t4", "b", "--control", addr)
    assert (rc, out) == (0, "t4 → b (epoch 4)\n") and table.get("t4") == ("b", 4)
    rc, _, err = await cli("partitions", "set", "t5", "zz", "--control", addr)
    assert rc == _cli.EXIT_REFUSED and "node: unknown node 'zz'" in _one_line_error(err)
    rc, _, err = await cli("partitions", "set", "a/b", "a", "--control", addr)
    assert rc == _cli.EXIT_REFUSED and "partition:" in _one_line_error(err)
    rc, out, _ = await cli("partitions", "--json", "--control", addr)
    data = json.loads(out)
    assert data["table_epoch"] == 4 and data["partitions"][3] == {"partition": "t4", "phase": "active", "from": "b", "to": None, "epoch": 4}

    rc, out, _ = await cli("nodes", "set", "c", "http://127.0.0.1:9003/", "--control", addr)
    assert (rc, out) == (0, "c = http://127.0.0.1:9003\n")
    rc, out, _ = await cli("nodes", "--control", addr)
    assert rc == 0 and [ln.split() for ln in out.splitlines()] == [
        ["NAME", "URL"], ["a", NODES["a"]], ["b", NODES["b"]], ["c", "http://127.0.0.1:9003"]]
    rc, _, err = await cli("nodes", "set", "d", "not-a-url", "--control", addr)
    assert rc == _cli.EXIT_REFUSED and "url:" in _one_line_error(err)

    # A sidecar serves no jobs: the CLI says so, in one line.
    rc, _, err = await cli("jobs", "list", "--control", addr)
    assert rc == _cli.EXIT_REFUSED and "does not serve this call" in _one_line_error(err)


async def test_unreachable_and_bad_flags():
    free = await _free_port()
    rc, out, err = await cli("partitions", "list", "--control", f"127.0.0.1:{free}")
    assert rc == _cli.EXIT_UNREACHABLE == 4 and out == ""
    assert _one_line_error(err).startswith(f"error: cannot reach the control API at 127.0.0.1:{free}")
    rc, _, err = await cli("migrate", "--partition", "t1", "--to", "b", env=_env(EPOCHGATE_CONTROL=f"127.0.0.1:{free}"))
    assert rc == 4 and f"127.0.0.1:{free}" in err
    rc, _, err = await cli("nodes", "--control", "nonsense")
    assert rc == _cli.EXIT_USAGE and "--control: expected HOST:PORT" in _one_line_error(err)
    rc, _, err = await cli("jobs", "frobnicate")
    assert rc == _cli.EXIT_USAGE and "Traceback" not in err and "invalid choice" in err


async def test_token_refusal_and_env(server):
    _, start = server
    addr, _ = await start(token="s3cret")
    rc, _, err = await cli("partitions", "list", "--control", addr)
    assert rc == _cli.EXIT_REFUSED and "EPOCHGATE_TOKEN" in _one_line_error(err) and "token" in err
    rc, _, err = await cli("partitions", "list", "--control", addr, "--token", "wrong")
    assert rc == _cli.EXIT_REFUSED
    rc, out, _ = await cli("partitions", "list", "--control", addr, "--token", "s3cret")
    assert rc == 0 and "t1" in out
    rc, out, _ = await cli("partitions", "list", env=_env(EPOCHGATE_CONTROL=addr, EPOCHGATE_TOKEN="s3cret"))
    assert rc == 0 and "t1" in out


async def _free_port() -> int:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    return port
