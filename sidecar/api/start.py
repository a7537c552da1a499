"""Bind and start the gRPC control API (DESIGN §9): the Gate service and the
Migration service with the operator's calls (``_grpc_ops``).

Kept apart from ``_grpc_server`` (the servicers) so that module need not import
its own subclass in ``_grpc_ops``.
"""

from __future__ import annotations

from typing import Any, Mapping

import grpc

from gate import ConfigError, MigrationStore, PlacementSource, PushHub
from gate.pb.epochgate.v1 import epochgate_pb2_grpc as pb_grpc

from .auth import TokenInterceptor
from .ops import OpsMigrationServicer
from .server import DEFAULT_CONTROL, GateServicer
from .._tokens import check_control


async def start_control_server(
    addr: str = DEFAULT_CONTROL,
    *,
    store: MigrationStore,
    source: PlacementSource,
    gate: Any | None = None,
    jobs: Any | None = None,
    token: str | None = None,
    extra_nodes: Mapping[str, str] | None = None,
    fleet: Any | None = None,
) -> grpc.aio.Server:
    """Bind and start the control API on ``addr`` (``HOST:PORT``; port 0 picks one).

    ``gate`` is the sidecar's ``WriteGate`` (its guards make AdmitWrite fail
    closed); ``jobs`` a ``JobService`` (without one the job RPCs answer
    UNIMPLEMENTED); ``token`` requires ``authorization: Bearer <token>`` on every
    call. ``extra_nodes`` adds node URLs known from configuration. ``fleet`` (the
    controller's ``PushHub``) serves ``Fleet/Follow``, the barrier's push path (DESIGN §5). The bound
    port is ``server.epochgate_port``; stop with ``await server.stop(grace)``.
    """
    check_control(addr, token)
    interceptors = [TokenInterceptor(token)] if token else []
    # the keepalive policy Fleet/Follow needs (gate/_push_hub.py): harmless for the other services
    server = grpc.aio.server(interceptors=interceptors, options=PushHub.server_options() if fleet is not None else None)
    pb_grpc.add_GateServicer_to_server(GateServicer(store, source, gate), server)
    pb_grpc.add_MigrationServicer_to_server(OpsMigrationServicer(store, source, jobs, extra_nodes or {}), server)
    if fleet is not None:
        fleet.add_to(server)
    try:
        port = server.add_insecure_port(addr)
    except RuntimeError as exc:
        raise ConfigError("control", f"cannot listen on {addr}: {exc}") from exc
    if not port:
        raise ConfigError("control", f"cannot listen on {addr}")
    await server.start()
    server.epochgate_port = port  # type: ignore[attr-defined]
    return server
