"""The state machine, exhaustively: every (state, operation) pair (DESIGN §3)."""

import itertools

import pytest

from gate import (
    AlreadyMigrating,
    MigrationError,
    NoOpMove,
    NotCutover,
    NotDraining,
    NotMigrating,
    Op,
    PartitionState,
    Phase,
    UnknownPartition,
    step,
)
from gate._machine import TABLE

A, B, C = "a", "b", "c"

STATES = {
    "unknown": None,
    "active(a)": PartitionState.active(A),
    "draining(a→b)": PartitionState.draining(A, B),
    "cutover(a→b)": PartitionState.cutover(A, B),
}
# a split of slot-0 (N = 1) with the new half on b (DESIGN §12.2)
INTO = (("slot-0-of-2", A), ("slot-1-of-2", B))
STATES["resharding(a→into)"] = PartitionState(Phase.DRAINING, A, B, INTO)
STATES["reshard-cutover(a→into)"] = PartitionState(Phase.CUTOVER, A, B, INTO)

# Written out by hand from DESIGN §3, independently of gate/_machine.py.
# (state, op, node) → expected new state or exception type.
EXPECTED = {
    ("unknown", Op.SET, C): PartitionState.active(C),
    ("unknown", Op.BEGIN, B): UnknownPartition,
    ("unknown", Op.ENTER_CUTOVER, None): UnknownPartition,
    ("unknown", Op.COMPLETE, None): UnknownPartition,
    ("unknown", Op.ABORT, None): UnknownPartition,
    ("active(a)", Op.SET, C): PartitionState.active(C),
    ("active(a)", Op.BEGIN, B): PartitionState.draining(A, B),
    ("active(a)", Op.ENTER_CUTOVER, None): NotMigrating,
    ("active(a)", Op.COMPLETE, None): NotMigrating,
    ("active(a)", Op.ABORT, None): NotMigrating,
    ("draining(a→b)", Op.SET, C): PartitionState.active(C),
    ("draining(a→b)", Op.BEGIN, C): AlreadyMigrating,
    ("draining(a→b)", Op.ENTER_CUTOVER, None): PartitionState.cutover(A, B),
    ("draining(a→b)", Op.COMPLETE, None): NotCutover,
    ("draining(a→b)", Op.ABORT, None): PartitionState.active(A),
    ("cutover(a→b)", Op.SET, C): PartitionState.active(C),
    ("cutover(a→b)", Op.BEGIN, C): AlreadyMigrating,
    ("cutover(a→b)", Op.ENTER_CUTOVER, None): NotDraining,
    ("cutover(a→b)", Op.COMPLETE, None): PartitionState.active(B),
    ("cutover(a→b)", Op.ABORT, None): PartitionState.active(A),
    # DESIGN §12.2: the reshard operations, and the move's operations on a resharding slot
    ("unknown", Op.BEGIN_RESHARD, INTO): UnknownPartition,
    ("unknown", Op.COMPLETE_RESHARD, None): UnknownPartition,
    ("active(a)", Op.BEGIN_RESHARD, INTO): PartitionState(Phase.DRAINING, A, B, INTO),
    ("active(a)", Op.COMPLETE_RESHARD, None): NotMigrating,
    ("draining(a→b)", Op.BEGIN_RESHARD, INTO): AlreadyMigrating,
    ("draining(a→b)", Op.COMPLETE_RESHARD, None): NotCutover,
    ("cutover(a→b)", Op.BEGIN_RESHARD, INTO): AlreadyMigrating,
    ("cutover(a→b)", Op.COMPLETE_RESHARD, None): NotMigrating,     # a move is not finished as a reshard
    ("resharding(a→into)", Op.SET, C): PartitionState.active(C),
    ("resharding(a→into)", Op.BEGIN, C): AlreadyMigrating,
    ("resharding(a→into)", Op.ENTER_CUTOVER, None): PartitionState(Phase.CUTOVER, A, B, INTO),
    ("resharding(a→into)", Op.COMPLETE, None): NotCutover,
    ("resharding(a→into)", Op.ABORT, None): PartitionState.active(A),
    ("resharding(a→into)", Op.BEGIN_RESHARD, INTO): AlreadyMigrating,
    ("resharding(a→into)", Op.COMPLETE_RESHARD, None): NotCutover,
    ("reshard-cutover(a→into)", Op.SET, C): PartitionState.active(C),
    ("reshard-cutover(a→into)", Op.BEGIN, C): AlreadyMigrating,
    ("reshard-cutover(a→into)", Op.ENTER_CUTOVER, None): NotDraining,
    ("reshard-cutover(a→into)", Op.COMPLETE, None): NotMigrating,  # nor a reshard as a move
    ("reshard-cutover(a→into)", Op.ABORT, None): PartitionState.active(A),
    ("reshard-cutover(a→into)", Op.BEGIN_RESHARD, INTO): AlreadyMigrating,
    # the flip applies; the store removes the slot and adds INTO (the step returns it unchanged)
    ("reshard-cutover(a→into)", Op.COMPLETE_RESHARD, None): PartitionState(Phase.CUTOVER, A, B, INTO),
}


def test_expected_covers_every_pair():
    assert {(s, op) for s, op, _ in EXPECTED} == set(itertools.product(STATES, Op))


def test_table_is_total():
    phases = [None, *Phase]
    assert set(TABLE) == set(itertools.product(phases, Op))


@pytest.mark.parametrize(("state", "op", "node"), list(EXPECTED))
def test_every_state_operation_pair(state, op, node):
    expected = EXPECTED[(state, op, node)]
    before = STATES[state]
    arg = {"into": node} if op is Op.BEGIN_RESHARD else {"node": node}
    if isinstance(expected, type):
        with pytest.raises(expected) as info:
            step("p1", before, op, **arg)
        assert isinstance(info.value, MigrationError)
        assert info.value.partition == "p1"
        assert "p1" in str(info.value)
    else:
        assert step("p1", before, op, **arg) == expected


def test_an_in_place_reshard_keeps_its_node_as_target_and_round_trips():
    into = (("slot-0-of-2", A), ("slot-1-of-2", A))
    s = step("slot-0", PartitionState.active(A), Op.BEGIN_RESHARD, into=into)
    assert (s.target, s.into) == (A, into) and PartitionState.from_dict(s.to_dict()) == s
    with pytest.raises(ValueError):
        step("slot-0", PartitionState.active(A), Op.BEGIN_RESHARD, into=())


def test_begin_to_own_node_is_a_refused_no_op():
    with pytest.raises(NoOpMove):
        step("p1", PartitionState.active(A), Op.BEGIN, A)


@pytest.mark.parametrize("op", [Op.SET, Op.BEGIN])
def test_operations_that_need_a_node_refuse_without_one(op):
    with pytest.raises(ValueError):
        step("p1", PartitionState.active(A), op, None)


def test_step_is_pure():
    s = PartitionState.draining(A, B)
    step("p1", s, Op.ENTER_CUTOVER)
    assert s == PartitionState.draining(A, B)


def test_partition_state_validates_itself():
    with pytest.raises(ValueError):
        PartitionState(Phase.ACTIVE, A, B)
    with pytest.raises(ValueError):
        PartitionState(Phase.DRAINING, A, None)
    with pytest.raises(ValueError):
        PartitionState(Phase.CUTOVER, A, A)


@pytest.mark.parametrize("state", [s for s in STATES.values() if s is not None])
def test_state_dict_round_trip(state):
    assert PartitionState.from_dict(state.to_dict()) == state


@pytest.mark.parametrize("bad", [None, [], {}, {"phase": "active"}, {"phase": "gone", "from": "a"},
                                 {"phase": "active", "from": "a", "to": "b"}, {"phase": "draining", "from": "a"},
                                 {"phase": "active", "from": ""}, {"phase": "active", "from": 3}])
def test_state_from_malformed_dict_is_a_value_error(bad):
    with pytest.raises(ValueError):
        PartitionState.from_dict(bad)
