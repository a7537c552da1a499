"""Dry runs tell the truth, and a cordoned node is not a target by accident (issue 27), on a real
controller over real Consul:

* a source or target no connection can be made to is a refusal naming the node, its URL and why
  (before: "would go", and the real move then failed);
* ``balance --dry-run`` never says "completed" (before: "operation … completed");
* "behind" comes in seconds beside epochs; a participant a few epochs behind for a moment is no
  warning, one that has not acknowledged for longer than ``FRESH_S`` is;
* ``migrate`` (and its dry run) onto a cordoned node is refused unless ``--force``.
"""

from __future__ import annotations

import json

import pytest

from sidecar.control import dryrun

from ._operator_util import cli, controller, participants
from .test_operator_controller import _setup, _size_app, _wait_job

pytestmark = [pytest.mark.consul]
DOWN = "http://127.0.0.1:1"   # nothing listens on port 1


async def test_unreachable_source_or_target_is_refused_with_the_reason(consul_agent, kv_prefix):
    runner, url = await _size_app({"t1": 10, "t2": 10})
    try:
        async with controller(consul_agent.url, kv_prefix) as ctl:
            await _setup(ctl, nodes=("a", "b", "c"), parts=("t1",), urls={"a": url, "b": DOWN, "c": url})
            code, out, err = await cli(ctl.control, "migrate", "--partition", "t1", "--to", "b", "--dry-run")
            assert code == 5, (out, err)
            assert f"refused:     to_node: node 'b' at {DOWN} is unreachable: connection refused" in out
            assert "would go" not in out
            await ctl.store.set("t1", "b")    # now the source is the one that is down
            code, out, _ = await cli(ctl.control, "migrate", "--partition", "t1", "--to", "c", "--dry-run", "--json")
            plan = json.loads(out)
            assert code == 5 and not plan["would_go"]
            assert plan["refusals"] == [f"from_node: node 'b' at {DOWN} is unreachable: connection refused"]
    finally:
        await runner.cleanup()


async def test_balance_dry_run_never_says_completed(consul_agent, kv_prefix):
    async with controller(consul_agent.url, kv_prefix) as ctl:
        await _setup(ctl, nodes=("a", "b"), parts=("t1", "t2", "t3", "t4"))
        await ctl.store.set("t2", "a")
        await ctl.store.set("t4", "a")          # all four on a: balance would move two
        code, out, err = await cli(ctl.control, "balance", "--dry-run")
        assert code == 0, err
        assert "completed" not in out, out
        assert out.splitlines()[-1] == "dry run: balance would make 2 moves; nothing was started"
        assert await ctl.list() == []


async def test_freshness_in_seconds_and_only_a_stale_participant_warns(consul_agent, kv_prefix, monkeypatch):
    runner, url = await _size_app({"t1": 10})
    try:
        async with controller(consul_agent.url, kv_prefix) as ctl, \
                participants(consul_agent.url, kv_prefix, ["sc-1"]):   # published epoch 0, never acks
            await _setup(ctl, urls={"a": url, "b": url})
            code, out, err = await cli(ctl.control, "migrate", "--partition", "t1", "--to", "b", "--dry-run")
            assert code == 0, (out, err)
            line = next(ln for ln in out.splitlines() if "sc-1" in ln)
            assert " epochs, " in line and " s behind)" in line, line     # "(3 epochs, 0.4 s behind)"
            assert "warning:" not in out, out                              # a moment behind is normal
            monkeypatch.setattr(dryrun, "FRESH_S", 0.0)                    # as if it had been long ago
            plan = await ctl.ops.plan("t1", "b")
            assert plan.would_go
            assert [w for w in plan.warnings if w.startswith("participant sc-1 has not acknowledged the table for ")]
    finally:
        await runner.cleanup()


async def test_migrate_to_a_cordoned_node_is_refused_unless_forced(consul_agent, kv_prefix):
    runner, url = await _size_app({"t1": 10})
    try:
        async with controller(consul_agent.url, kv_prefix) as ctl:
            await _setup(ctl, urls={"a": url, "b": url})
            await ctl.ops.controls.cordon("b", True)     # as a drain of b leaves it
            code, out, err = await cli(ctl.control, "migrate", "--partition", "t1", "--to", "b")
            assert code == 5 and len(err.splitlines()) == 1 and err.startswith(
                "error: to_node: b is cordoned (a drain emptied it; balance leaves it alone): "
                "`drain b --uncordon` first, or --force to move onto it anyway"), (out, err)
            assert await ctl.list() == []
            code, out, _ = await cli(ctl.control, "migrate", "--partition", "t1", "--to", "b", "--dry-run")
            assert code == 5 and "refused:     to_node: b is cordoned" in out
            code, out, _ = await cli(ctl.control, "migrate", "--partition", "t1", "--to", "b", "--dry-run", "--force")
            assert code == 0 and "warning:     --force: b is cordoned" in out and "would go" in out
            code, out, err = await cli(ctl.control, "migrate", "--partition", "t1", "--to", "b", "--force",
                                       "--no-follow")
            assert code == 0, err
            jobs = await ctl.list()
            assert len(jobs) == 1 and jobs[0].target == "b"
            await _wait_job(ctl, jobs[0].id)
    finally:
        await runner.cleanup()
