"""The example key-value service (DESIGN §11): SQLite per node, behind sidecars,
admitting every commit at its commit point, serving the mover hooks."""

from ._app import CURSOR_HEADER, build_app
from ._store import KvStore

__all__ = ["CURSOR_HEADER", "KvStore", "build_app"]
