"""Processes the tests spawn do not outlive them (tests/_procs.py): the group
reap takes forked children and SIGSTOPped ones too; a test failed by
pytest-timeout still reaps what it spawned; a pytest process SIGKILLed takes
its direct children with it (PR_SET_PDEATHSIG)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tests._procs import reap, spawn_python

ROOT = Path(__file__).resolve().parent.parent

# writes its pid to argv[1], forks a child that writes its pid to argv[1] + ".child"; both sleep
FORKER = textwrap.dedent("""
    import os, sys, time
    if os.fork() == 0:
        open(sys.argv[1] + ".child", "w").write(str(os.getpid()))
        time.sleep(120)
        os._exit(0)
    open(sys.argv[1], "w").write(str(os.getpid()))
    time.sleep(120)
""")


def _pid(path: Path, timeout_s: float = 15.0) -> int:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            text = path.read_text()
            if text:
                return int(text)
        except FileNotFoundError:
            pass
        time.sleep(0.02)
    raise AssertionError(f"{path} never written")


def _dead(pid: int, timeout_s: float = 5.0) -> bool:
    """Gone, or a zombie waiting for its (new) parent to reap it."""
    end = time.monotonic() + timeout_s
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        if time.monotonic() > end:
            return False
        time.sleep(0.02)


def test_reap_takes_the_group_even_when_stopped(tmp_path):
    proc = spawn_python(["-c", FORKER, str(tmp_path / "p")])
    parent, child = _pid(tmp_path / "p"), _pid(tmp_path / "p.child")
    assert parent == proc.pid                 # the wrapper exec'd: same pid, signals reach the real process
    proc.send_signal(signal.SIGSTOP)
    reap(proc, grace_s=5.0)
    assert proc.returncode is not None
    assert _dead(parent) and _dead(child)


def _inner_pytest(tmp_path: Path, body: str) -> subprocess.Popen:
    (tmp_path / "conftest.py").write_text(f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n"
                                          "pytest_plugins = ['tests._procs']\n")
    (tmp_path / "test_inner.py").write_text(body)
    return subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", os.devnull,
                             "--rootdir", str(tmp_path), "-o", "asyncio_mode=auto",
                             "-o", "asyncio_default_fixture_loop_scope=function", str(tmp_path / "test_inner.py")],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def test_timed_out_async_test_still_reaps(tmp_path):
    out = tmp_path / "p"
    inner = _inner_pytest(tmp_path, textwrap.dedent(f"""
        import asyncio, pytest
        from tests._procs import spawn_python
        from tests.test_procs_reaper import FORKER

        @pytest.mark.timeout(2)
        async def test_hangs():
            spawn_python(["-c", FORKER, {str(out)!r}])
            await asyncio.sleep(60)
    """))
    try:
        text, _ = inner.communicate(timeout=60)
    finally:
        if inner.poll() is None:
            os.killpg(inner.pid, signal.SIGKILL)
            inner.wait()
    assert "Timeout" in text and "1 failed" in text, text
    assert _dead(_pid(out)) and _dead(_pid(Path(str(out) + ".child")))


def test_sigkilled_pytest_takes_its_children(tmp_path):
    out = tmp_path / "p"
    inner = _inner_pytest(tmp_path, textwrap.dedent(f"""
        import time
        from tests._procs import spawn_python
        from tests.test_procs_reaper import FORKER

        def test_sleeps():
            spawn_python(["-c", FORKER, {str(out)!r}])
            time.sleep(60)
    """))
    try:
        parent, child = _pid(out), _pid(Path(str(out) + ".child"))
        inner.kill()                      # no teardown, no atexit: only the kernel's death signal
        inner.wait()
        assert _dead(parent)
    finally:
        if inner.poll() is None:
            inner.kill()
            inner.wait()
        inner.stdout.close()
        # A grandchild (e.g. a sidecar worker) is not covered by the death signal; the
        # sidecar's workers exit on their own when their supervisor's socket closes.
        # This one does not, so end it here (it is ours: it wrote its pid for us).
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass
