"""Established TCP connections of processes, read from /proc (Linux; no psutil here).

Connections per participant are a measured figure (issue 31): bench/bench_fleet.py counts
the sockets its worker processes hold, tests/test_push_connections.py those one participant
opened. A socket belongs to a process when one of its fds is ``socket:[inode]``; its state and
addresses come from /proc/net/tcp{,6} (state 01 = ESTABLISHED).
"""

from __future__ import annotations

import os
from typing import Iterable, NamedTuple

_ESTABLISHED = "01"


class Conn(NamedTuple):
    local_port: int
    remote_port: int


def _inodes(pid: int) -> set[str]:
    out: set[str] = set()
    fd_dir = f"/proc/{pid}/fd"
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return out
    for name in names:
        try:
            target = os.readlink(f"{fd_dir}/{name}")
        except OSError:
            continue   # closed meanwhile
        if target.startswith("socket:["):
            out.add(target[8:-1])
    return out


def established(pids: Iterable[int]) -> list[Conn]:
    """The ESTABLISHED TCP connections whose socket one of ``pids`` holds."""
    mine: set[str] = set()
    for pid in pids:
        mine |= _inodes(pid)
    conns: list[Conn] = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) < 10 or cols[3] != _ESTABLISHED or cols[9] not in mine:
                continue
            conns.append(Conn(int(cols[1].rsplit(":", 1)[1], 16), int(cols[2].rsplit(":", 1)[1], 16)))
    return conns
