"""PlacementTable against a simple model, with the invariants checked after every step.

The model is a dict of (phase, from, to) plus a write log; "committing" a write
means: resolve with ``get`` at some point, then ``admit_write`` later, and the
write commits only if admitted. INV-M1..M4 are asserted on what committed.
"""

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gate import Admit, Epoch, MigrationError, Phase, PlacementTable, Reject, RejectReason

NODES = ["a", "b", "c"]
PARTS = ["p1", "p2"]


class TableModel(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.table = PlacementTable()
        self.model: dict[str, tuple[Phase, str, str | None]] = {}
        self.last_epoch = Epoch.ZERO
        self.resolved: list[tuple[str, str, int]] = []  # writes resolved, not yet admitted
        self.committed: list[dict] = []  # writes admitted
        # per partition: epoch → state at that epoch (to audit commits)
        self.history: dict[str, dict[int, tuple[Phase, str, str | None]]] = {p: {} for p in PARTS}
        self.aborted_targets: list[tuple[str, str, int, int]] = []  # (p, to, begin_epoch, abort_epoch)
        self.begun: dict[str, int] = {}

    def _transitioned(self, p, epoch, new):
        assert epoch > self.last_epoch, "epochs strictly increase"
        self.last_epoch = epoch
        self.model[p] = new
        self.history[p][int(epoch)] = new
        assert self.table.current_epoch() == epoch

    def _expect_refusal(self, p, fn, *args):
        before = (self.table.state(p), self.table.current_epoch())
        try:
            fn(p, *args)
        except MigrationError:
            assert (self.table.state(p), self.table.current_epoch()) == before, "a refusal changes nothing"
            return True
        return False

    @rule(p=st.sampled_from(PARTS), n=st.sampled_from(NODES))
    def set(self, p, n):
        e = self.table.set(p, n)
        self._transitioned(p, e, (Phase.ACTIVE, n, None))
        self.begun.pop(p, None)

    @rule(p=st.sampled_from(PARTS), n=st.sampled_from(NODES))
    def begin(self, p, n):
        m = self.model.get(p)
        if m is None or m[0] is not Phase.ACTIVE or m[1] == n:
            assert self._expect_refusal(p, self.table.begin_migration, n)
            return
        e = self.table.begin_migration(p, n)
        self._transitioned(p, e, (Phase.DRAINING, m[1], n))
        self.begun[p] = int(e)

    @rule(p=st.sampled_from(PARTS))
    def cutover(self, p):
        m = self.model.get(p)
        if m is None or m[0] is not Phase.DRAINING:
            assert self._expect_refusal(p, self.table.enter_cutover)
            return
        e = self.table.enter_cutover(p)
        self._transitioned(p, e, (Phase.CUTOVER, m[1], m[2]))

    @rule(p=st.sampled_from(PARTS))
    def complete(self, p):
        m = self.model.get(p)
        if m is None or m[0] is not Phase.CUTOVER:
            assert self._expect_refusal(p, self.table.complete_migration)
            return
        e = self.table.complete_migration(p)
        self._transitioned(p, e, (Phase.ACTIVE, m[2], None))
        self.begun.pop(p, None)

    @rule(p=st.sampled_from(PARTS))
    def abort(self, p):
        m = self.model.get(p)
        if m is None or m[0] is Phase.ACTIVE:
            assert self._expect_refusal(p, self.table.abort_migration)
            return
        e = self.table.abort_migration(p)
        self._transitioned(p, e, (Phase.ACTIVE, m[1], None))
        self.aborted_targets.append((p, m[2], self.begun.pop(p), int(e)))

    @rule(p=st.sampled_from(PARTS))
    def resolve(self, p):
        at = self.table.lookup(p)
        if p not in self.model:
            assert at is None
            return
        self.resolved.append((p, at.placement, int(at.epoch)))

    @precondition(lambda self: self.resolved)
    @rule(i=st.integers(min_value=0))
    def admit(self, i):
        p, placement, epoch = self.resolved.pop(i % len(self.resolved))
        decision = self.table.admit_write(p, Epoch(epoch))
        m = self.model[p]
        cur_epoch = max(self.history[p])
        if m[0] is Phase.CUTOVER:
            assert isinstance(decision, Reject) and decision.reason is RejectReason.CUTOVER
        elif epoch != cur_epoch:
            assert isinstance(decision, Reject) and decision.reason is RejectReason.STALE_EPOCH
        else:
            assert isinstance(decision, Admit)
        if isinstance(decision, Reject):
            assert decision.current == self.table.get(p)
            return
        self.committed.append({"p": p, "node": placement, "epoch": epoch, "state": m, "at": int(self.last_epoch)})

    @invariant()
    def inv_m1_no_commit_in_cutover(self):
        for w in self.committed:
            assert w["state"][0] is not Phase.CUTOVER

    @invariant()
    def inv_m2_no_commit_on_superseded_placement(self):
        # A committed write was resolved at the partition's epoch in force when it
        # committed, so its node is the read placement of that state.
        for w in self.committed:
            assert w["node"] == w["state"][1]
            assert self.history[w["p"]][w["epoch"]] == w["state"]

    @invariant()
    def inv_m3_abort_needs_no_rollback(self):
        for p, to, begin_e, abort_e in self.aborted_targets:
            for w in self.committed:
                if w["p"] == p and begin_e <= w["epoch"] <= abort_e:
                    assert w["node"] != to

    @invariant()
    def inv_m4_one_read_placement_per_epoch(self):
        for p, m in self.model.items():
            at = self.table.get(p)
            assert at.placement == m[1]  # from until the flip
            assert self.table.state(p)[1] == at.epoch == max(self.history[p])


TableModel.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestTableModel = TableModel.TestCase
