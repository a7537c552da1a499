"""DESIGN §4.3 / the contract's "never applies past, nor acks, a log entry it could not parse" (issue 26
#12), on a real Consul agent through a real sidecar: a newer writer (a rolling upgrade) commits a cutover
entry this version cannot parse, then an entry it can. The participant must neither ack the cutover's
epoch nor admit a write — for any partition — until a fresh read parses; then it resumes on its own.

Before the fix the replica skipped the entry, applied the next one, and the participant acked an epoch
past the cutover without draining while it kept admitting writes at the draining epoch (INV-M1)."""

from __future__ import annotations

import json

import aiohttp
import pytest

from gate._consensus import put
from gate._consensus_store import HEAD, decode_head, log_key
from tests._sidecar_util import Upstream, consul_config, running_sidecar
from tests.test_sidecar_consul import until

pytestmark = pytest.mark.consul
LEASE = 3.0


async def test_unparseable_cutover_entry_is_neither_acked_nor_admitted_past(fresh_consul_agent, kv_prefix):
    up = await Upstream("a").start()
    cfg = consul_config(fresh_consul_agent.url, kv_prefix, node=(f"a={up.url}",), lease_seconds=LEASE)
    try:
        async with running_sidecar(cfg) as sc, aiohttp.ClientSession() as s:
            store, consensus = sc.store, sc.consensus
            await store.set("t1", "a")
            await store.set("t3", "a")
            draining = await store.begin("t1", "b")
            base = f"http://127.0.0.1:{sc.port}/kv/k"
            admin = f"http://127.0.0.1:{sc.admin_port}/metrics"

            async def write(p: str) -> tuple[int, bytes]:
                async with s.put(base, headers={"X-Partition-Key": p}, data=b"v") as r:
                    return r.status, await r.read()

            async def metric(name: str) -> float:
                async with s.get(admin) as r:
                    for line in (await r.text()).splitlines():
                        if line.startswith(name + " "):
                            return float(line.split()[1])
                return float("nan")

            async def write_ok() -> bool:
                return (await write("t1"))[0] == 200
            await until(write_ok, 15)    # admitted at the draining epoch: the baseline

            # The newer writer: one transaction, as ConsensusStore commits it, in a format this
            # version cannot parse (a field it does not know where it expects the state).
            head = await consensus.head(HEAD)
            seq = decode_head(head.value)[-1].seq + 1
            entry = json.dumps({"seq": seq, "p": "t1", "op": "enter_cutover", "v": 2,
                                "state2": {"phase": "cutover", "from": "a", "to": "b"}}).encode()
            cut = await consensus.txn([put("partitions/t1", b'{"v":2,"phase":"cutover"}'), put(HEAD, entry),
                                       put(log_key(seq), entry)])
            assert cut and cut > draining
            later = await store.set("t2", "a")   # an entry it can parse, after the one it cannot

            async def settled() -> bool:       # stopped, or (the bug) moved past the cutover
                return await metric("epochgate_replica_blocked") == 1 or await metric("epochgate_table_epoch") >= later
            await until(settled, 15)

            assert await metric("epochgate_table_epoch") < cut          # nothing applied past it
            for p in ("t1", "t3"):                                      # every partition refused
                status, body = await write(p)
                assert status == 503 and b'"reason":"fail_closed"' in body, (p, status, body)
            acks = await consensus.read_prefix("sidecars/")
            assert all(int(v.value) < cut for v in acks[0]), [(v.key, v.value) for v in acks[0]]  # no ack past it
            assert await metric("epochgate_fail_closed") == 1

            # It leaves the barrier once drained (so a barrier does not wait for an ack that cannot
            # come) and probes, without a session, for a read that parses.
            async def probing() -> bool:
                return sc.participant.probes >= 2 and sc.participant.session is None
            await until(probing, 15)
            assert (await write("t1"))[0] == 503 and await metric("epochgate_replica_blocked") == 1

            # Recovery: the value is rewritten in a format this version reads (here: the operator
            # sets the partition again). A fresh read parses; the sidecar admits writes again.
            await store.set("t1", "a")
            await until(write_ok, 30)
            assert await metric("epochgate_replica_blocked") == 0
            acks = await consensus.read_prefix("sidecars/")
            assert acks[0] and all(int(v.value) >= cut for v in acks[0])
    finally:
        await up.stop()
