"""The README's by-hand walk-through, run exactly as printed (issue 27).

The block between ``<!-- by-hand:start`` and ``<!-- by-hand:end -->`` is handed to bash
unchanged, from the repository root, with ``python3`` on PATH being the interpreter running
these tests (the README says to activate ``.venv`` first, which does the same) and the real
Consul dev agent the block starts itself. It must end by printing ``hello`` — the value written
to tenant-1 on node a, read back through the sidecar after ``migrate`` moved it to node b.

The block uses the default ports (as a newcomer would), so when one of them is taken on this
machine the test says which and skips: it cannot run there as printed.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests._consul import consul_binary

ROOT = Path(__file__).resolve().parent.parent
#: what the block listens on: Consul's dev agent (HTTP, DNS, gRPC, serf LAN/WAN, server), the
#: sidecar (proxy, admin, control), the controller (control, admin) and the two nodes
PORTS = (8500, 8600, 8502, 8301, 8302, 8300, 8080, 9901, 50051, 50052, 9902, 9001, 9002)


def by_hand_block() -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"^<!-- by-hand:start.*?-->\n(.*?)^<!-- by-hand:end -->", text, re.S | re.M)
    assert m, "README.md has no by-hand block between its markers"
    lines = m.group(1).strip("\n").splitlines()
    assert all(not ln or ln.startswith("    ") for ln in lines), "the block is one indented code block"
    return "\n".join(ln[4:] for ln in lines) + "\n"


def _taken(ports: tuple[int, ...]) -> list[int]:
    out = []
    for p in ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                out.append(p)
    return out


def test_the_block_is_what_a_newcomer_pastes():
    block = by_hand_block()
    assert "python -m" not in block, "bookworm has no `python`: the block uses python3 throughout"
    assert block.count("python3 -m sidecar migrate") == 1 and block.rstrip().endswith("# hello, now served by b")


@pytest.mark.slow
@pytest.mark.consul
@pytest.mark.timeout(200)
def test_by_hand_block_prints_hello(tmp_path):
    taken = _taken(PORTS)
    if taken:
        pytest.skip(f"the by-hand block's fixed ports {taken} are in use here")
    if shutil.which("curl") is None:
        pytest.fail("the by-hand block needs curl (Debian: apt-get install curl)")
    consul_dir = str(Path(consul_binary()).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EPOCHGATE_", "PYTHONPATH", "CONSUL_"))}
    # python3 = this interpreter (as an activated .venv would make it); consul found first on
    # PATH by scripts/get-consul; mktemp -d inside tmp_path, so the block's data is removed.
    # A script that execs it, not a symlink: a venv's python found through a symlink in another
    # directory looks for pyvenv.cfg beside the link, misses it and runs without the venv's
    # packages (on a machine whose base Python has no aiohttp the block's sidecar then fails)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python3").write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    (bindir / "python3").chmod(0o755)
    env |= {"PATH": f"{bindir}:{consul_dir}:{env.get('PATH', '')}", "TMPDIR": str(tmp_path)}
    script = tmp_path / "by-hand.sh"
    script.write_text(by_hand_block())
    # output to files, not pipes: the block's background processes keep their copies open
    with open(tmp_path / "out", "w") as out_f, open(tmp_path / "err", "w") as err_f:
        proc = subprocess.Popen(["bash", str(script)], cwd=ROOT, env=env, stdout=out_f, stderr=err_f,
                                start_new_session=True)
    finished = False
    try:
        proc.wait(timeout=150)
        finished = True
    except subprocess.TimeoutExpired:
        pass
    finally:
        # what the README's `kill %1 %2 %3 %4 %5` does: the block's background processes are
        # still in its process group after bash exits
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:  # reap bash itself: an unreaped leader keeps the group alive for _wait_gone
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        _wait_gone(proc.pid)
    out, err = (tmp_path / "out").read_text(), (tmp_path / "err").read_text()
    assert finished, f"the block did not finish in 150 s:\n{out[-2000:]}\n{err[-3000:]}"
    lines = out.strip().splitlines()
    assert lines and lines[-1].strip() == "hello", f"stdout:\n{out[-2000:]}\nstderr:\n{err[-3000:]}"
    assert "Traceback" not in err, err[-3000:]


def _wait_gone(pgid: int) -> None:
    """Until the block's process group is empty (SIGKILL after 20 s)."""
    import time

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
