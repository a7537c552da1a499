"""Operator commands (DESIGN §10) over the gRPC control API.

    python -m sidecar migrate --partition P --to NODE [--deadline S] [--no-follow] [--force]
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
from typing import Sequence, TextIO

import grpc

from gate.pb.epochgate.v1 import epochgate_pb2 as pb

from . import cli_ops as _cli_ops
from ..api import convert as conv
from .cli_client import (  # the exit statuses are read here too (scripts, tests)
    EXIT_ABORTED,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CliClient,
    CliError,
    outcome_status,
)
from .cli_follow import follow
from .cli_show import show_job, state_dict, table, ts

DEFAULT_CONTROL = "127.0.0.1:50051"


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
    m.add_argument("--force", action="store_true", help="move onto a cordoned node (a drained one) anyway")

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


def _defaults(args: argparse.Namespace) -> argparse.Namespace:
    for name, value in (("control", os.environ.get("EPOCHGATE_CONTROL") or DEFAULT_CONTROL),
                        ("token", os.environ.get("EPOCHGATE_TOKEN") or None), ("timeout", 5.0), ("json", False),
                        ("token_file", os.environ.get("EPOCHGATE_TOKEN_FILE") or None)):
        if not hasattr(args, name):
            setattr(args, name, value)
    return args


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
    client = CliClient(args)
    mig = client.migration
    dump = (lambda obj: out.write(json.dumps(obj, indent=2, sort_keys=True) + "\n")) if args.json else None
    try:
        if _cli_ops.wants(args):
            return _cli_ops.run(args, client, out, dump)
        if args.command == "migrate":
            job = client.call(mig.Migrate, pb.MigrateRequest(partition=args.partition, to_node=args.to,
                                                             cutover_deadline_s=args.deadline, force=args.force))
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
                return outcome_status(job.status)
            return follow(client, job, out)

        action = args.action or "list"
        if args.command == "jobs":
            if action == "list":
                jobs = client.call(mig.ListJobs, pb.ListJobsRequest()).jobs
                if dump:
                    dump([conv.job_to_dict(j) for j in jobs])
                else:
                    table(out, ("ID", "STATUS", "PARTITION", "FROM", "TO", "BYTES", "STARTED", "FINISHED", "KIND"),
                           [(j.id, j.status, j.partition, j.from_node, j.to_node, j.bytes_copied, ts(j.started),
                             ts(j.finished), j.kind or "move") for j in jobs])
                return EXIT_OK
            method = mig.GetJob if action == "show" else mig.AbortJob
            job = client.call(method, pb.JobRequest(id=args.id))
            if dump:
                dump(conv.job_to_dict(job))
            elif action == "show":
                show_job(job, out)
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
                    dump({"table_epoch": resp.table_epoch, "partitions": [state_dict(s) for s in resp.partitions]})
                else:
                    table(out, ("PARTITION", "PHASE", "FROM", "TO", "EPOCH"),
                           [(s.partition, conv.phase_name(s.phase), s.from_node, s.to_node or "-", s.epoch)
                            for s in resp.partitions])
                return EXIT_OK
            resp = client.call(mig.SetPartition, pb.SetPartitionRequest(partition=args.partition, node=args.node))
            if dump:
                dump({"epoch": resp.epoch, "state": state_dict(resp.state)})
            else:
                out.write(f"{resp.state.partition} → {resp.state.from_node} (epoch {resp.epoch})\n")
            return EXIT_OK

        if action == "list":  # nodes
            nodes = client.call(mig.ListNodes, pb.Empty()).nodes
            if dump:
                dump({n.name: n.url for n in nodes})
            else:
                table(out, ("NAME", "URL"), [(n.name, n.url) for n in nodes])
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
