"""What the lazy control listener's relay costs a control-API call (sidecar/api/lazy.py).

    python bench/bench_control_relay.py [--calls 2000] [--rounds 3]

One process: the gRPC control API on the embedded store bound directly (as before the
lazy listener), and the same API behind ``LazyControl`` (a plain listener relaying each
connection to the server on a private loopback port). One client channel each, sequential
unary ``Gate.Resolve`` calls (what an application's per-commit ``AdmitWrite`` costs is
the same shape), interleaved rounds; prints µs per call and the relay / direct ratio.
The first call through the lazy listener, which starts the server, is made before timing.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc  # noqa: E402

from gate import EmbeddedStore, PlacementTable  # noqa: E402
from gate.pb.epochgate.v1 import epochgate_pb2 as pb  # noqa: E402
from gate.pb.epochgate.v1 import epochgate_pb2_grpc as pb_grpc  # noqa: E402
from sidecar._loop import new_event_loop  # noqa: E402
from sidecar.api.lazy import LazyControl  # noqa: E402
from sidecar.api.start import start_control_server  # noqa: E402


async def _per_call(stub: pb_grpc.GateStub, n: int) -> float:
    req = pb.ResolveRequest(partition="t1")
    t0 = time.perf_counter()
    for _ in range(n):
        await stub.Resolve(req)
    return (time.perf_counter() - t0) / n * 1e6


async def main(calls: int, rounds: int) -> None:
    table = PlacementTable({"t1": "a"})
    store = EmbeddedStore(table, {"a": "http://127.0.0.1:9"})
    direct = await start_control_server("127.0.0.1:0", store=store, source=table)
    lazy = LazyControl("127.0.0.1:0", lambda addr: start_control_server(addr, store=store, source=table))
    port = await lazy.listen("127.0.0.1", 0)
    chans = {"direct": grpc.aio.insecure_channel(f"127.0.0.1:{direct.epochgate_port}"),
             "relay": grpc.aio.insecure_channel(f"127.0.0.1:{port}")}
    stubs = {k: pb_grpc.GateStub(ch) for k, ch in chans.items()}
    try:
        for stub in stubs.values():
            await _per_call(stub, 50)   # warm: channel up, the lazy server started
        got: dict[str, list[float]] = {"direct": [], "relay": []}
        for _ in range(rounds):
            for name, stub in stubs.items():
                got[name].append(await _per_call(stub, calls))
        d, r = min(got["direct"]), min(got["relay"])
        print(f"{calls} sequential Gate.Resolve calls x {rounds} rounds (best round)")
        print(f"direct gRPC server      {d:8.1f} µs/call   rounds: {', '.join(f'{x:.0f}' for x in got['direct'])}")
        print(f"through LazyControl     {r:8.1f} µs/call   rounds: {', '.join(f'{x:.0f}' for x in got['relay'])}")
        print(f"relay / direct: {r / d:.2f}x (+{r - d:.0f} µs per call)")
    finally:
        for ch in chans.values():
            await ch.close()
        await lazy.stop(0)
        await direct.stop(0)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(main(a.calls, a.rounds))
