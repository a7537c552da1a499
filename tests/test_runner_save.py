"""The job runner's record writes (sidecar/control/runner.py ``_save``): a write of its own
whose answer it never saw (a progress save cancelled in flight) does not make it give the
job up — a restart would copy the whole partition again — while another controller's
claim or an operator's abort still does. Pure logic over the in-memory KV."""

from __future__ import annotations

import pytest

from gate import EmbeddedStore, PlacementTable
from sidecar.control.embedded import MemKV
from sidecar.control.jobs import Job, JobRecords
from sidecar.control.retry import RetryingStore
from sidecar.control.runner import JobRunner, LostLeadership


async def _setup():
    records = JobRecords(MemKV(), "p/")
    store = RetryingStore(EmbeddedStore(PlacementTable({"t1": "a"}), {}), retry_s=0.0)

    async def nodes():
        return {}
    runner = JobRunner(store, records, None, None, nodes, owner="me", check=lambda: None)  # type: ignore[arg-type]
    job = await records.create(Job.new("t1", "a", "b", 1.0))
    return runner, records, await runner._save(job.with_(owner="me"))


async def test_an_own_write_whose_answer_was_lost_is_written_over():
    runner, records, mine = await _setup()
    await records.save(mine.with_(bytes_copied=5))          # landed; our copy of it never saw the answer
    saved = await runner._save(mine.with_(bytes_copied=10))  # still at the older version
    assert saved.bytes_copied == 10 and (await records.get(mine.id)).bytes_copied == 10


async def test_another_owner_still_takes_the_job_away():
    runner, records, mine = await _setup()
    await records.save(mine.with_(owner="other"))
    with pytest.raises(LostLeadership):
        await runner._save(mine.with_(bytes_copied=10))
