"""The controller's process: ``python -m sidecar controller`` — its command line,
its admin endpoints (``/metrics``, ``/healthz``, ``/readyz``) and its life cycle
(the control API served by the leader and standbys alike, SIGTERM to stop).
The controller itself is ``controller.py``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from typing import Sequence

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gate import BackendError, ConfigError, failure_level, node_name, validate_url

from .._tokens import require_token_for, resolve_token
from .._ports import bind_error, check_free
from . import retention as retention
from .controller import Controller, log


async def start_admin(addr: str, controller: Controller) -> web.AppRunner:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(controller.metrics.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        return web.Response(text="leader\n" if controller.leading else "standby\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, _, port = addr.rpartition(":")
    try:
        await web.TCPSite(runner, host or "127.0.0.1", int(port)).start()
    except (OSError, ValueError) as exc:
        await runner.cleanup()
        raise bind_error("admin", addr, exc) from exc
    return runner


class _NeverAdmit:
    """The controller's Gate service: its replica is not a barrier participant, so it
    must never answer a commit-point admit (DESIGN §5 rule 6) — always fail closed."""

    def writable(self) -> bool:
        return False


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m sidecar controller",
                                 description="The epochgate migration controller (one leads; Consul lock).")
    ap.add_argument("--consul", default=os.environ.get("EPOCHGATE_CONSUL"), help="Consul URL (required)")
    ap.add_argument("--prefix", default=os.environ.get("EPOCHGATE_PREFIX", "epochgate/"),
                    help="Consul KV prefix (default epochgate/)")
    ap.add_argument("--control", default=os.environ.get("EPOCHGATE_CONTROL", "127.0.0.1:50051"), metavar="HOST:PORT",
                    help="gRPC control API (default 127.0.0.1:50051)")
    ap.add_argument("--admin", default=os.environ.get("EPOCHGATE_ADMIN", "127.0.0.1:9901"), metavar="HOST:PORT",
                    help="/metrics /healthz /readyz (default 127.0.0.1:9901)")
    ap.add_argument("--token", default=None,
                    help="bearer token the control API requires (env EPOCHGATE_TOKEN; prefer --token-file: "
                         "a flag shows in ps)")
    ap.add_argument("--token-file", default=None, metavar="FILE",
                    help="read the bearer token from FILE (env EPOCHGATE_TOKEN_FILE)")
    ap.add_argument("--consul-token",
                    default=os.environ.get("EPOCHGATE_CONSUL_TOKEN") or os.environ.get("CONSUL_HTTP_TOKEN"),
                    help="Consul ACL token (env EPOCHGATE_CONSUL_TOKEN, as the sidecar's; else CONSUL_HTTP_TOKEN)")
    ap.add_argument("--cutover-deadline", type=float, default=float(os.environ.get("EPOCHGATE_CUTOVER_DEADLINE", 10)),
                    metavar="S", help="abort a job whose barrier has not passed after S seconds (default 10)")
    ap.add_argument("--prebarrier-deadline", type=float,
                    default=float(os.environ.get("EPOCHGATE_PREBARRIER_DEADLINE", 30)), metavar="S",
                    help="while draining, wait up to S seconds for every participant to ack or drop out "
                         "before entering cutover; 0 turns it off (default 30)")
    ap.add_argument("--node", action="append", default=[], metavar="NAME=URL", help="a node's URL (repeatable)")
    ap.add_argument("--log-level", default="INFO")
    ap.add_argument("--log-format", choices=("text", "json"), default=os.environ.get("EPOCHGATE_LOG_FORMAT", "text"),
                    help="event log lines, as the sidecar's (default text)")
    ap.add_argument("--trace-otlp-endpoint", default=os.environ.get("EPOCHGATE_TRACE_OTLP_ENDPOINT"), metavar="URL",
                    help="export a trace per job over OTLP/HTTP to URL (default off; the [otel] extra; docs/tracing.md)")
    retention.add_arguments(ap)
    args = ap.parse_args(list(argv))
    if not args.consul:
        ap.error("--consul URL is required")
    return args


async def _amain(args: argparse.Namespace) -> int:
    from ..api.start import start_control_server

    nodes = {}
    for item in args.node:
        name, sep, url = item.partition("=")
        if not sep:
            raise ConfigError("node", f"expected NAME=URL, got {item!r}")
        nodes[node_name(name)] = validate_url(url, f"node.{name}")
    validate_url(args.consul, "consul")
    if args.prebarrier_deadline < 0:
        raise ConfigError("prebarrier_deadline", f"must be >= 0 seconds, got {args.prebarrier_deadline!r}")
    token = resolve_token(args.token, args.token_file, os.environ)
    require_token_for(args.control, token)  # before anything starts: a refused bind leaves nothing behind
    check_free("control", args.control)     # a taken port: that line first and alone (issue 27)
    check_free("admin", args.admin)
    ctl = Controller(args.consul, args.prefix, token=args.consul_token, deadline_s=args.cutover_deadline,
                     extra_nodes=nodes, prebarrier_s=args.prebarrier_deadline,
                     retention=retention.from_args(args))
    processor = None
    if args.trace_otlp_endpoint:
        from ..trace.jobs import open_job_tracing

        ctl.job_tracer, processor = open_job_tracing(args.trace_otlp_endpoint, ctl.owner)
    await ctl.start()
    try:
        await ctl.replica.start()
    except BackendError as exc:
        log.log(failure_level(exc), "controller: replica not started yet: %s", exc)
    server = await start_control_server(args.control, store=ctl.store, source=ctl.replica, gate=_NeverAdmit(),
                                        jobs=ctl, token=token, extra_nodes=nodes, fleet=ctl.hub)
    admin = await start_admin(args.admin, ctl)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("controller %s: control %s, admin %s", ctl.owner, args.control, args.admin)
    try:
        await stop.wait()
    finally:
        await server.stop(1.0)
        await admin.cleanup()
        await ctl.stop()
        if processor is not None:  # export the last jobs' traces (blocking HTTP: off the loop)
            await asyncio.to_thread(processor.shutdown)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(argv or [])
    if argv and argv[0] == "controller":
        argv = argv[1:]
    args = _parse(argv)
    from .._log import setup_logging

    setup_logging(args.log_format)   # the sidecar's event-log format (text or JSON lines)
    logging.getLogger("epochgate").setLevel(args.log_level.upper())
    try:
        return asyncio.run(_amain(args))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
