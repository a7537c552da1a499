"""``python -m examples.kv --node NAME --listen HOST:PORT --data DIR [--consul URL | --gate HOST:PORT]``

With ``--gate`` (the default, at ``127.0.0.1:50051``) the commit-point admit
asks the node's sidecar over its ``epochgate.v1.Gate`` gRPC API. With
``--consul`` the app embeds its own replica of the placement table and a
barrier participant (DESIGN §5 rule 6), and admits in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any, Sequence

from aiohttp import web

from gate import AdmitClient, ConfigError, ConsulHTTP, MoverAuth, mover_token_from_env, node_name, open_participant, read_mover_token

from ._app import build_app


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m examples.kv", description="epochgate example key-value node")
    p.add_argument("--node", required=True, help="this node's name (as in the placement table)")
    p.add_argument("--listen", required=True, metavar="HOST:PORT", help="HTTP listener (port 0 picks one)")
    p.add_argument("--data", required=True, metavar="DIR", help="holds kv.sqlite and commits.jsonl")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--gate", metavar="HOST:PORT",
                      help="the sidecar's control API answering AdmitWrite (default: EPOCHGATE_CONTROL or 127.0.0.1:50051)")
    mode.add_argument("--consul", metavar="URL", help="embed a replica + barrier participant on this Consul agent")
    p.add_argument("--prefix", default="epochgate/", help="Consul KV prefix (with --consul)")
    p.add_argument("--token", default=os.environ.get("EPOCHGATE_TOKEN"),
                   help="bearer token of the sidecar's control API (env EPOCHGATE_TOKEN)")
    p.add_argument("--consul-token", default=os.environ.get("CONSUL_HTTP_TOKEN"), help="Consul ACL token")
    p.add_argument("--participant-id", help="barrier participant id with --consul (default kv-NODE)")
    p.add_argument("--admit-timeout", type=float, default=0.5, metavar="S",
                   help="commit-point admit deadline; past it the write is refused (default %(default)s)")
    return p


def _hostport(value: str, field: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(field, f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


async def _admitter(args: argparse.Namespace) -> tuple[Any, Any]:
    """(admitter, async close) for the chosen mode."""
    if args.consul is None:
        target = args.gate or os.environ.get("EPOCHGATE_CONTROL") or "127.0.0.1:50051"
        _hostport(target, "--gate")
        client = AdmitClient(target, timeout_s=args.admit_timeout, token=args.token)
        return client, client.close

    app_gate = await open_participant(args.consul, args.prefix, participant_id=args.participant_id or f"kv-{args.node}",
                                      token=args.consul_token, wait_joined_s=30)
    return app_gate.admitter, app_gate.close


async def _mover_auth(args: argparse.Namespace) -> tuple[MoverAuth, Any]:
    """The hooks' credential (DESIGN §6): EPOCHGATE_MOVER_TOKEN, else with --consul
    the one the controller provisions under the prefix (read when first needed)."""
    fixed = mover_token_from_env()
    if fixed is not None or args.consul is None:
        async def nothing() -> None:
            return None
        return MoverAuth(fixed), nothing
    consul = ConsulHTTP(args.consul, token=args.consul_token)
    prefix = args.prefix if args.prefix.endswith("/") else args.prefix + "/"
    return MoverAuth(fetch=lambda: read_mover_token(consul, prefix)), consul.close


async def serve(args: argparse.Namespace) -> None:
    host, port = _hostport(args.listen, "--listen")
    node_name(args.node, "--node")
    auth, close_auth = await _mover_auth(args)
    admitter, close_admitter = await _admitter(args)
    runner = web.AppRunner(build_app(args.node, args.data, admitter, mover_auth=auth), access_log=None)
    try:
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0]
        print(f"examples.kv node {args.node} listening on http://{bound[0]}:{bound[1]}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()
        await close_admitter()
        await close_auth()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        asyncio.run(serve(args))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: --listen {args.listen}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a clear line rather than a traceback (e.g. Consul unreachable)
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
