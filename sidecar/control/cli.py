"""Operator commands (DESIGN §10) over the gRPC control API.

    python -m sidecar migrate --partition P --to NODE [--deadline S] [--no-follow]
    python -m sidecar jobs [list | show ID | abort ID]
    python -m sidecar partitions [list | set P NODE]
    python -m sidecar nodes [list | set NAME URL]

Every command takes ``--control HOST:PORT`` (env ``EPOCHGATE_CONTROL``,
default ``127.0.0.1:50051``) and ``--token`` (env ``EPOCHGATE_TOKEN``). Errors
are one line on stderr, never a traceback. Exit status (scripts rely on it):

    0    the asked outcome happened (for ``migrate``: the job completed)
    1    the migration job failed
    2    bad command line
    3    the migration job was aborted (the partition stayed on its source)
    4    the control API (or the store behind it) could not be reached
    5    the control API refused the call (unknown partition/job/node, inapplicable, token)
    130  interrupted while following a job (the job keeps running)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Sequence, TextIO

import grpc

from gate.pb.epochgate.v1 import epochgate_pb2 as pb
from gate.pb.epochgate.v1 import epochgate_pb2_grpc as pb_grpc

from . import cli_ops as _cli_ops
from ..api import convert as conv
from .jobstatus import JobStatus

EXIT_OK = 0  # the asked outcome happened (for migrate: the job completed)
EXIT_FAILED = 1  # the migration job failed
EXIT_USAGE = 2  # bad command line
EXIT_ABORTED = 3  # the migration job was aborted (the partition stayed on its source)
EXIT_UNREACHABLE = 4  # the control API (or its backend) could not be reached
EXIT_REFUSED = 5  # the control API refused the call (unknown partition/job/node, bad state, token)
EXIT_INTERRUPTED = 130  # Ctrl-C while following a job (the job keeps running)

DEFAULT_CONTROL = "127.0.0.1:50051"
_STEPS = tuple(s.value for s in JobStatus if s not in (JobStatus.FAILED, JobStatus.ABORTED))
_FOLLOW_RECONNECT_S = 30.0  # a controller fail-over (Consul lock) fits in this


class CliError(Exception):
    """A one-line error and the exit status it maps to."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's default exits; we return a status
        self.print_usage(sys.stderr)
        raise CliError(f"{self.prog}: {message}", EXIT_USAGE)


def _build_parser() -> argparse.ArgumentParser:
    # The common options are accepted before and after a nested action
    # (``jobs --token T show 1`` and ``jobs show 1 --token T``); their defaults
    # are filled in after parsing (``_defaults``) so a nested parser's default
    # never overwrites a value given at the outer level.
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument("--control", metavar="HOST:PORT",
                        help=f"the control API (env EPOCHGATE_CONTROL; default {DEFAULT_CONTROL})")
    common.add_argument("--token", help="bearer token of the control API (env EPOCHGATE_TOKEN)")
    common.add_argument("--token-file", metavar="FILE",
                        help="read the bearer token from FILE (env EPOCHGATE_TOKEN_FILE; not shown by ps)")
    common.add_argument("--timeout", type=float, metavar="S",
                        help="seconds to wait for the control API to answer (default 5)")
    common.add_argument("--json", action="store_true", help="print machine-readable JSON")

    top = _Parser(prog="python -m sidecar", description="epochgate operator commands")
    sub = top.add_subparsers(dest="command", required=True, parser_class=_Parser)

    m = sub.add_parser("migrate", parents=[common], help="move a partition to another node (a controller job)")
    m.add_argument("--partition", required=True)
    m.add_argument("--to", required=True, metavar="NODE")
    m.add_argument("--deadline", type=float, default=0.0, metavar="S",
                   help="cutover deadline in seconds; the job aborts if the barrier is not passed in time "
                        "(default: the controller's)")
    m.add_argument("--no-follow", action="store_true", help="print the job id and return without following it")

    j = sub.add_parser("jobs", parents=[common], help="migration jobs")
    js = j.add_subparsers(dest="action", parser_class=_Parser)
    js.add_parser("list", parents=[common])
    js.add_parser("show", parents=[common]).add_argument("id")
    js.add_parser("abort", parents=[common]).add_argument("id")
    _cli_ops.add_parsers(sub, common, js, m, _Parser)   # history, --dry-run, pause/throttle, drain, balance, ops

    p = sub.add_parser("partitions", parents=[common], help="the placement table")
    ps = p.add_subparsers(dest="action", parser_class=_Parser)
    ps.add_parser("list", parents=[common])
    pset = ps.add_parser("set", parents=[common], help="register or override a partition's node")
    pset.add_argument("partition")
    pset.add_argument("node")

    n = sub.add_parser("nodes", parents=[common], help="node name → upstream URL")
    ns = n.add_subparsers(dest="action", parser_class=_Parser)
    ns.add_parser("list", parents=[common])
    nset = ns.add_parser("set", parents=[common])
    nset.add_argument("name")
    nset.add_argument("url")
    return top


class _Client:
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


def _defaults(args: argparse.Namespace) -> argparse.Namespace:
    for name, value in (("control", os.environ.get("EPOCHGATE_CONTROL") or DEFAULT_CONTROL),
                        ("token", os.environ.get("EPOCHGATE_TOKEN") or None), ("timeout", 5.0), ("json", False),
                        ("token_file", os.environ.get("EPOCHGATE_TOKEN_FILE") or None)):
        if not hasattr(args, name):
            setattr(args, name, value)
    return args


def _ts(t: float) -> str:
    if not t:
        return "-"
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ts_ms(t: float) -> str:
    """Millisecond times: the phases of one job are often within the same second."""
    if not t:
        return "-"
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover


def _table(out: TextIO, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [list(map(str, header))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for r in cells:
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() + "\n")


def _job_outcome(job: pb.Job) -> int:
    return {"completed": EXIT_OK, "failed": EXIT_FAILED, "aborted": EXIT_ABORTED}.get(job.status, EXIT_OK)


def _job_summary(job: pb.Job) -> str:
    took = f" in {job.finished - job.started:.1f}s" if job.finished and job.started else ""
    line = f"job {job.id} {job.status}: {job.partition} {job.from_node}→{job.to_node}, {_bytes(job.bytes_copied)} copied{took}"
    return line + (f": {job.error}" if job.error and job.status != "completed" else "")


class _Progress:
    """A one-line bar on a terminal; a plain line per status change otherwise."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.last: tuple[str, int] | None = None
        self.phases_seen = 0

    def update(self, job: pb.Job) -> None:
        if self.tty:
            step = _STEPS.index(job.status) if job.status in _STEPS else len(_STEPS) - 1
            filled = round(20 * step / (len(_STEPS) - 1))
            elapsed = (job.finished or time.time()) - job.started if job.started else 0.0
            self.out.write(f"\r\x1b[K job {job.id} [{'#' * filled}{'.' * (20 - filled)}] {job.status:<9} "
                           f"{_bytes(job.bytes_copied)} copied  {elapsed:.1f}s")
            self.out.flush()
        else:   # one line per phase the job recorded (cutover and acked too), then per status change
            lines = []
            if self.last is None and not job.phases:
                lines.append(f"job {job.id} {job.status} bytes={job.bytes_copied}")
            for rec in job.phases[self.phases_seen:]:
                lines.append(f"job {job.id} {rec.phase} bytes={job.bytes_copied} epoch={rec.epoch} at={_ts_ms(rec.at)}")
            self.phases_seen = len(job.phases)
            if not lines and self.last is not None and self.last[0] != job.status:
                lines.append(f"job {job.id} {job.status} bytes={job.bytes_copied}")
            if lines:
                self.out.write("\n".join(lines) + "\n")
                self.out.flush()
        self.last = (job.status, job.bytes_copied)

    def finish(self) -> None:
        if self.tty and self.last is not None:
            self.out.write("\n")


def _follow(client: _Client, job: pb.Job, out: TextIO) -> int:
    """Watch a job to its end; reconnect through a controller fail-over."""
    progress = _Progress(out)
    progress.update(job)
    give_up = None
    try:
        while job.status not in conv.TERMINAL_STATUSES:
            try:
                for job in client.stream(client.migration.WatchJob, pb.JobRequest(id=job.id)):
                    give_up = None
                    progress.update(job)
                    if job.status in conv.TERMINAL_STATUSES:
                        break
                else:  # the stream ended early (controller stepping down): ask again
                    job = client.call(client.migration.GetJob, pb.JobRequest(id=job.id))
                    progress.update(job)
            except (grpc.RpcError, CliError) as exc:
                err = exc if isinstance(exc, CliError) else client.error(exc)
                if err.code != EXIT_UNREACHABLE:
                    raise err from None
                give_up = give_up or time.monotonic() + _FOLLOW_RECONNECT_S
                if time.monotonic() > give_up:
                    raise CliError(f"lost the control API while following job {job.id} ({err}); the job keeps "
                                   f"running: check it with `jobs show {job.id}`", EXIT_UNREACHABLE) from None
                time.sleep(0.5)
    except KeyboardInterrupt:
        progress.finish()
        raise CliError(f"stopped following job {job.id}; it keeps running (`jobs abort {job.id}` stops it)",
                       EXIT_INTERRUPTED) from None
    progress.finish()
    out.write(_job_summary(job) + "\n")
    return _job_outcome(job)


def _show_job(job: pb.Job, out: TextIO) -> None:
    for k, v in (("id", job.id), ("partition", job.partition), ("from", job.from_node), ("to", job.to_node),
                 ("status", job.status), ("error", job.error or "-"), ("bytes", job.bytes_copied),
                 ("started", _ts_ms(job.started)), ("finished", _ts_ms(job.finished))):
        out.write(f"{k + ':':<11}{v}\n")
    if job.phases:
        out.write("phases:\n")
        for r in job.phases:
            out.write(f"  {r.phase:<10} epoch {r.epoch:<8} at {_ts_ms(r.at)}\n")


def _state_dict(s: pb.PartitionState) -> dict[str, Any]:
    return {"partition": s.partition, "phase": conv.phase_name(s.phase), "from": s.from_node,
            "to": s.to_node or None, "epoch": s.epoch}


def _check_ids(args: argparse.Namespace) -> None:
    """Ids become store keys: refuse what is not one key segment here, naming the argument."""
    from gate import ConfigError, key_segment

    for attr, label in (("partition", "partition"), ("to", "--to"), ("node", "node"), ("name", "name"), ("id", "id")):
        value = getattr(args, attr, None)
        if value:   # "" is "none given" (e.g. `jobs pause` with no id: the whole fleet)
            try:
                key_segment(value, label)
            except ConfigError as exc:  # the same status the control API's refusal of it gives
                raise CliError(str(exc), EXIT_REFUSED) from None
    if getattr(args, "token_file", None):
        from .._tokens import read_token_file

        try:
            args.token = read_token_file(args.token_file, "--token-file")
        except ConfigError as exc:
            raise CliError(str(exc), EXIT_USAGE) from None


def _run(args: argparse.Namespace, out: TextIO) -> int:
    client = _Client(args)
    mig = client.migration
    dump = (lambda obj: out.write(json.dumps(obj, indent=2, sort_keys=True) + "\n")) if args.json else None
    try:
        if _cli_ops.wants(args):
            return _cli_ops.run(args, client, out, dump, sys.modules[__name__])
        if args.command == "migrate":
            job = client.call(mig.Migrate, pb.MigrateRequest(partition=args.partition, to_node=args.to,
                                                             cutover_deadline_s=args.deadline))
            if args.no_follow:
                if dump:
                    dump(conv.job_to_dict(job))
                else:
                    out.write(f"job {job.id} {job.status}: {job.partition} {job.from_node}→{job.to_node}\n")
                return EXIT_OK
            if dump:  # machine output: follow quietly, print the final record
                try:
                    for job in client.stream(mig.WatchJob, pb.JobRequest(id=job.id)):
                        pass
                except grpc.RpcError as exc:
                    raise client.error(exc) from None
                dump(conv.job_to_dict(job))
                return _job_outcome(job)
            return _follow(client, job, out)

        action = args.action or "list"
        if args.command == "jobs":
            if action == "list":
                jobs = client.call(mig.ListJobs, pb.ListJobsRequest()).jobs
                if dump:
                    dump([conv.job_to_dict(j) for j in jobs])
                else:
                    _table(out, ("ID", "STATUS", "PARTITION", "FROM", "TO", "BYTES", "STARTED", "FINISHED"),
                           [(j.id, j.status, j.partition, j.from_node, j.to_node, j.bytes_copied, _ts(j.started),
                             _ts(j.finished)) for j in jobs])
                return EXIT_OK
            method = mig.GetJob if action == "show" else mig.AbortJob
            job = client.call(method, pb.JobRequest(id=args.id))
            if dump:
                dump(conv.job_to_dict(job))
            elif action == "show":
                _show_job(job, out)
            elif job.status == "aborted":
                out.write(f"job {job.id} aborted\n")
            elif job.status in conv.TERMINAL_STATUSES:
                raise CliError(f"job {job.id} already {job.status}; nothing to abort", EXIT_REFUSED)
            else:  # the controller aborts it at its next step (the store goes back to the source)
                out.write(f"job {job.id}: abort requested (status {job.status})\n")
            return EXIT_OK

        if args.command == "partitions":
            if action == "list":
                resp = client.call(mig.List, pb.ListRequest())
                if dump:
                    dump({"table_epoch": resp.table_epoch, "partitions": [_state_dict(s) for s in resp.partitions]})
                else:
                    _table(out, ("PARTITION", "PHASE", "FROM", "TO", "EPOCH"),
                           [(s.partition, conv.phase_name(s.phase), s.from_node, s.to_node or "-", s.epoch)
                            for s in resp.partitions])
                return EXIT_OK
            resp = client.call(mig.SetPartition, pb.SetPartitionRequest(partition=args.partition, node=args.node))
            if dump:
                dump({"epoch": resp.epoch, "state": _state_dict(resp.state)})
            else:
                out.write(f"{resp.state.partition} → {resp.state.from_node} (epoch {resp.epoch})\n")
            return EXIT_OK

        if action == "list":  # nodes
            nodes = client.call(mig.ListNodes, pb.Empty()).nodes
            if dump:
                dump({n.name: n.url for n in nodes})
            else:
                _table(out, ("NAME", "URL"), [(n.name, n.url) for n in nodes])
            return EXIT_OK
        node = client.call(mig.SetNode, pb.SetNodeRequest(name=args.name, url=args.url))
        if dump:
            dump({node.name: node.url})
        else:
            out.write(f"{node.name} = {node.url}\n")
        return EXIT_OK
    finally:
        client.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Run one operator command; returns the exit status (see the module doc)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _defaults(_build_parser().parse_args(argv))
        _check_ids(args)
        return _run(args, sys.stdout)
    except CliError as exc:
        sys.stdout.flush()
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `... | head`
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
