"""The embedded-replica app (DESIGN §5 rule 6): an aiohttp app whose commit-point
admit answers in-process from a barrier ``Participant`` (session, ack, lease)
over a real Consul agent.

* A write admitted at its commit point holds the participant's cutover ack
  until it has committed (the LocalAdmitter counts it in flight).
* Cut off from Consul (a TCP relay between the app and the agent stops
  forwarding; the test's controller still reaches the agent directly), the app
  refuses commits while its ``sidecars/<id>`` key is still held — i.e. before a
  controller could pass the barrier without it — and keeps refusing after the
  session expired and the barrier would pass.
"""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import pytest

from gate import ConsulConsensus, InflightTracker, LocalAdmitter, Replica
from gate._consul_consensus import open_consul
from gate._participant import Participant
from tests._appgate_apps import KV, start_aiohttp

pytestmark = pytest.mark.consul


class CutRelay:
    """A loopback TCP relay to Consul that can be cut (bytes silently dropped,
    like a network partition: requests hang until their timeouts) and healed."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.cut = False
        self._tasks: set[asyncio.Task] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_w}
        pumps = [asyncio.create_task(self._pump(reader, up_w)), asyncio.create_task(self._pump(up_r, writer))]
        self._tasks.update(pumps)
        await asyncio.gather(*pumps, return_exceptions=True)
        for w in (writer, up_w):
            w.close()
            self._writers.discard(w)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                if not self.cut:
                    dst.write(data)
                    await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                dst.close()

    async def close(self) -> None:
        self.server.close()
        for w in list(self._writers):
            w.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.server.wait_closed()


async def _key(http: aiohttp.ClientSession, consul_url: str, key: str) -> int | None:
    """``sidecars/<id>``'s acked epoch read straight from Consul (None: gone)."""
    async with http.get(f"{consul_url}/v1/kv/{key}", params={"raw": ""}) as resp:
        if resp.status == 404:
            return None
        assert resp.status == 200
        return int(await resp.text())


async def _eventually(pred, timeout: float, what: str, every: float = 0.05):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        got = await pred()
        if got:
            return got
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(every)


@pytest.fixture
async def embedded(consul_agent, kv_prefix, tmp_path):
    """Controller-side store (direct to Consul) + the app with its participant (through the relay)."""
    ctl_consensus, store, _ = await open_consul(consul_agent.url, kv_prefix)
    relay = CutRelay(int(consul_agent.url.rsplit(":", 1)[1]))
    relay_url = await relay.start()
    app_consensus = ConsulConsensus(relay_url, kv_prefix, timeout_s=2.0)
    tracker = InflightTracker()
    participant: Participant | None = None

    def replica() -> Replica:
        return Replica(app_consensus, wait_s=participant.wait_s)

    participant = Participant(relay_url, kv_prefix, participant_id="app1", replica_factory=replica,
                              tracker=tracker, ttl_s=10.0, lease_s=2.0)
    await store.set("t1", "a")
    await participant.start(wait_joined_s=15)
    kv = KV(tmp_path / "kv.sqlite")
    runner, url = await start_aiohttp(kv, LocalAdmitter(participant))
    http = aiohttp.ClientSession()
    try:
        yield {"store": store, "participant": participant, "relay": relay, "kv": kv, "url": url, "http": http,
               "consul": consul_agent.url, "key": f"{kv_prefix}sidecars/app1", "tracker": tracker}
    finally:
        await http.close()
        await runner.cleanup()
        kv.close()
        relay.cut = False
        await participant.stop()
        await relay.close()
        await app_consensus.close()
        await ctl_consensus.close()


async def _put(env, value: str, epoch: int) -> tuple[int, dict]:
    headers = {"X-Partition": "t1", "X-Placement-Epoch": str(int(epoch))}
    async with env["http"].put(f"{env['url']}/kv/k", data=value, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_write_admitted_at_commit_point_holds_the_cutover_ack(embedded):
    env, store, part, kv = embedded, embedded["store"], embedded["participant"], embedded["kv"]
    e_drain = await store.begin("t1", "b")
    await _eventually(lambda: _async(part.current_epoch() >= e_drain), 10, "replica applied draining")
    kv.pause_in_guard = asyncio.Event()
    write = asyncio.create_task(_put(env, "in-flight", e_drain))
    await asyncio.wait_for(kv.paused.wait(), 10)  # admitted at the commit point, COMMIT not yet run
    assert env["tracker"].count("t1") == 1

    e_cut = await store.enter_cutover("t1")
    await _eventually(lambda: _async(part.current_epoch() >= e_cut), 10, "replica applied cutover")
    # The participant has seen the cutover but must not ack while our write is in flight.
    assert part.published < e_cut
    assert await _key(env["http"], env["consul"], env["key"]) < e_cut
    # Meanwhile a new commit-point admit is refused (cutover) and leaves no in-flight count.
    refused = LocalAdmitter(part).admit("t1", e_drain)
    assert not refused and refused.reason.value == "cutover"
    assert env["tracker"].count("t1") == 1

    kv.pause_in_guard.set()
    status, body = await write
    assert status == 200, body
    acked = await _eventually(
        lambda: _async_val(_key(env["http"], env["consul"], env["key"]), lambda v: v is not None and v >= e_cut),
        10, "the ack after the in-flight write committed")
    assert acked >= e_cut
    assert [r[2] for r in kv.rows()] == ["in-flight"]
    assert env["tracker"].count() == 0


async def test_cut_off_from_consul_refuses_commits_before_the_barrier_can_pass(embedded):
    env, store, part, kv = embedded, embedded["store"], embedded["participant"], embedded["kv"]
    http, consul, key = env["http"], env["consul"], env["key"]
    epoch = int((await store.state("t1"))[1])
    status, body = await _put(env, "before", epoch)
    assert status == 200, body

    env["relay"].cut = True
    refused_while_key_held = None

    async def refused() -> bool:
        nonlocal refused_while_key_held
        status, body = await _put(env, "during-cut", epoch)
        if status == 200:
            return False
        assert status == 503 and body["reason"] == "fail_closed", body
        refused_while_key_held = await _key(http, consul, key) is not None
        return True

    await _eventually(refused, 10, "the cut-off app to refuse commits", every=0.1)
    # Writes before the first refusal may commit (the lease had not run out yet);
    # from the first refusal on, nothing commits until the participant rejoins.
    rows_at_refusal = kv.rows()
    # The first refusal came while the participant's key was still held: the
    # barrier could not yet have passed without this app.
    assert refused_while_key_held is True

    # The controller moves on: cutover at E; its barrier waits for app1 (no ack possible).
    await store.begin("t1", "b")
    e_cut = await store.enter_cutover("t1")
    assert (await _key(http, consul, key) or 0) < e_cut
    # Consul expires the session between TTL and 2×TTL; then the barrier passes.
    await _eventually(lambda: _async_val(_key(http, consul, key), lambda v: v is None), 35,
                      "the cut-off participant's session to expire", every=0.25)
    status, body = await _put(env, "after-barrier", epoch)
    assert status == 503 and body["reason"] == "fail_closed"
    assert kv.rows() == rows_at_refusal

    # Healed: the participant rejoins (new session, fresh read) and follows the table again.
    env["relay"].cut = False
    e_done = await store.complete("t1")
    await _eventually(lambda: _async(part.writable() and part.current_epoch() >= e_done), 20, "rejoin")
    status, body = await _put(env, "healed", e_done)
    assert status == 200, body
    assert kv.rows() == rows_at_refusal + [("t1", "k", "healed")]


async def _async(value):
    return value


async def _async_val(coro, pred):
    v = await coro
    return True if pred(v) and v is None else (v if pred(v) else False)
