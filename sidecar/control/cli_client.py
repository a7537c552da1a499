"""The operator CLI's link to the control API: exit statuses, the one-line
error, and the gRPC channel whose errors map to those statuses (the table of
statuses is in ``cli``'s module doc; scripts rely on it)."""

from __future__ import annotations

import argparse
from typing import Any, Callable, Iterator

import grpc

from gate.pb.epochgate.v1 import epochgate_pb2_grpc as pb_grpc

EXIT_OK = 0  # the asked outcome happened (for migrate: the job completed)
EXIT_FAILED = 1  # the migration job failed
EXIT_USAGE = 2  # bad command line
EXIT_ABORTED = 3  # the migration job was aborted (the partition stayed on its source)
EXIT_UNREACHABLE = 4  # the control API (or its backend) could not be reached
EXIT_REFUSED = 5  # the control API refused the call (unknown partition/job/node, bad state, token)
EXIT_INTERRUPTED = 130  # Ctrl-C while following a job (the job keeps running)


def outcome_status(status: str) -> int:
    """The exit status of a job or operation that ended in ``status`` (``migrate``,
    ``drain`` and ``balance`` exit alike)."""
    return {"completed": EXIT_OK, "failed": EXIT_FAILED, "aborted": EXIT_ABORTED}.get(status, EXIT_OK)


class CliError(Exception):
    """A one-line error and the exit status it maps to."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class CliClient:
    """The channel, stubs and the error mapping for one command."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.target = args.control
        host, _, port = self.target.rpartition(":")
        if not host or not port.isdigit():
            raise CliError(f"--control: expected HOST:PORT, got {self.target!r}", EXIT_USAGE)
        if args.timeout <= 0:
            raise CliError(f"--timeout: must be > 0, got {args.timeout}", EXIT_USAGE)
        self.timeout = args.timeout
        self.metadata = (("authorization", f"Bearer {args.token}"),) if args.token else ()
        self.channel = grpc.insecure_channel(self.target)
        self.migration = pb_grpc.MigrationStub(self.channel)

    def call(self, method: Callable[..., Any], request: Any) -> Any:
        try:
            return method(request, timeout=self.timeout, metadata=self.metadata)
        except grpc.RpcError as exc:
            raise self.error(exc) from None

    def stream(self, method: Callable[..., Any], request: Any) -> Iterator[Any]:
        return method(request, metadata=self.metadata)

    def error(self, exc: grpc.RpcError) -> CliError:
        code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
        detail = exc.details() if hasattr(exc, "details") else str(exc)
        if code is grpc.StatusCode.UNAUTHENTICATED:
            return CliError(f"the control API at {self.target} refused the call: {detail} "
                            "(set --token or EPOCHGATE_TOKEN)", EXIT_REFUSED)
        if code is grpc.StatusCode.UNIMPLEMENTED:
            return CliError(f"{self.target} does not serve this call: {detail}", EXIT_REFUSED)
        if code is grpc.StatusCode.UNAVAILABLE and "connect" in detail.lower():
            return CliError(f"cannot reach the control API at {self.target} (is the sidecar or controller "
                            f"running? set --control or EPOCHGATE_CONTROL): {detail}", EXIT_UNREACHABLE)
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return CliError(f"control API at {self.target} unavailable: {detail}", EXIT_UNREACHABLE)
        return CliError(f"{detail} ({code.name.lower()})", EXIT_REFUSED)

    def close(self) -> None:
        self.channel.close()
