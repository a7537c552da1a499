"""A split or merge as a controller job (DESIGN §12.6; ``sidecar/control/reshard_job.py``), on real
Consul with a recording mover: the runner's record, fencing tokens and takeover reconciliation —
a job left by a dead controller mid-attempt restarts with tokens above the old attempt's, one left
after the flip or after an abort gets its clean-up finished, a deposed controller touches nothing,
an operator's abort aborts. The HTTP-hooks mover runs in ``test_reshard_e2e.py``."""

from __future__ import annotations

import asyncio

import pytest

from gate import AlreadyMigrating, BackendError, ConfigError, PartitionState, StaleMover
from gate._consul_consensus import open_consul
from gate._sessions import ConsulHTTP
from sidecar._metrics import Metrics
from sidecar.control.barrier import Barrier
from sidecar.control.jobs import Job, JobRecords
from sidecar.control.reshard import plan_split
from sidecar.control.reshard_job import job_of, submit
from sidecar.control.runner import JobRunner, LostLeadership

pytestmark = [pytest.mark.consul]
INTO = (("slot-1-of-4", "a"), ("slot-3-of-4", "b"))


class Mover:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    async def copy(self, partition, src, dst, progress, check=None, *, fence, only=None, into=None):
        check()
        self.calls.append(("copy", partition, into, fence))
        progress(100)
        return "7"

    async def copy_delta(self, partition, src, dst, since, progress, check=None, *, fence, only=None, into=None):
        self.calls.append(("delta", partition, into, fence))
        return "9"

    async def cleanup(self, partition, url, *, fence, only=None):
        self.calls.append(("cleanup", partition, url, fence))
        return 1


@pytest.fixture
async def env(consul_agent, kv_prefix):
    consensus, store, _ = await open_consul(consul_agent.url, kv_prefix)
    consul = ConsulHTTP(consul_agent.url)
    await store.set_node("a", "http://127.0.0.1:1")
    await store.set_node("b", "http://127.0.0.1:2")
    await store.set("slot-0", "a")
    await store.set("slot-1", "a")
    records, mover, lead = JobRecords(consul, kv_prefix), Mover(), [True]

    def check():
        if not lead[0]:
            raise LostLeadership("deposed")

    runner = JobRunner(store, records, Barrier(consul, kv_prefix, poll_wait_s=0.2), mover, store.nodes, owner="me",
                       check=check, metrics=Metrics(), abort_retry_s=2, prebarrier_s=0)
    try:
        yield store, records, runner, mover, lead
    finally:
        await consul.close()
        await consensus.close()


def _split(store_states):
    return job_of(plan_split(store_states, 2, "slot-1", "b"), "slot-1", 2, 5.0)


def _table(states):
    return {p: str(st.source) for p, (st, _) in states.items()}


async def test_a_split_job_runs_to_completion_and_cleans_up_the_source(env):
    store, records, runner, mover, _ = env
    job = await runner.run(await records.create(_split(await store.partitions())))
    assert job.status == "completed", job.error
    assert job.kind == "split" and job.into == INTO and job.hash_slots == 2
    assert [p.phase for p in job.phases] == ["draining", "cutover", "replaying", "flipped", "completed"]
    e1, e2, e3 = (job.phase(p).epoch for p in ("draining", "cutover", "flipped"))
    assert [c[0] for c in mover.calls] == ["cleanup", "cleanup", "copy", "copy", "delta", "delta", "cleanup"]
    assert [c[3] for c in mover.calls] == [e1, e1, e1, e1, e2, e2, e3]
    assert mover.calls[-1][:2] == ("cleanup", "slot-1")
    assert _table(await store.partitions()) == {"slot-0": "a", **dict(INTO)}
    assert Job.from_dict(job.to_dict()) == job


async def test_takeover_in_cutover_restarts_with_tokens_above_the_old_attempts(env):
    store, records, runner, mover, _ = env
    job = _split(await store.partitions())
    e = await store.begin_reshard(["slot-1"], INTO)
    job = await records.create(job.at_phase("draining", e).with_(owner="dead"))
    old = await store.enter_cutover_all(["slot-1"], at_epoch=e)   # the dead controller's cutover
    job = await runner.run(job)
    assert job.status == "completed", job.error
    assert job.owner == "me"
    assert min(c[3] for c in mover.calls) > old
    assert _table(await store.partitions()) == {"slot-0": "a", **dict(INTO)}


async def test_takeover_after_the_flip_finishes_the_clean_up(env):
    store, records, runner, mover, _ = env
    job = _split(await store.partitions())
    e = await store.begin_reshard(["slot-1"], INTO)
    e2 = await store.enter_cutover_all(["slot-1"], at_epoch=e)
    e3 = await store.complete_reshard(["slot-1"], at_epoch=e2)   # flipped; the leader died before the clean-up
    job = await records.create(job.at_phase("draining", e).at_phase("cutover", e2).at_phase("replaying", e2))
    job = await runner.run(job)
    assert job.status == "completed" and job.phases[-1].epoch == e3
    assert mover.calls == [("cleanup", "slot-1", "http://127.0.0.1:1", e3)]


async def test_takeover_after_an_abort_cleans_up_the_destinations(env):
    store, records, runner, mover, _ = env
    job = _split(await store.partitions())
    e = await store.begin_reshard(["slot-1"], INTO)
    job = await records.create(job.at_phase("draining", e))
    ea = await store.abort_all(["slot-1"])
    job = await runner.run(job)
    assert job.status == "aborted"
    assert sorted(mover.calls) == [("cleanup", "slot-1-of-4", "http://127.0.0.1:1", ea),
                                   ("cleanup", "slot-3-of-4", "http://127.0.0.1:2", ea)]


async def test_a_deposed_controller_leaves_the_attempt_to_the_next_one(env):
    store, records, runner, mover, lead = env
    job = await records.create(_split(await store.partitions()))
    real = mover.copy

    async def copy(*a, **k):
        lead[0] = False   # the lock is lost mid-copy
        return await real(*a, **k)
    mover.copy = copy
    with pytest.raises(LostLeadership):
        await runner.run(job)
    st, _ = (await store.partitions())["slot-1"]
    assert st.into == INTO                       # not aborted: the next leader restarts it
    assert [c[0] for c in mover.calls] == ["cleanup", "cleanup"]   # no import after the check failed


async def test_an_operators_abort_request_aborts_and_cleans_up(env):
    store, records, runner, mover, _ = env
    job = await records.create(_split(await store.partitions()))
    real, started = mover.copy, asyncio.Event()

    async def copy(*a, **k):
        started.set()
        await asyncio.sleep(0.3)
        return await real(*a, **k)
    mover.copy = copy
    task = asyncio.create_task(runner.run(job))
    await started.wait()
    latest = await records.get(job.id)
    await records.save(latest.with_(abort_requested=True))
    done = await task
    assert done.status == "aborted" and "operator" in done.error
    aborted = [h for h in await store.history("slot-1") if h.op == "abort_migration"]
    assert done.phases[-1].epoch == aborted[-1].epoch   # history joins the abort to the job
    assert _table(await store.partitions()) == {"slot-0": "a", "slot-1": "a"}
    assert {c[1] for c in mover.calls if c[0] == "cleanup"} == {"slot-1-of-4", "slot-3-of-4"}


async def test_submit_validates_against_the_table_and_live_jobs(env):
    store, records, *_ = env
    nodes = await store.nodes()
    with pytest.raises(ConfigError, match="to"):
        await submit(store, records, nodes, "split", "slot-1", "zz", 2, 5.0)
    with pytest.raises(ConfigError, match="slot-9"):
        await submit(store, records, nodes, "split", "slot-9", None, 2, 5.0)
    await records.create(Job.new("slot-1", "a", "b", 5.0))   # a move of slot-1 not yet run
    with pytest.raises(AlreadyMigrating):
        await submit(store, records, nodes, "split", "slot-1", "b", 2, 5.0)
    job = await submit(store, records, nodes, "split", "slot-0", "b", 2, 5.0)
    assert job.status == "pending" and job.into == (("slot-0-of-4", "a"), ("slot-2-of-4", "b"))
    assert (await store.partitions())["slot-0"][0] == PartitionState.active("a")


async def test_a_stale_mover_answer_leaves_the_attempt_to_the_newer_one(env):
    """409 stale-mover: a newer attempt's token reached the node first; this attempt must not abort it."""
    store, records, runner, mover, _ = env
    job = await records.create(_split(await store.partitions()))

    async def copy(*a, **k):
        raise StaleMover("slot-3-of-4", 5, 9)
    mover.copy = copy
    with pytest.raises(LostLeadership):
        await runner.run(job)
    assert (await store.partitions())["slot-1"][0].into == INTO


async def test_pause_holds_before_begin_and_the_copy_is_paced_like_a_moves(env, consul_agent, kv_prefix):
    """The runner's pause and throttle (sidecar/control/jobctl.py) apply to a reshard job: a paused
    fleet begins nothing; resumed, the job runs, and each source's bulk copy (a merge has two) is
    paced as the job's."""
    from sidecar.control.jobctl import FLEET, JobControls

    store, records, runner, mover, _ = env
    consul = ConsulHTTP(consul_agent.url)
    controls = JobControls(consul, kv_prefix)
    try:
        await controls.set(FLEET, paused=True)

        async def hold(job, phase):
            await controls.hold(job, runner.check, records, phase)
        runner.hold = hold
        paced = []
        real = mover.copy

        async def copy(partition, *a, **k):
            paced.append(controls.pacer.active.get(partition))
            return await real(partition, *a, **k)
        mover.copy = copy
        job = await records.create(_split(await store.partitions()))
        task = asyncio.create_task(runner.run(job))
        while controls.holding.get(job.id) != "begin":
            await asyncio.sleep(0.01)
        assert (await store.partitions())["slot-1"][0] == PartitionState.active("a")   # nothing begun
        await controls.set(FLEET, paused=False)
        done = await task
        assert done.status == "completed", done.error
        assert paced == [job.id, job.id]             # both halves' copies paced under the job
        assert "slot-1" not in controls.pacer.active  # and not the delta
        paced.clear()                                  # a merge: two sources, each copy paced under it
        merge = await submit(store, records, await store.nodes(), "merge", "slot-3-of-4", None, 2, 5.0)
        assert (await runner.run(merge)).status == "completed"
        assert paced == [merge.id, merge.id] and not controls.pacer.active
    finally:
        await consul.close()


async def test_a_stale_controller_failing_mid_copy_cannot_abort_the_newer_attempt(env):
    """Controller A pauses mid-copy (its lease check still passing: the worst case); B takes the job
    over (abort, a fresh attempt) and is copying when A resumes and its copy fails. A's abort is
    fenced to its own attempt's epoch, so it is refused and B's attempt goes on to complete; A's
    later writes — record saves, transitions — are refused too, and nothing of B's is undone."""
    store, records, runner_a, mover_a, _ = env
    go_a, go_b, b_copying = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def copy_a(*a, **k):
        await go_a.wait()
        raise BackendError("the source went away")
    mover_a.copy = copy_a
    job = await records.create(_split(await store.partitions()))
    a_task = asyncio.create_task(runner_a.run(job))
    while len(mover_a.calls) < 2:   # A cleared the destinations and is in its copy
        await asyncio.sleep(0.01)
    a_e1 = (await records.get(job.id)).phase("draining").epoch
    mover_b = Mover()
    real_b = mover_b.copy

    async def copy_b(*a, **k):
        b_copying.set()
        await go_b.wait()
        return await real_b(*a, **k)
    mover_b.copy = copy_b
    runner_b = JobRunner(store, records, runner_a.barrier, mover_b, store.nodes, owner="B", check=lambda: None,
                         abort_retry_s=2, prebarrier_s=0)
    b_task = asyncio.create_task(runner_b.run(await records.get(job.id)))
    await b_copying.wait()
    b_state, b_e1 = (await store.partitions())["slot-1"]
    assert b_state.into == INTO and b_e1 > a_e1
    go_a.set()
    with pytest.raises(LostLeadership):
        await a_task
    assert (await store.partitions())["slot-1"] == (b_state, b_e1)   # B's attempt not aborted
    go_b.set()
    done = await b_task
    assert done.status == "completed" and done.owner == "B", done.error
    assert min(c[3] for c in mover_b.calls) > a_e1   # B's tokens are above A's
    assert _table(await store.partitions()) == {"slot-0": "a", **dict(INTO)}
