"""``python -m sidecar reshard``: split a hash slot, merge two halves back, or plan splits
(issue 29, DESIGN §12; user text: docs/resharding.md).

    reshard split SLOT [--to NODE] --hash-slots N [--control HOST:PORT | --consul URL [--prefix P]]
                       [--dry-run] [--no-follow]
    reshard merge SLOT [--to NODE] --hash-slots N [… as split]
    reshard plan [--rates FILE | --metrics URL… | --prometheus URL] --target SHARE --consul URL
                 --hash-slots N [--node NAME]… [--run]

Through the control API (``--control``, env ``EPOCHGATE_CONTROL``, default
``127.0.0.1:50051``, as every operator command) ``split``/``merge`` call ``Reshard`` and follow
the job like ``migrate``. With ``--consul`` (needed by ``plan`` and ``--dry-run``, which read the
table) the command validates the plan against the table, records it as a ``pending`` job under
``<prefix>jobs/`` (the record a standby controller writes for ``migrate``) and follows it: the
leading controller runs it — fenced, throttled, pausable, resumed by the next leader after a
fail-over (``sidecar/control/reshard_job.py``) — and ``jobs``, ``history`` and the control API
show it. Exit statuses as ``migrate``: 0 completed, 1 failed, 2 a bad command line (one line
naming the field), 3 aborted (the slot stayed as it was), 4 Consul unreachable, 5 refused.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any, Sequence

from gate import BackendError, ConfigError, MigrationError, node_name, parse_slot

from .cli import DEFAULT_CONTROL
from .cli_client import EXIT_FAILED, EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_USAGE, outcome_status
from .reshard import ReshardPlan, plan_merge, plan_of, plan_split
from .reshard_planner import plan_hot_splits
from .slot_rates import add_rate_flags, read_rates


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:   # one line, exit 2 (as the other commands)
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--consul", metavar="URL",
                        help="read the table and record the job in Consul directly (plan and --dry-run need it)")
    common.add_argument("--control", metavar="HOST:PORT", default=os.environ.get("EPOCHGATE_CONTROL") or DEFAULT_CONTROL,
                        help=f"without --consul: the controller's control API (env EPOCHGATE_CONTROL; default {DEFAULT_CONTROL})")
    common.add_argument("--token", default=os.environ.get("EPOCHGATE_TOKEN") or None,
                        help="bearer token of the control API (env EPOCHGATE_TOKEN)")
    common.add_argument("--token-file", metavar="FILE", default=os.environ.get("EPOCHGATE_TOKEN_FILE") or None,
                        help="read the bearer token from FILE (env EPOCHGATE_TOKEN_FILE)")
    common.add_argument("--timeout", type=float, default=5.0, metavar="S",
                        help="seconds to wait for the control API to answer (default 5)")
    common.add_argument("--prefix", default="epochgate/")
    common.add_argument("--hash-slots", type=int, required=True, metavar="N", help="the sidecars' --hash-slots")
    common.add_argument("--deadline", type=float, default=10.0, metavar="S", help="the job's cutover deadline (s)")
    top = _Parser(prog="python -m sidecar reshard", description=__doc__.split("\n\n")[0])
    sub = top.add_subparsers(dest="action", required=True, parser_class=_Parser)
    for name, what in (("split", "split a slot in two"), ("merge", "merge a slot with its sibling")):
        p = sub.add_parser(name, parents=[common], help=what)
        p.add_argument("slot")
        p.add_argument("--to", metavar="NODE", help="the node of the new half (split) or of the merged slot")
        p.add_argument("--dry-run", action="store_true", help="print the plan; start nothing")
        p.add_argument("--no-follow", action="store_true", help="submit the job and exit (jobs show ID follows it)")
    p = sub.add_parser("plan", parents=[common], help="splits until no node exceeds --target of the rate")
    add_rate_flags(p)
    p.add_argument("--target", type=float, required=True, metavar="SHARE", help="0 < SHARE ≤ 1")
    p.add_argument("--node", action="append", default=[], help="a node with no slot yet to spread onto")
    p.add_argument("--run", action="store_true", help="run the planned splits (default: print them)")
    return top


def describe(plan: ReshardPlan) -> str:
    src = ", ".join(f"{s}@{n}" for s, n in plan.sources)
    dst = ", ".join(f"{s}@{n}" for s, n in plan.into)
    moves = "; ".join(f"{t.source}@{t.source_node} → {t.dest}@{t.dest_node}"
                      + (f" (keys with crc32 mod {t.only.modulus} = {t.only.number})" if t.only else "")
                      for t in plan.transfers)
    return f"{plan.kind}: {src} → {dst}; copies: {moves}"


async def _run(args: Any) -> int:
    from gate import ConsulHTTP, open_consul

    from .jobs import JobRecords
    from .reshard_job import submit

    consensus, store, _ = await open_consul(args.consul, args.prefix)
    consul = ConsulHTTP(args.consul)
    records = JobRecords(consul, args.prefix)
    try:
        todo = await _plans(args, await store.partitions())
        if todo is None:
            return EXIT_OK
        for kind, slot, to in todo:
            job = await submit(store, records, await store.nodes(), kind, slot, to, args.hash_slots, args.deadline)
            print(f"job {job.id}: {describe(plan_of(job.kind, job.sources, job.into, job.hash_slots))}", flush=True)
            if getattr(args, "no_follow", False):
                continue
            status = await _follow(records, consul, f"{args.prefix}controller/leader", job.id)
            if status != EXIT_OK:
                return status
        return EXIT_OK
    finally:
        await consul.close()
        await consensus.close()


async def _follow(records: Any, consul: Any, leader_key: str, job_id: str) -> int:
    """Print each status the job reaches; the exit status of its final one."""
    last, job, told = "", None, False
    async for job in records.watch(job_id):
        if job.status != last:
            last = job.status
            rec = job.phases[-1] if job.phases else None
            print(f"{job.status}" + (f" (epoch {rec.epoch})" if rec and rec.epoch else ""), flush=True)
        if job.status == "pending" and not told and await consul.get(leader_key) is None:
            told = True
            print(f"waiting for a controller to run it ({leader_key} is not held)", flush=True)
    if job is None:
        print(f"error: job {job_id} vanished", file=sys.stderr)
        return EXIT_FAILED
    if job.status != "completed":
        print(f"{job.status}: {job.error} (the slot stayed as it was)", file=sys.stderr)
        return outcome_status(job.status)
    cut, flip = job.phase("cutover"), job.phase("flipped")
    window = f", writes refused for {(flip.at - cut.at) * 1000:.0f} ms" if cut and flip else ""
    print(f"completed: flip at epoch {flip.epoch if flip else job.phases[-1].epoch}{window}", flush=True)
    return EXIT_OK


async def _plans(args: Any, states: Any) -> list[tuple[str, str, str | None]] | None:
    """The jobs to submit, ``(kind, slot, to)``, or None after printing a dry run's."""
    if args.action == "plan":
        rates = await read_rates(args)
        hot = plan_hot_splits(states, args.hash_slots, rates, args.target, args.node)
        for slot, to in hot.splits:
            print(f"split {slot} --to {to}")
        shares = ", ".join(f"{n} {v:.0%}" for n, v in hot.shares.items())
        print(f"{len(hot.splits)} splits; shares after them: {shares}" + ("" if hot.reached else f"; {hot.why}"))
        if not args.run:
            print("dry run: nothing was started")
            return None
        # each split is validated when submitted, against the table the earlier ones left
        return [("split", slot, to) for slot, to in hot.splits]
    make = plan_split if args.action == "split" else plan_merge
    plan = make(states, args.hash_slots, args.slot, args.to)
    if args.dry_run:
        print(describe(plan))
        print(f"dry run: {plan.kind} of {args.slot} would run; nothing was started")
        return None
    return [(args.action, args.slot, args.to)]


def _check(args: Any) -> None:
    """What the command line alone can refuse, before Consul is dialled (a typo is a
    usage error naming the field, not "Consul unreachable" or a refusal)."""
    if args.hash_slots < 1:
        raise ConfigError("--hash-slots", f"give the sidecars' --hash-slots N (≥ 1), got {args.hash_slots}")
    if not args.deadline > 0:
        raise ConfigError("--deadline", f"must be > 0 s, got {args.deadline:g}")
    if args.action == "plan":
        if not 0 < args.target <= 1:
            raise ConfigError("--target", f"a share of the rate, 0 < SHARE ≤ 1, got {args.target:g}")
        for n in args.node:
            node_name(n, "--node")
        return
    parse_slot(args.slot, args.hash_slots, "slot")
    if args.to is not None:
        node_name(args.to, "--to")


def _via_control(args: Any) -> int:
    """``split``/``merge`` as ``migrate`` does it: one ``Reshard`` call, then the job followed
    (through a controller fail-over) to its end."""
    from gate.pb.epochgate.v1 import epochgate_pb2 as pb

    from .._tokens import read_token_file
    from .cli_client import CliClient, CliError
    from .cli_follow import follow

    if args.token_file:
        args.token = read_token_file(args.token_file, "--token-file")
    try:
        client = CliClient(args)
        try:
            job = client.call(client.migration.Reshard, pb.ReshardRequest(
                kind=args.action, slot=args.slot, to_node=args.to or "", hash_slots=args.hash_slots,
                cutover_deadline_s=args.deadline))
            print(f"job {job.id}: {job.kind} of {args.slot} submitted to {client.target}", flush=True)
            return EXIT_OK if args.no_follow else follow(client, job, sys.stdout)
        finally:
            client.close()
    except CliError as exc:
        sys.stdout.flush()
        print(f"error: {exc}", file=sys.stderr)
        return exc.code


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        _check(args)
        if args.consul is None:
            if args.action == "plan" or args.dry_run:
                raise ConfigError("--consul", f"{'plan' if args.action == 'plan' else '--dry-run'} reads the "
                                  "table from Consul: give --consul URL")
            return _via_control(args)
        return asyncio.run(_run(args))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BackendError as exc:     # before MigrationError: it is one (retryable), not a refusal
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except MigrationError as exc:   # refused by the machine or a live job (e.g. the slot is moving)
        print(f"error: refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        return 130
