"""Child processes the tests spawn (sidecars, example KV nodes, controllers) never
outlive the test, however it ends.

* Each child starts in its own session (``start_new_session``), so its process
  group holds it and anything it forks (``--workers`` children): ``reap`` stops
  the whole group — SIGCONT first (a SIGSTOPped child cannot act on SIGTERM),
  SIGTERM, then SIGKILL after a grace period.
* ``reap_spawned`` (an autouse fixture, loaded as a plugin by ``conftest``)
  reaps, at every test's teardown, whatever that test spawned and left
  running: a failed assertion, a pytest-timeout (the signal method fails the
  test from a SIGALRM handler; fixture teardown still runs) or a test that
  simply forgot.
* An ``atexit`` hook reaps what is left when the interpreter exits (Ctrl-C,
  an exception out of the session).
* If the pytest process itself dies without running any of that (SIGKILL, or
  SIGTERM, whose default action skips atexit), each child gets SIGKILL from the
  kernel: it is started through a tiny wrapper that sets ``PR_SET_PDEATHSIG``
  and then ``exec``s the real command (same pid). The death signal is tied to
  the spawning *thread*, so it is set only when spawning from the main thread.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Iterator

import pytest

# argv[1] = the parent's pid (0: no death signal), argv[2:] = the python arguments to exec.
_WRAPPER = (
    "import os, sys\n"
    "ppid = int(sys.argv[1])\n"
    "if ppid:\n"
    "    import ctypes, signal\n"
    "    ctypes.CDLL(None).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG\n"
    "    if os.getppid() != ppid:\n"
    "        os._exit(0)  # the parent died before the death signal was set\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])\n"
)

_spawned: list[subprocess.Popen] = []
_lock = threading.Lock()


def spawn_python(args: list[str], **kw: Any) -> subprocess.Popen:
    """``python *args`` in its own session, killed with the test process if that dies
    first, and reaped at the end of the test that started it. ``kw`` go to ``Popen``."""
    if kw.pop("start_new_session", True) is not True:
        raise ValueError("start_new_session: children always get their own session (reaped as a group)")
    ppid = os.getpid() if threading.current_thread() is threading.main_thread() else 0
    proc = subprocess.Popen([sys.executable, "-c", _WRAPPER, str(ppid), *args], start_new_session=True, **kw)
    with _lock:
        _spawned.append(proc)
    return proc


def _group_signal(proc: subprocess.Popen, sig: int) -> None:
    """Signal ``proc``'s group — only while ``proc`` is not reaped yet (alive or a
    zombie): until then its pid, which is the group id, cannot be reused, so the
    signal cannot reach anybody else's processes."""
    if proc.returncode is not None:
        return
    try:
        os.killpg(proc.pid, sig)   # its own session: the group id is its pid
    except (ProcessLookupError, PermissionError):
        pass


def _exited(proc: subprocess.Popen) -> bool:
    """True once ``proc`` has exited, without reaping it (``WNOWAIT``)."""
    if proc.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _wait_exited(proc: subprocess.Popen, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while not _exited(proc):
        if time.monotonic() >= end:
            return False
        time.sleep(0.01)
    return True


def reap(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    """Stop ``proc`` and its process group: SIGCONT + SIGTERM, SIGKILL after ``grace_s``.
    The group gets its SIGKILL before ``proc`` is reaped (see ``_group_signal``), so
    children it left behind (workers) go too."""
    if not _exited(proc):
        _group_signal(proc, signal.SIGCONT)
        _group_signal(proc, signal.SIGTERM)
        _wait_exited(proc, grace_s)
    _group_signal(proc, signal.SIGKILL)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:   # pragma: no cover - uninterruptible sleep
        pass


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc``'s whole group at once (a pod dying) and wait for ``proc``."""
    _group_signal(proc, signal.SIGCONT)
    _group_signal(proc, signal.SIGKILL)
    proc.wait(10)


def alive() -> list[subprocess.Popen]:
    with _lock:
        return [p for p in _spawned if p.poll() is None]


def _reap_from(start: int, grace_s: float) -> None:
    with _lock:
        procs, _spawned[start:] = _spawned[start:], []
    for p in procs:
        reap(p, grace_s)
        for f in (p.stdin, p.stdout, p.stderr):
            if f is not None and not f.closed:
                f.close()


@pytest.fixture(autouse=True)
def reap_spawned() -> Iterator[None]:
    """Reap every process the test spawned through ``spawn_python`` and left running."""
    with _lock:
        start = len(_spawned)
    yield
    _reap_from(start, grace_s=2.0)


@atexit.register
def _reap_all() -> None:
    _reap_from(0, grace_s=1.0)
