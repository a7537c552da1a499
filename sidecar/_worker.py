"""A ``--workers`` worker process: ``python -m sidecar._worker FD`` (started by
``_supervisor``; not an operator command).

Serves the proxy listener (SO_REUSEPORT) only. Embedded store: its table is a
copy fed by the parent over the socketpair ``FD`` — a snapshot, then every
change in order; each is acked after it is applied, a cutover only after the
writes this worker admitted at older epochs of that partition finished.
Consul: it runs its own replica and barrier participant instead.
SIGTERM drains like a single sidecar; the parent going away stops it too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import socket
import sys

from gate import Phase, PartitionState, PlacementTable

from ._admin import refresh_metrics
from ._config import SidecarConfig
from ._fanout import state_from_wire
from ._log import setup_logging
from ._loop import settle_heap
from ._sidecar import Sidecar


def _families(sc: Sidecar) -> list:
    refresh_metrics(sc.metrics, sc.stats, sc.source, sc.gate, sc.tracker)
    out = []
    for fam in sc.metrics.registry.collect():
        out.append([fam.name, fam.type, fam.documentation, [[s.name, s.labels, s.value] for s in fam.samples]])
    return out


async def _serve(cfg: SidecarConfig, fd: int) -> None:
    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_connection(sock=sock)

    def send(msg: dict) -> None:
        writer.write(json.dumps(msg).encode() + b"\n")

    table = None
    if cfg.consul is None:
        first = json.loads(await reader.readline())
        assert first["op"] == "snapshot", first
        table = PlacementTable()
        table.replace({p: (PartitionState.from_dict(s), e) for p, (s, e) in first["partitions"].items()},
                      first["epoch"])
        cfg = dataclasses.replace(cfg, node=tuple(f"{k}={v}" for k, v in first["nodes"].items()))
    sc = Sidecar(cfg, proxy=True, admin_control=False, table=table, reuse_port=True)
    await sc.start()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, sc.request_stop)
    loop.add_signal_handler(signal.SIGINT, sc.request_stop)
    loop.add_signal_handler(signal.SIGHUP, lambda: None)  # the parent owns the placement file
    settle_heap()
    send({"op": "ready", "pid": os.getpid(), "port": sc.port})

    async def channel() -> None:
        while True:
            line = await reader.readline()
            if not line:
                sc.request_stop()  # the parent is gone
                return
            msg = json.loads(line)
            op = msg["op"]
            if op == "apply":
                state = state_from_wire(msg["state"])
                epoch = msg["epoch"]
                table.apply(msg["p"], state, epoch)
                drained = True   # a worker that cannot drain says so: the cutover must not count
                if state is not None and state.phase is Phase.CUTOVER:
                    drained = await sc.tracker.wait_drained(msg["p"], epoch, cfg.drain_seconds)
                send({"op": "ack", "epoch": epoch, "drained": drained})
            elif op == "nodes":
                sc.ctx.set_nodes(msg["nodes"])
            elif op == "metrics":
                send({"op": "metrics", "families": _families(sc)})

    task = loop.create_task(channel())
    try:
        await sc.run()
    finally:
        task.cancel()
        writer.close()


def main() -> int:
    fd = int(sys.argv[1])
    cfg = SidecarConfig.from_json(os.environ["EPOCHGATE_WORKER_CONFIG"])
    setup_logging(cfg.log_format)
    from ._loop import new_event_loop

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(_serve(cfg, fd))
    return 0


if __name__ == "__main__":
    sys.exit(main())
