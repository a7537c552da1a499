"""Embedded mode keeps its jobs and history in a local SQLite file (issue 27): a sidecar on a
placement file migrates a partition with a real copy, is stopped (SIGTERM) and started again
with the same flags, and still lists the job and the partition's transitions with their job —
before, a restart forgot every job and ``history`` said the embedded table keeps none."""

from __future__ import annotations

import json

import pytest

from sidecar.control.statefile import StateFile, default_path, infer_op
from gate import PartitionState
from ._operator_util import cli
from .test_control_e2e import _spawn, _stop
from .test_embedded_controller import _ready, embedded_fleet, spawn_nodes


async def test_jobs_and_history_survive_a_restart(tmp_path, monkeypatch):
    pa, pb_, listen, admin, control, sidecar_args = embedded_fleet(tmp_path, monkeypatch)
    procs, logs = [], []
    try:
        procs += await spawn_nodes(tmp_path, control, pa, pb_)
        sidecar = await _spawn(*sidecar_args)
        await _ready(f"http://127.0.0.1:{admin}/readyz")
        for port in (pa, pb_):
            await _ready(f"http://127.0.0.1:{port}/healthz")
        rc, out, err = await cli(control, "migrate", "--partition", "tenant-1", "--to", "b")
        assert rc == 0, out + err
        rc, out, _ = await cli(control, "jobs", "list", "--json")
        (job,) = json.loads(out)
        rc, out, err = await cli(control, "history", "tenant-1", "--json")
        assert rc == 0, err
        before = json.loads(out)["transitions"]
        assert [t["op"] for t in before] == ["begin_migration", "enter_cutover", "complete_migration"]
        assert {t["job_id"] for t in before} == {job["id"]}
        assert (tmp_path / "placement.state.sqlite").exists()      # the default: beside the placement file
        logs.append(await _stop(sidecar))

        sidecar = await _spawn(*sidecar_args)                      # a real restart, same flags
        procs.append(sidecar)
        await _ready(f"http://127.0.0.1:{admin}/readyz")
        rc, out, err = await cli(control, "jobs", "list", "--json")
        assert rc == 0, err
        assert [(j["id"], j["status"], j["bytes_copied"]) for j in json.loads(out)] == \
            [(job["id"], "completed", job["bytes_copied"])]
        rc, out, _ = await cli(control, "history", "tenant-1", "--json")
        after = json.loads(out)["transitions"]
        assert after[:3] == before
        # epochs go on past the recorded ones (a new transition never reuses one), and the restart
        # is in the history: the placement file put tenant-1 back on a
        (restart,) = after[3:]
        assert (restart["op"], restart["to"], restart["from"]) == ("set", None, "a"), restart
        assert restart["actor"].endswith("(restart: placement file)") and restart["epoch"] > before[-1]["epoch"]
        rc, out, _ = await cli(control, "partitions", "list", "--json")
        epochs = [p["epoch"] for p in json.loads(out)["partitions"]]
        assert min(epochs) > max(t["epoch"] for t in before), (epochs, before)
    finally:
        logs += [await _stop(p) for p in reversed(procs)]
    assert all("Traceback" not in log for log in logs), "\n".join(logs)


def test_one_sidecar_per_state_file_and_the_default_path(tmp_path):
    path = default_path(str(tmp_path / "fleet.toml"))
    assert path == str(tmp_path / "fleet.state.sqlite")
    first = StateFile(path)
    try:
        with pytest.raises(Exception, match="locked"):
            StateFile(path)            # a second process would see none of the first's records
    finally:
        first.close()
    StateFile(path).close()            # free again once the first has closed it


def test_history_op_is_the_state_machines():
    a, draining = PartitionState.active("a"), PartitionState.draining("a", "b")
    assert infer_op(None, a) == "set"
    assert infer_op(a, draining) == "begin_migration"
    assert infer_op(draining, PartitionState.cutover("a", "b")) == "enter_cutover"
    assert infer_op(PartitionState.cutover("a", "b"), PartitionState.active("b")) == "complete_migration"
    assert infer_op(draining, a) == "abort_migration"
    assert infer_op(a, PartitionState.active("c")) == "set"
