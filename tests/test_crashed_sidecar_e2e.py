"""A crashed sidecar costs no client an error (DESIGN §5, §6; issue 22).

Three sidecars on Consul, writers through two of them, 20 migrations back and forth;
after the 10th the third sidecar is SIGKILLed and not restarted. Its session lives on
in Consul until the TTL runs out (up to about 2×TTL). The next migration's pre-barrier
waits it out while the partition is still draining — writes flowing — so it never
reaches a cutover: every migration completes, no client sees an error, and the cutover
windows after the kill are as short as before it (printed; no timed assert).
Run with ``-s`` to see the figures.
"""

from __future__ import annotations

import asyncio
import statistics

import aiohttp
import pytest

from ._fleet import ControlClient, check_invariants, job_dicts, stop_writers
from .test_migrations_e2e import Writers, _setup

pytestmark = [pytest.mark.consul, pytest.mark.slow]


def _window(job) -> float:
    at = {p.phase: p.at for p in job.phases}
    return at["completed"] - at["cutover"]


async def test_sidecar_killed_and_not_restarted_costs_no_error(consul_agent, kv_prefix, tmp_path):
    fleet, consensus, store, nodes, sidecars, initial = await _setup(consul_agent, kv_prefix, tmp_path)
    ctl = await fleet.controller("c1", deadline_s=10.0)
    client = ControlClient(ctl.info["control"])
    writers, tasks = Writers(), []
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=40)) as http:
            for i in (0, 1):
                for k in range(2):
                    tasks.append(asyncio.create_task(
                        writers.run(f"w{i}{k}", lambda i=i: sidecars[i], ["t1", "t2"], http)))
            await asyncio.sleep(0.5)
            where = {"t1": "a", "t2": "b"}
            done = []
            for i in range(20):
                if i == 10:
                    sidecars[2].kill()   # not restarted
                p = "t1" if i % 2 else "t2"
                to = "b" if where[p] == "a" else "a"
                job = await client.migrate(p, to, timeout_s=90)
                assert job.status == "completed", (i, job.status, job.error)
                where[p] = to
                done.append(job)
            await asyncio.sleep(0.5)
            await writers.stop_and_check(tasks, http, sidecars[0])
        before, after = [_window(j) for j in done[:10]], [_window(j) for j in done[10:]]
        print(f"\ncutover window before the kill: p50 {statistics.median(before) * 1000:.1f} ms, "
              f"max {max(before) * 1000:.1f} ms; after: p50 {statistics.median(after) * 1000:.1f} ms, "
              f"max {max(after) * 1000:.1f} ms; acked writes {len(writers.acked)}, client errors 0")
        errors = check_invariants(fleet.commits(*nodes), await job_dicts(consul_agent.url, kv_prefix), initial)
        assert not errors, errors[:10]
    finally:
        await stop_writers(writers, tasks)
        await client.close()
        fleet.stop()
        await consensus.close()
