"""Are the listen ports a script is about to use free? One line per busy port, naming the
environment variable that moves it; exit 3 if any is taken (nothing has been started yet).

    python3 scripts/_ports.py WHO PORT=VARIABLE[:what] ...

A port counts as busy when a server could not bind it the way ours do (SO_REUSEADDR on
127.0.0.1, as asyncio's servers set it): a listener, not a TIME_WAIT left by an earlier run.
Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import errno
import socket
import sys


def busy(port: int) -> str | None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            return "in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
    return None


def main(argv: list[str]) -> int:
    who, specs = argv[0], argv[1:]
    bad = 0
    for spec in specs:
        port_s, _, rest = spec.partition("=")
        var, _, what = rest.partition(":")
        why = busy(int(port_s))
        if why:
            bad += 1
            label = f" ({what})" if what else ""
            print(f"{who}: port {port_s}{label} is {why}; move it with {var}=<port>", file=sys.stderr)
    return 3 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
