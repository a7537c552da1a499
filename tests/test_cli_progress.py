"""Progress of a drain/balance: on a terminal one summary line redrawn in place under the moves'
lines; anything else gets plain lines (issue 27: before, a summary line per change everywhere).
A failed operation's last line goes to stderr. Pure logic over a fake control client."""

from __future__ import annotations

import io

from gate.pb.epochgate.v1 import epochgate_pb2 as pb
from sidecar.control import cli_ops
from sidecar.control.cli_follow import StatusLine


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _op(status, *moves, error=""):
    return pb.Operation(id="op1", kind="drain", node="a", status=status, error=error,
                        moves=[pb.Move(partition=p, from_node="a", to_node="b", status=s) for p, s in moves])


class _Client:
    def __init__(self, updates):
        self.updates = updates
        self.migration = type("M", (), {"WatchOperation": object(), "GetOperation": object()})()

    def stream(self, method, request):
        yield from self.updates

    def call(self, method, request):
        return self.updates[-1]


UPDATES = [_op("running", ("t1", "copying"), ("t2", "planned")),
           _op("running", ("t1", "completed"), ("t2", "copying")),
           _op("completed", ("t1", "completed"), ("t2", "completed"))]


def test_on_a_terminal_the_summary_is_redrawn_in_place():
    out = _Tty()
    code = cli_ops._follow_op(_Client(UPDATES), _op("running", ("t1", "planned"), ("t2", "planned")), out)
    text = out.getvalue()
    assert code == 0
    assert text.count("\r\x1b[K") >= 4            # every summary redraw erases the line it replaces
    lines = text.split("\n")
    assert lines[-1] == ""                          # the last summary is left on its own line
    final = lines[-2].rpartition("\r\x1b[K")[2]
    assert final.startswith("operation op1 drain a completed: 2/2 completed")
    # the moves' lines stay in the scroll-back, each once
    assert sum("t1 a→b completed" in ln for ln in lines) == 1


def test_not_a_terminal_gets_plain_lines():
    out = io.StringIO()
    cli_ops._follow_op(_Client(UPDATES), _op("running", ("t1", "planned"), ("t2", "planned")), out)
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()
    assert out.getvalue().splitlines()[-1].startswith("operation op1 drain a completed: 2/2 completed")


def test_a_failed_operation_says_so_on_stderr(capsys):
    out = io.StringIO()
    failed = [_op("failed", ("t1", "failed"), error="t1: mover: export from a failed")]
    code = cli_ops._follow_op(_Client(failed), _op("running", ("t1", "copying")), out)
    assert code == 1
    err = capsys.readouterr().err.splitlines()
    assert err == ["operation op1 drain a failed: 0/1 completed, 0 running, 0 waiting, 1 failed, 0 aborted, "
                   "0 skipped: t1: mover: export from a failed"]


def test_status_line_events_go_above_the_status():
    out = _Tty()
    view = StatusLine(out)
    view.status("50%")
    view.line("moved t1")
    view.status("100%")
    view.finish()
    assert out.getvalue() == "\r\x1b[K50%\r\x1b[Kmoved t1\n50%\r\x1b[K100%\n"
