"""A taken listen port is one line, first, naming the port and the flag/variable that moves it
(issue 27: before, "draining … drained" came first, and with --consul only after a wait for the agent)."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from tests._sidecar_util import ROOT, clean_env


@pytest.mark.parametrize("field,args", [
    ("listen", ["--placement", "examples/placement.toml", "--listen", "{busy}", "--admin", "127.0.0.1:0",
                "--control", "127.0.0.1:0"]),
    # Consul that is not there: the port is still the first (and only) thing said
    ("control", ["--consul", "http://127.0.0.1:1", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
                 "--control", "{busy}"]),
    ("admin", ["controller", "--consul", "http://127.0.0.1:1", "--admin", "{busy}", "--control", "127.0.0.1:0"]),
])
def test_busy_port_is_one_line_naming_port_flag_and_variable(field, args):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = f"127.0.0.1:{holder.getsockname()[1]}"
        r = subprocess.run([sys.executable, "-m", "sidecar", *(a.format(busy=busy) for a in args)], cwd=ROOT,
                           env=clean_env(), capture_output=True, text=True, timeout=60)
    port = busy.rpartition(":")[2]
    assert r.returncode == 2, r
    assert r.stdout == ""
    assert r.stderr.splitlines() == [
        f"error: {field}: port {port} ({busy}) is already in use by another process; "
        f"move it with --{field} or EPOCHGATE_{field.upper()}"], r.stderr
