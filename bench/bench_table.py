"""get + admit_write pairs per second on PlacementTable, against a plain dict lookup.

    python bench/bench_table.py [--seconds S] [--partitions N]

Prints pairs/s on one thread and with 2 threads contending (a third thread
running migrations on other partitions), and the same for the baseline (two
dict lookups + an int compare) measured in the same run. The ratio is the
figure that means something on a shared, noisy machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from gate import PlacementTable  # noqa: E402


def table_loop(table: PlacementTable, keys: list[str], n: int) -> None:
    get, admit = table.get, table.admit_write
    for i in range(n):
        p = keys[i & 1023]
        at = get(p)
        admit(p, at.epoch)


def dict_loop(d: dict, keys: list[str], n: int) -> None:
    get = d.get
    for i in range(n):
        p = keys[i & 1023]
        e = get(p)
        get(p) == e  # noqa: B015  (the compare admit_write makes)


def rate(fn, n: int, threads: int) -> float:
    ts = [threading.Thread(target=fn, args=(n,)) for _ in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return n * threads / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=2_000_000)
    ap.add_argument("--partitions", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    table = PlacementTable({f"p{i}": "a" for i in range(a.partitions)})
    keys = [f"p{i * 7 % a.partitions}" for i in range(1024)]
    plain = {k: 1 for k in table.partitions()}

    stop = threading.Event()

    def migrator():  # contention: transitions on other partitions take the writer lock
        i = 0
        while not stop.is_set():
            p = f"p{a.partitions - 1 - (i % 10)}"
            table.begin_migration(p, "b")
            table.abort_migration(p)
            i += 1
            time.sleep(0.0005)

    print(f"python {sys.version.split()[0]}, {a.partitions} partitions, best of {a.rounds} rounds of {a.pairs:,} pairs")
    for threads in (1, 2):
        best_t = max(rate(lambda n: table_loop(table, keys, n), a.pairs // threads, threads) for _ in range(a.rounds))
        best_d = max(rate(lambda n: dict_loop(plain, keys, n), a.pairs // threads, threads) for _ in range(a.rounds))
        print(f"{threads} thread(s): table get+admit_write {best_t:>12,.0f} pairs/s | dict baseline {best_d:>12,.0f}/s"
              f" | table/dict = {best_t / best_d:.2f}")
    m = threading.Thread(target=migrator)
    m.start()
    try:
        best_t = max(rate(lambda n: table_loop(table, keys, n), a.pairs // 2, 2) for _ in range(a.rounds))
    finally:
        stop.set()
        m.join()
    print(f"2 threads + migrating thread: table get+admit_write {best_t:>12,.0f} pairs/s")


if __name__ == "__main__":
    main()
