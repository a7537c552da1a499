"""``python -m sidecar`` / ``epochgate-sidecar``: the sidecar, or one of its subcommands (DESIGN §10).

    python -m sidecar [--config FILE] [flags]          the sidecar proxy
    python -m sidecar controller --consul URL …        the migration controller
    python -m sidecar migrate|jobs|partitions|nodes …  operator commands (control API clients)
    python -m sidecar reshard split|merge|plan …       resharding hash slots (docs/resharding.md)

Configuration errors print one line naming the field and exit 2.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Sequence

from ._loop import new_event_loop, settle_heap

_CLI = {"migrate", "jobs", "partitions", "nodes", "history", "drain", "balance", "ops"}


async def _serve(cfg) -> None:
    from ._sidecar import Sidecar

    sidecar = Sidecar(cfg)
    try:
        await sidecar.start()
    except BaseException:
        await sidecar.shutdown()
        raise
    sidecar.install_signals()
    settle_heap()
    await sidecar.run()


def run_sidecar(argv: Sequence[str]) -> int:
    from gate import ConfigError, EpochgateError

    from ._config import parse_args
    from ._log import setup_logging

    try:
        cfg = parse_args(argv)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    setup_logging(cfg.log_format)
    if cfg.workers > 1:
        from ._supervisor import run_supervisor

        return run_supervisor(cfg)
    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(_serve(cfg))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (EpochgateError, OSError) as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; ``argv`` includes the program name (as ``sys.argv``)."""
    argv = list(sys.argv if argv is None else argv)
    command = argv[1] if len(argv) > 1 else None
    if command == "controller":
        from .control.controller_main import main as controller_main

        return controller_main(argv[1:])
    if command == "reshard":   # issue 29: a split or merge as a controller job (DESIGN §12.6)
        from .control.reshard_cli import main as reshard_main

        return reshard_main(argv[2:])
    if command in _CLI:
        from .control.cli import main as cli_main

        return cli_main(argv[1:])
    return run_sidecar(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
