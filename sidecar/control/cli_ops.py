"""The operator's-day commands (issue 17), same conventions as ``cli`` (statuses
and errors: ``cli_client``; printing: ``cli_show``):

    python -m sidecar history P [--compact-before EPOCH] [--json]
    python -m sidecar migrate --partition P --to NODE --dry-run [--json]   # exit 0: it would go; 5: refused
    python -m sidecar jobs pause [ID] | resume [ID]        # no ID: the whole fleet
    python -m sidecar jobs throttle [ID] --rate BYTES/S    # 0 = unlimited; suffixes k, M, G (×1000), Ki, Mi, Gi
    python -m sidecar jobs controls                        # what is paused and throttled
    python -m sidecar drain NODE [--parallel K] [--by-size] [--dry-run] [--no-follow] [--deadline S]
    python -m sidecar drain NODE --uncordon               # a drain cordons NODE: balance skips it until this
    python -m sidecar balance [--parallel K] [--by-size] [--threshold F] [--dry-run] [--no-follow]
    python -m sidecar ops [list | show ID | abort ID | watch ID]

A drain or balance followed to its end exits like ``migrate``: 0 completed,
1 failed, 3 aborted; an empty plan exits 0.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any, Callable, TextIO

import grpc

from .cli_client import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    CliError,
    outcome_status,
)
from .cli_follow import StatusLine, reconnect_or_raise
from .cli_show import table, ts_ms
from .dryrun import plan_to_dict
from .history import transition_to_dict
from gate.pb.epochgate.v1 import epochgate_pb2 as pb

COMMANDS = ("history", "drain", "balance", "ops")
JOB_ACTIONS = ("pause", "resume", "throttle", "controls")
_UNITS = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "ki": 1024, "mi": 1024**2, "gi": 1024**3}


def rate(value: str) -> float:
    """``--rate``: bytes per second, with an optional k/M/G or Ki/Mi/Gi suffix (and an optional B, /s)."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kmg]i?)?b?(?:/s)?\s*", value, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"expected bytes per second such as 500k or 2Mi, got {value!r}")
    return float(m.group(1)) * _UNITS[(m.group(2) or "").lower()]


def add_parsers(sub: Any, common: argparse.ArgumentParser, jobs_sub: Any, migrate: argparse.ArgumentParser,
                parser_class: type) -> None:
    migrate.add_argument("--dry-run", action="store_true",
                         help="print the plan (URLs, size, participants, expected cutover, refusals) and act not")
    for action, help_ in (("pause", "hold jobs before their next phase (no ID: the fleet starts no job)"),
                          ("resume", "undo pause (no ID: the fleet)")):
        jobs_sub.add_parser(action, parents=[common], help=help_).add_argument("id", nargs="?", default="")
    t = jobs_sub.add_parser("throttle", parents=[common], help="copy rate limit (no ID: fleet-wide)")
    t.add_argument("id", nargs="?", default="")
    t.add_argument("--rate", type=rate, required=True, metavar="BYTES/S", help="0 = unlimited; e.g. 500k, 2Mi")
    jobs_sub.add_parser("controls", parents=[common], help="what is paused and throttled")

    h = sub.add_parser("history", parents=[common], help="a partition's transitions (who moved it, when, why)")
    h.add_argument("partition")
    h.add_argument("--compact-before", type=int, metavar="EPOCH",
                   help="drop the history older than EPOCH (never the current record)")

    for name, help_ in (("drain", "move every partition off NODE (jobs, --parallel at once)"),
                        ("balance", "even out partitions across nodes (nothing when within --threshold)")):
        d = sub.add_parser(name, parents=[common], help=help_)
        if name == "drain":
            d.add_argument("node")
            d.add_argument("--uncordon", action="store_true",
                           help="let balance use NODE again (a drain cordons it); moves nothing")
        else:
            d.add_argument("--threshold", type=float, default=0.0, metavar="F",
                           help="allowed spread as a fraction of the mean load per node (default 0.1)")
        d.add_argument("--parallel", type=int, default=1, metavar="K", help="jobs at once (default 1)")
        d.add_argument("--by-size", action="store_true", help="weigh partitions by the size their source reports")
        d.add_argument("--dry-run", action="store_true", help="print the plan only")
        d.add_argument("--no-follow", action="store_true", help="print the operation id and return")
        d.add_argument("--deadline", type=float, default=0.0, metavar="S", help="each job's cutover deadline")

    o = sub.add_parser("ops", parents=[common], help="drain/balance operations")
    os_ = o.add_subparsers(dest="action", parser_class=parser_class)
    os_.add_parser("list", parents=[common])
    for action in ("show", "abort", "watch"):
        os_.add_parser(action, parents=[common]).add_argument("id")


def wants(args: argparse.Namespace) -> bool:
    return (args.command in COMMANDS or (args.command == "migrate" and args.dry_run)
            or (args.command == "jobs" and args.action in JOB_ACTIONS))


def _rate(r: float) -> str:
    return "unlimited" if not r else f"{r:,.0f} B/s"


def op_to_dict(op: pb.Operation) -> dict[str, Any]:
    return {"id": op.id, "kind": op.kind, "node": op.node or None, "status": op.status, "parallel": op.parallel,
            "error": op.error, "started": op.started, "finished": op.finished, "dry_run": op.dry_run,
            "moves": [{"partition": m.partition, "from_node": m.from_node, "to_node": m.to_node,
                       "weight": m.weight, "job_id": m.job_id or None, "status": m.status} for m in op.moves]}


def _op_summary(op: pb.Operation) -> str:
    what = f"{op.kind} {op.node}".strip()
    if op.dry_run:   # nothing ran: never "completed" (issue 27)
        return f"dry run: {what} would make {len(op.moves)} move{'s' if len(op.moves) != 1 else ''}; nothing was started"
    counts: dict[str, int] = {}
    for m in op.moves:
        counts[m.status] = counts.get(m.status, 0) + 1
    running = sum(v for k, v in counts.items() if k not in ("planned", "completed", "failed", "aborted", "skipped"))
    return (f"operation {op.id} {what} {op.status}: {counts.get('completed', 0)}/{len(op.moves)} completed, "
            f"{running} running, {counts.get('planned', 0)} waiting, {counts.get('failed', 0)} failed, "
            f"{counts.get('aborted', 0)} aborted, {counts.get('skipped', 0)} skipped")


def _show_plan(op: pb.Operation, out: TextIO) -> None:
    table(out, ("PARTITION", "FROM", "TO", "JOB", "STATUS"),
          [(m.partition, m.from_node, m.to_node, m.job_id or "-", m.status) for m in op.moves])
    out.write(_op_summary(op) + "\n")


def _follow_op(client: Any, op: pb.Operation, out: TextIO) -> int:
    """One progress view: a line per move that changes status, and the summary when it
    does (on a terminal the summary is one line redrawn in place under the moves)."""
    seen: dict[str, str] = {m.partition: m.status for m in op.moves}
    view = StatusLine(out)
    view.status(_op_summary(op))
    give_up = None
    try:
        while op.status not in ("completed", "failed", "aborted"):
            try:
                for op in client.stream(client.migration.WatchOperation, pb.OperationRequest(id=op.id)):
                    give_up = None
                    changed = False
                    for m in op.moves:
                        if seen.get(m.partition) != m.status:
                            seen[m.partition] = m.status
                            changed = True
                            view.line(f"  {m.partition} {m.from_node}→{m.to_node} {m.status}"
                                      f"{' (job ' + m.job_id + ')' if m.job_id else ''}")
                    if changed:
                        view.status(_op_summary(op))
                else:
                    op = client.call(client.migration.GetOperation, pb.OperationRequest(id=op.id))
            except (grpc.RpcError, CliError) as exc:   # a controller fail-over: reconnect
                give_up = reconnect_or_raise(
                    client, exc, give_up, lambda err: f"lost the control API while following operation {op.id} "
                                                      f"({err}); it keeps running: `ops show {op.id}`")
    except KeyboardInterrupt:
        view.finish()
        raise CliError(f"stopped following operation {op.id}; it keeps running (`ops abort {op.id}` stops "
                       f"it)", EXIT_INTERRUPTED) from None
    view.finish()
    code = outcome_status(op.status)
    if code != EXIT_OK:   # a failure line goes to stderr, where scripts and eyes look for it
        out.flush()
        print(_op_summary(op) + (f": {op.error}" if op.error else ""), file=sys.stderr, flush=True)
    elif op.error:
        out.write(f"operation {op.id}: {op.error}\n")
    return code


def run(args: argparse.Namespace, client: Any, out: TextIO, dump: Callable | None) -> int:
    mig = client.migration
    if args.command == "migrate":
        plan = client.call(mig.PlanMigration, pb.MigrateRequest(partition=args.partition, to_node=args.to,
                                                                 force=args.force))
        if dump:
            dump(plan_to_dict(plan))
        else:
            _print_plan(plan, out)
        return EXIT_OK if plan.would_go else EXIT_REFUSED

    if args.command == "history":
        if args.compact_before is not None:
            if args.compact_before < 1:
                raise CliError(f"--compact-before: must be a positive epoch, got {args.compact_before}",
                               EXIT_USAGE)
            resp = client.call(mig.CompactHistory, pb.CompactHistoryRequest(partition=args.partition,
                                                                            before_epoch=args.compact_before))
            if dump:
                dump({"removed": resp.removed})
            else:
                out.write(f"{args.partition}: removed {resp.removed} history records before epoch "
                          f"{args.compact_before}\n")
            return EXIT_OK
        resp = client.call(mig.History, pb.HistoryRequest(partition=args.partition))
        if dump:
            dump({"partition": resp.partition, "current_epoch": resp.current_epoch,
                  "transitions": [transition_to_dict(t) for t in resp.transitions]})
        else:
            table(out, ("EPOCH", "OP", "PHASE", "FROM", "TO", "TIME", "ACTOR", "JOB"),
                  [(t.epoch, t.op, t.phase, t.from_node, t.to_node or "-", ts_ms(t.time), t.actor,
                   t.job_id or "-") for t in resp.transitions])
        return EXIT_OK

    if args.command == "jobs":
        if args.action == "controls":
            st = client.call(mig.GetJobControl, pb.Empty())
            rows = [("(fleet)", "paused" if st.fleet.paused else "running", _rate(st.fleet.rate_bytes_per_s))]
            rows += [(c.id, "paused" if c.paused else "running", _rate(c.rate_bytes_per_s)) for c in st.jobs]
            if dump:
                dump({"fleet": {"paused": st.fleet.paused, "rate_bytes_per_s": st.fleet.rate_bytes_per_s},
                      "jobs": {c.id: {"paused": c.paused, "rate_bytes_per_s": c.rate_bytes_per_s} for c in st.jobs}})
            else:
                table(out, ("JOB", "STATE", "RATE"), rows)
            return EXIT_OK
        req = pb.JobControlRequest(id=args.id)
        if args.action == "throttle":
            req.set_rate, req.rate_bytes_per_s = True, args.rate
        else:
            req.set_paused, req.paused = True, args.action == "pause"
        c = client.call(mig.SetJobControl, req)
        who = f"job {c.id}" if c.id else "fleet"
        if dump:
            dump({"id": c.id or None, "paused": c.paused, "rate_bytes_per_s": c.rate_bytes_per_s})
        else:
            out.write(f"{who}: {'paused' if c.paused else 'running'}, copy rate {_rate(c.rate_bytes_per_s)}\n")
        return EXIT_OK

    if args.command in ("drain", "balance"):
        for flag, v in (("--parallel", args.parallel), ("--deadline", args.deadline)):
            if v < 0:
                raise CliError(f"{flag}: must be ≥ 0, got {v}", EXIT_USAGE)
        if args.command == "drain":
            op = client.call(mig.Drain, pb.DrainRequest(node=args.node, parallel=args.parallel, by_size=args.by_size,
                                                        dry_run=args.dry_run, cutover_deadline_s=args.deadline,
                                                        uncordon=args.uncordon))
            if args.uncordon:
                out.write(f"{args.node}: uncordoned (balance may place partitions on it again)\n")
                return EXIT_OK
        else:
            if args.threshold < 0:
                raise CliError(f"--threshold: must be ≥ 0, got {args.threshold}", EXIT_USAGE)
            op = client.call(mig.Balance, pb.BalanceRequest(parallel=args.parallel, by_size=args.by_size,
                                                            threshold=args.threshold, dry_run=args.dry_run,
                                                            cutover_deadline_s=args.deadline))
        if args.dry_run or args.no_follow or not op.moves:
            if dump:
                dump(op_to_dict(op))
            else:
                _show_plan(op, out)
            return EXIT_OK
        if dump:   # machine output: follow quietly, print the final record (as `migrate --json`)
            try:
                for op in client.stream(mig.WatchOperation, pb.OperationRequest(id=op.id)):
                    pass
            except grpc.RpcError as exc:
                raise client.error(exc) from None
            dump(op_to_dict(op))
            return outcome_status(op.status)
        return _follow_op(client, op, out)

    action = args.action or "list"   # ops
    if action == "list":
        ops = client.call(mig.ListOperations, pb.Empty()).operations
        if dump:
            dump([op_to_dict(o) for o in ops])
        else:
            table(out, ("ID", "KIND", "NODE", "STATUS", "MOVES", "STARTED", "FINISHED"),
                  [(o.id, o.kind, o.node or "-", o.status, len(o.moves), ts_ms(o.started), ts_ms(o.finished))
                   for o in ops])
        return EXIT_OK
    if action == "watch":
        return _follow_op(client, client.call(mig.GetOperation, pb.OperationRequest(id=args.id)), out)
    method = mig.GetOperation if action == "show" else mig.AbortOperation
    op = client.call(method, pb.OperationRequest(id=args.id))
    if dump:
        dump(op_to_dict(op))
    elif action == "show":
        _show_plan(op, out)
    else:
        out.write(f"operation {op.id}: {'abort requested' if op.status == 'running' else op.status}\n")
    return EXIT_OK


def _print_plan(plan: pb.MigrationPlan, out: TextIO) -> None:
    size = "unknown" if plan.size_bytes < 0 else f"{plan.size_bytes} bytes, {plan.size_keys} keys"
    cut = (f"{plan.expected_cutover_s:.3f}s median, {plan.expected_cutover_max_s:.3f}s max over "
           f"{plan.cutover_samples} recent jobs" if plan.cutover_samples else "no completed jobs to go by")
    for k, v in (("partition", plan.partition), ("from", f"{plan.from_node or '-'} {plan.source_url}".rstrip()),
                 ("to", f"{plan.to_node} {plan.target_url}".rstrip()), ("size", size), ("cutover", cut),
                 ("table epoch", plan.table_epoch)):
        out.write(f"{k + ':':<13}{v}\n")
    out.write(f"participants: {len(plan.participants)} would have to acknowledge the cutover\n")
    for x in plan.participants:
        ago = "older than the kept log" if x.behind_s < 0 else f"{x.behind_s:.1f} s"
        fresh = "fresh" if not x.behind else f"{x.behind} epochs, {ago} behind"
        out.write(f"  {x.id:<40} applied epoch {x.applied_epoch} ({fresh})\n")
    for w in plan.warnings:
        out.write(f"warning:     {w}\n")
    for r in plan.refusals:
        out.write(f"refused:     {r}\n")
    out.write("would go\n" if plan.would_go else f"would be refused ({len(plan.refusals)} reasons)\n")
