"""The blocking-query index rule shared by the replica, the participant's key watch
and the controller's job watch (``gate.next_blocking_index``)."""

from __future__ import annotations

from pathlib import Path

from gate import next_blocking_index

ROOT = Path(__file__).resolve().parent.parent


def test_follows_forward_and_resets_when_the_store_went_back():
    assert next_blocking_index(0, 7) == 7          # first answer
    assert next_blocking_index(7, 7) == 7          # a wait that timed out: same index
    assert next_blocking_index(7, 9) == 9
    assert next_blocking_index(9, 3) == 0          # went backwards (store reset): start over
    assert next_blocking_index(9, 0) == 0          # not positive: start over
    assert next_blocking_index(0, 0) == 0


def test_every_watch_loop_uses_the_one_rule():
    """No hand-written copy of the rule is left in the loops that follow Consul."""
    for rel in ("gate/_replica.py", "gate/_participant_session.py", "sidecar/control/controller.py"):
        src = (ROOT / rel).read_text()
        assert "next_blocking_index(" in src, rel
        assert ">= index else 0" not in src and "index < self.index or" not in src, rel
