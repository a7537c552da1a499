"""The example key-value service (DESIGN §11) as an aiohttp application.

    PUT /kv/{key}    body = value; partition from X-Partition, epoch from X-Placement-Epoch
    GET /kv/{key}    the value (404 if absent)
    GET /healthz     "ok"

Each PUT is admitted again at its commit point — inside the SQLite
transaction, right before COMMIT — through ``gate``'s aiohttp middleware and
``current_guard()``. A refusal rolls the transaction back and the middleware
answers the stale-epoch problem (503), which the sidecar retries. A committed
write is appended to ``DIR/commits.jsonl`` right after COMMIT, before the
response is sent, so the log holds every write a client saw acknowledged.
Concurrent writes are group-committed (one transaction, one round of admits).

The mover hooks (``/_epochgate/export|import|delta``) are not gated: the
controller's mover copies data to a node that is not the partition's
placement yet, and those copies are not client commits (they are not logged).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from aiohttp import web

from gate import aiohttp_middleware, current_guard
from gate._problem import PROBLEM_CONTENT_TYPE
from gate._types import partition_id

from ._store import KvStore

CURSOR_HEADER = "X-Epochgate-Cursor"
NDJSON = "application/x-ndjson"
HOOKS = "/_epochgate/"

STORE_KEY = web.AppKey("store", KvStore)
NODE_KEY = web.AppKey("node", str)
LOG_KEY = web.AppKey("commit_log", int)


def _problem(status: int, field: str, detail: str) -> web.Response:
    title = {400: "Bad Request", 404: "Not Found"}.get(status, "Error")
    body = {"type": "about:blank", "title": title, "status": status, "detail": f"{field}: {detail}", "field": field}
    return web.Response(status=status, body=json.dumps(body).encode(), content_type=PROBLEM_CONTENT_TYPE)


def _partition(request: web.Request, source: str) -> str | web.Response:
    """The partition from the stamped header (data path) or the query (mover hooks)."""
    raw = request.headers.get("X-Partition") if source == "header" else request.query.get("partition")
    name = "X-Partition" if source == "header" else "partition"
    if raw is None:
        return _problem(400, name, "missing" + (" (send requests through the epochgate sidecar)" if source == "header" else ""))
    try:
        return partition_id(raw, name)
    except ValueError as exc:
        return _problem(400, name, str(exc).split(": ", 1)[-1])


async def put_kv(request: web.Request) -> web.StreamResponse:
    partition = _partition(request, "header")
    if isinstance(partition, web.Response):
        return partition
    key = request.match_info["key"]
    try:
        value = (await request.read()).decode("utf-8")
    except UnicodeDecodeError:
        return _problem(400, "body", "the value must be UTF-8 text")
    guard = current_guard()  # built by the gate middleware from the stamped headers
    # The commit point: the store asks the guard inside the transaction, right
    # before COMMIT; a refusal (StaleEpoch) leaves the write out of it.
    seq, _ = await request.app[STORE_KEY].put_admitted(partition, key, value, guard)
    epoch = int(guard.epoch) if guard.epoch is not None else None
    return web.json_response({"partition": partition, "key": key, "node": request.app[NODE_KEY],
                              "epoch": epoch, "seq": seq})


async def get_kv(request: web.Request) -> web.StreamResponse:
    partition = _partition(request, "header")
    if isinstance(partition, web.Response):
        return partition
    value = request.app[STORE_KEY].get(partition, request.match_info["key"])
    if value is None:
        return _problem(404, "key", f"no key {request.match_info['key']!r} in partition {partition!r}")
    return web.Response(text=value, headers={"X-Node": request.app[NODE_KEY]})


def _ndjson(cursor: int, rows: list[tuple[str, str]]) -> web.Response:
    body = b"".join(json.dumps({"key": k, "value": v}, ensure_ascii=False).encode() + b"\n" for k, v in rows)
    return web.Response(body=body, content_type=NDJSON, headers={CURSOR_HEADER: str(cursor)})


async def export_hook(request: web.Request) -> web.StreamResponse:
    partition = _partition(request, "query")
    if isinstance(partition, web.Response):
        return partition
    return _ndjson(*request.app[STORE_KEY].export(partition))


async def delta_hook(request: web.Request) -> web.StreamResponse:
    partition = _partition(request, "query")
    if isinstance(partition, web.Response):
        return partition
    since = request.query.get("since", "")
    if not since.isdigit():
        return _problem(400, "since", f"expected a cursor (a non-negative integer), got {since!r}")
    return _ndjson(*request.app[STORE_KEY].delta(partition, int(since)))


async def import_hook(request: web.Request) -> web.StreamResponse:
    partition = _partition(request, "query")
    if isinstance(partition, web.Response):
        return partition
    rows: list[tuple[str, str]] = []
    for n, raw in enumerate((await request.read()).splitlines(), 1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except ValueError:
            return _problem(400, f"line {n}", "not JSON")
        if not (isinstance(item, dict) and isinstance(item.get("key"), str) and isinstance(item.get("value"), str)):
            return _problem(400, f"line {n}", 'expected {"key": string, "value": string}')
        rows.append((item["key"], item["value"]))
    return web.json_response({"imported": await request.app[STORE_KEY].import_rows(partition, rows)})


async def size_hook(request: web.Request) -> web.StreamResponse:
    """The partition's size for ``migrate --dry-run``: keys, and the bytes an export would send."""
    partition = _partition(request, "query")
    if isinstance(partition, web.Response):
        return partition
    keys, size = request.app[STORE_KEY].size(partition)
    return web.json_response({"partition": partition, "keys": keys, "bytes": size})


async def healthz(request: web.Request) -> web.StreamResponse:
    return web.Response(text="ok")


def _gated(admitter: Any) -> Any:
    """The gate middleware for the data path; the mover hooks and /healthz bypass it."""
    gate_mw = aiohttp_middleware(admitter)

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith(HOOKS) or request.path == "/healthz":
            return await handler(request)
        return await gate_mw(request, handler)

    return middleware


def build_app(node: str, data_dir: str | Path, admitter: Any) -> web.Application:
    """The app for one node. ``admitter`` answers the commit-point admit
    (``gate.AdmitClient`` for the sidecar's Gate API, or ``gate.LocalAdmitter``)."""
    data = Path(data_dir)
    data.mkdir(parents=True, exist_ok=True)
    app = web.Application(middlewares=[_gated(admitter)], client_max_size=64 * 1024 * 1024)
    app[NODE_KEY] = node
    log_fd = os.open(data / "commits.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def log_commits(rows: list[tuple], t: float) -> None:
        # Written after COMMIT and before any client hears back, so the log
        # holds every acknowledged write (and a commit whose client went away).
        lines = b"".join(
            json.dumps({"partition": p, "key": k, "value": v, "node": node,
                        "epoch": None if e is None else int(e), "t": t}, ensure_ascii=False).encode() + b"\n"
            for p, k, v, e, _ in rows)
        os.write(log_fd, lines)  # O_APPEND: one write per batch

    app[STORE_KEY] = KvStore(data / "kv.sqlite", on_commit=log_commits)
    app[LOG_KEY] = log_fd

    async def close(app: web.Application) -> None:
        app[STORE_KEY].close()
        os.close(app[LOG_KEY])

    app.on_cleanup.append(close)
    app.router.add_put("/kv/{key}", put_kv)
    app.router.add_get("/kv/{key}", get_kv)
    app.router.add_get(HOOKS + "export", export_hook)
    app.router.add_get(HOOKS + "delta", delta_hook)
    app.router.add_post(HOOKS + "import", import_hook)
    app.router.add_get(HOOKS + "size", size_hook)
    app.router.add_get("/healthz", healthz)
    return app

