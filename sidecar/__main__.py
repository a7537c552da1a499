"""``python -m sidecar``: the sidecar, or one of its subcommands (DESIGN §10)."""

from __future__ import annotations

import sys
from typing import Sequence

_CLI = {"migrate", "jobs", "partitions", "nodes"}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    command = argv[1] if len(argv) > 1 else None
    if command == "controller":
        from ._controller import main as controller_main

        return controller_main(argv[1:])
    if command in _CLI:
        from ._cli import main as cli_main

        return cli_main(argv[1:])
    print("error: the sidecar proxy is not available in this build", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
