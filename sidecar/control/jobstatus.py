"""A migration job's status: an enum and its transition table (DESIGN §6).

The placement state machine (``gate.step``) says what the *store* may do; this
table says what a job *record* may say next. Every change of ``Job.status``
goes through it (``Job.with_`` and ``Job.at_phase`` ask ``event_between``), so a record can never
jump backwards from a final status — a late ``aborted`` cannot overwrite a
``completed`` — nor skip the barrier (draining → replaying without cutover).

Events are what the controller observed:

============================  =============================  ==============
event                         from                           to
============================  =============================  ==============
``began``                     pending                        draining
``cutover_committed``         draining                       cutover
``barrier_passed``            cutover                        replaying
``rewait``                    replaying                      cutover
``flipped``                   draining, cutover, replaying   completed
``rewound``                   cutover, replaying             draining
``failed``                    any non-final                  failed
``aborted``                   any non-final                  aborted
============================  =============================  ==============

``rewait``, ``flipped`` from draining or cutover, and ``rewound`` are what a
controller taking a job over may find: a job taken over while replaying
waits for the barrier again (its listing must come after the cutover commit,
DESIGN §5 rule 2); the store may already have flipped (the previous leader
died between the store's commit and its record write) or be back in
draining. A final status accepts no event.
"""

from __future__ import annotations

import enum
from types import MappingProxyType
from typing import Mapping


class JobStatus(str, enum.Enum):
    """A job's status. ``value`` is the wire/record/metric label."""

    PENDING = "pending"
    DRAINING = "draining"
    CUTOVER = "cutover"
    REPLAYING = "replaying"
    COMPLETED = "completed"
    FAILED = "failed"
    ABORTED = "aborted"

    def __str__(self) -> str:
        return self.value

    @property
    def final(self) -> bool:
        return self in FINAL


class JobEvent(str, enum.Enum):
    """What the controller observed about a job."""

    BEGAN = "began"
    CUTOVER_COMMITTED = "cutover_committed"
    BARRIER_PASSED = "barrier_passed"
    REWAIT = "rewait"
    FLIPPED = "flipped"
    REWOUND = "rewound"
    FAILED = "failed"
    ABORTED = "aborted"

    def __str__(self) -> str:
        return self.value


S, E = JobStatus, JobEvent
FINAL = frozenset({S.COMPLETED, S.FAILED, S.ABORTED})
_LIVE = (S.PENDING, S.DRAINING, S.CUTOVER, S.REPLAYING)

TRANSITIONS: Mapping[tuple[JobStatus, JobEvent], JobStatus] = MappingProxyType({
    (S.PENDING, E.BEGAN): S.DRAINING,
    (S.DRAINING, E.CUTOVER_COMMITTED): S.CUTOVER,
    (S.CUTOVER, E.BARRIER_PASSED): S.REPLAYING,
    (S.REPLAYING, E.REWAIT): S.CUTOVER,
    **{(s, E.FLIPPED): S.COMPLETED for s in (S.DRAINING, S.CUTOVER, S.REPLAYING)},
    **{(s, E.REWOUND): S.DRAINING for s in (S.CUTOVER, S.REPLAYING)},
    **{(s, E.FAILED): S.FAILED for s in _LIVE},
    **{(s, E.ABORTED): S.ABORTED for s in _LIVE},
})
"""``(status, event) → status``; a pair not in the table is refused."""

_EVENT_TO = {(src, dst): ev for (src, ev), dst in TRANSITIONS.items()}


class JobTransitionError(ValueError):
    """An event that does not apply to a job's status (the record is left unchanged)."""

    def __init__(self, status: JobStatus, what: object) -> None:
        super().__init__(f"a {status.value} job cannot take {what}")
        self.status = status


def job_step(status: JobStatus | str, event: JobEvent | str) -> JobStatus:
    """The status after ``event``; ``JobTransitionError`` when it does not apply."""
    status, event = JobStatus(status), JobEvent(event)
    nxt = TRANSITIONS.get((status, event))
    if nxt is None:
        raise JobTransitionError(status, f"event {event.value!r}")
    return nxt


def event_between(status: JobStatus | str, new: JobStatus | str) -> JobEvent:
    """The one event that moves ``status`` to ``new`` (``JobTransitionError`` if none does)."""
    status, new = JobStatus(status), JobStatus(new)
    ev = _EVENT_TO.get((status, new))
    if ev is None:
        raise JobTransitionError(status, f"status {new.value!r}")
    return ev
