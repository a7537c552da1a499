"""Writers resolve-then-admit on threads while another thread runs random migrations.

Each transition is recorded with the epoch it stamped; afterwards every admitted
write is checked against that record: none admitted in cutover (INV-M1), none
admitted at a superseded epoch (INV-M2).
"""

import random
import threading

from gate import Admit, PlacementTable

PARTS = [f"p{i}" for i in range(4)]


def test_concurrent_admits_never_cross_a_transition():
    table = PlacementTable({p: "a" for p in PARTS})
    stop = threading.Event()
    # epoch → (partition, phase) stamped by that transition; written by the migrator only.
    stamped: dict[int, tuple[str, str]] = {int(table.get(p).epoch): (p, "active") for p in PARTS}
    # per partition: sorted epochs of its transitions (to find the next one after an admit)
    transitions: dict[str, list[int]] = {p: [int(table.get(p).epoch)] for p in PARTS}
    admitted: list[tuple[str, int, int]] = []  # (partition, epoch, table epoch seen just before admit)
    lock = threading.Lock()

    def migrator():
        rnd = random.Random(1)
        nodes = ["a", "b", "c"]
        while not stop.is_set():
            p = rnd.choice(PARTS)
            st, _ = table.state(p)
            target = rnd.choice([n for n in nodes if n != st.source])
            for fn, phase in ((lambda: table.begin_migration(p, target), "draining"),
                              (lambda: table.enter_cutover(p), "cutover"),
                              ((lambda: table.complete_migration(p)) if rnd.random() < 0.7
                               else (lambda: table.abort_migration(p)), "active")):
                with lock:
                    e = int(fn())
                    stamped[e] = (p, phase)
                    transitions[p].append(e)

    def writer(seed):
        rnd = random.Random(seed)
        local = []
        for _ in range(30_000):
            p = rnd.choice(PARTS)
            at = table.get(p)
            before_admit = int(table.current_epoch())
            if isinstance(table.admit_write(p, at.epoch), Admit):
                local.append((p, int(at.epoch), before_admit))
        with lock:
            admitted.extend(local)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(3)]
    m = threading.Thread(target=migrator)
    m.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    m.join()

    assert len(admitted) > 1000
    assert sum(len(v) for v in transitions.values()) > 30, "the migrator must have raced the writers"
    for p, epoch, before_admit in admitted:
        assert stamped[epoch][0] == p
        # INV-M1: the epoch a write was admitted at is never a cutover epoch.
        assert stamped[epoch][1] != "cutover"
        # INV-M2: at admission the partition's epoch was still `epoch`: any later
        # transition of p was published after the admit began, so its epoch is
        # above the table epoch read just before the admit call.
        later = [e for e in transitions[p] if e > epoch]
        assert not later or later[0] > before_admit
