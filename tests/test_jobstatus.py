"""The job status machine (sidecar/control/jobstatus.py), checked over every
(status, event) pair against an expected table written out here, and its use by
``Job``: a status change that is not a transition is refused."""

from __future__ import annotations

import itertools

import pytest

from sidecar.control.jobs import STATUSES, TERMINAL, Job
from sidecar.control.jobstatus import (
    FINAL,
    TRANSITIONS,
    JobEvent,
    JobStatus,
    JobTransitionError,
    event_between,
    job_step,
)
from sidecar._metrics import JOB_STATUSES, MIGRATION_PHASES

S, E = JobStatus, JobEvent
LIVE = (S.PENDING, S.DRAINING, S.CUTOVER, S.REPLAYING)

# Written out by hand, pair by pair, as the reading of DESIGN §6 (not derived
# from the module's table): everything else is refused.
EXPECTED = {
    (S.PENDING, E.BEGAN): S.DRAINING,
    (S.PENDING, E.FAILED): S.FAILED,
    (S.PENDING, E.ABORTED): S.ABORTED,
    (S.DRAINING, E.CUTOVER_COMMITTED): S.CUTOVER,
    (S.DRAINING, E.FLIPPED): S.COMPLETED,
    (S.DRAINING, E.FAILED): S.FAILED,
    (S.DRAINING, E.ABORTED): S.ABORTED,
    (S.CUTOVER, E.BARRIER_PASSED): S.REPLAYING,
    (S.CUTOVER, E.FLIPPED): S.COMPLETED,
    (S.CUTOVER, E.REWOUND): S.DRAINING,
    (S.CUTOVER, E.FAILED): S.FAILED,
    (S.CUTOVER, E.ABORTED): S.ABORTED,
    (S.REPLAYING, E.REWAIT): S.CUTOVER,
    (S.REPLAYING, E.FLIPPED): S.COMPLETED,
    (S.REPLAYING, E.REWOUND): S.DRAINING,
    (S.REPLAYING, E.FAILED): S.FAILED,
    (S.REPLAYING, E.ABORTED): S.ABORTED,
}


@pytest.mark.parametrize(("status", "event"), list(itertools.product(JobStatus, JobEvent)))
def test_every_status_event_pair(status, event):
    if (status, event) in EXPECTED:
        assert job_step(status, event) is EXPECTED[(status, event)]
        assert job_step(status.value, event.value) is EXPECTED[(status, event)]   # the record's strings
    else:
        with pytest.raises(JobTransitionError, match=status.value):
            job_step(status, event)


def test_table_is_exactly_the_expected_one():
    assert dict(TRANSITIONS) == EXPECTED


def test_final_statuses_take_no_event_and_every_live_one_can_fail_and_abort():
    assert FINAL == {S.COMPLETED, S.FAILED, S.ABORTED}
    for status, event in itertools.product(FINAL, JobEvent):
        assert (status, event) not in TRANSITIONS
    for status in LIVE:
        assert job_step(status, E.FAILED) is S.FAILED and job_step(status, E.ABORTED) is S.ABORTED


def test_every_status_is_reachable_from_pending():
    seen, frontier = {S.PENDING}, [S.PENDING]
    while frontier:
        s = frontier.pop()
        for (src, _), dst in TRANSITIONS.items():
            if src is s and dst not in seen:
                seen.add(dst)
                frontier.append(dst)
    assert seen == set(JobStatus)


def test_event_between_names_the_one_event():
    pairs = {}
    for (src, ev), dst in TRANSITIONS.items():
        assert (src, dst) not in pairs, f"two events move {src} to {dst}"
        pairs[(src, dst)] = ev
    for src, dst in itertools.product(JobStatus, JobStatus):
        if (src, dst) in pairs:
            assert event_between(src, dst) is pairs[(src, dst)]
        else:
            with pytest.raises(JobTransitionError):
                event_between(src, dst)


def test_job_record_changes_status_only_along_the_table():
    job = Job.new("t1", "a", "b", 5.0)
    job = job.at_phase("draining", 3).at_phase("cutover", 4).at_phase("replaying", 4).at_phase("completed", 5)
    assert job.status == "completed" and job.terminal and job.finished > 0
    with pytest.raises(JobTransitionError):                 # a late abort never overwrites completed
        job.at_phase("aborted", 6)
    with pytest.raises(JobTransitionError):                 # the barrier is not skipped
        Job.new("t1", "a", "b", 5.0).at_phase("draining", 3).at_phase("replaying", 4)
    with pytest.raises(ValueError, match="status"):
        Job.new("t1", "a", "b", 5.0).with_(status="sideways")
    same = Job.new("t1", "a", "b", 5.0)
    assert same.with_(status="pending", owner="me").owner == "me"   # not a change of status


def test_names_elsewhere_are_derived_from_the_enum():
    assert STATUSES == JOB_STATUSES == tuple(s.value for s in JobStatus)
    assert TERMINAL == {s.value for s in FINAL}
    assert MIGRATION_PHASES == ("draining", "cutover", "replaying")


def test_metric_label_values_come_from_the_enums():
    from gate import Phase, RejectReason
    from sidecar._metrics import PHASES, REASONS

    assert PHASES == (*(p.value for p in Phase), "none")
    assert REASONS == ("none", *(r.value for r in RejectReason))
