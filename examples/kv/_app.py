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
They belong to the controller's trust domain (DESIGN §6): every call needs the
mover credential (``X-Epochgate-Mover-Token``, see ``gate._mover_auth``), and an
import carries a fencing token (``X-Epochgate-Fence``) that is checked and
recorded in the same SQLite transaction as the rows (``gate.sqlite_fence``): an
import from a superseded attempt is refused with 409 ``stale-mover``.

Resharding (DESIGN §12.4): export and delta take a key filter ``slot=I&of=M`` (the
rows whose key — the example's partition key — has ``crc32 mod M = I``) and echo it in
``X-Epochgate-Filter``; ``POST /_epochgate/cleanup?partition=P[&slot=I&of=M]`` deletes
the partition's (filtered) rows, fenced like an import and idempotent, and appends one
line to ``DIR/cleanups.jsonl`` (``partition, node, deleted, fence, filter, t``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from gate import (
    MOVER_TOKEN_HEADER,
    PROBLEM_CONTENT_TYPE,
    FILTER_HEADER,
    ConfigError,
    MoverAuth,
    MoverFence,
    StaleMover,
    aiohttp_middleware,
    current_guard,
    filter_text,
    mover_token_from_env,
    partition_id,
    slot_filter,
)

from ._store import KvStore

CURSOR_HEADER = "X-Epochgate-Cursor"
NDJSON = "application/x-ndjson"
HOOKS = "/_epochgate/"

STORE_KEY = web.AppKey("store", KvStore)
NODE_KEY = web.AppKey("node", str)
LOG_KEY = web.AppKey("commit_log", int)
AUTH_KEY = web.AppKey("mover_auth", MoverAuth)
IMPORTS_KEY = web.AppKey("imports_total", Counter)
REGISTRY_KEY = web.AppKey("registry", CollectorRegistry)
CLEANUP_LOG_KEY = web.AppKey("cleanup_log", int)
# Test-only switch (tests/test_fencing_e2e.py shows the loss without the fence): the
# fencing token is still recorded but never refuses an import.
UNFENCED = os.environ.get("EPOCHGATE_TEST_UNFENCED_IMPORT") == "1"


def _problem(status: int, field: str, detail: str) -> web.Response:
    title = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}.get(status, "Error")
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


def _ndjson(cursor: int, rows: list[tuple[str, str]], only: Any = None) -> web.Response:
    body = b"".join(json.dumps({"key": k, "value": v}, ensure_ascii=False).encode() + b"\n" for k, v in rows)
    headers = {CURSOR_HEADER: str(cursor)}
    if only is not None:
        headers[FILTER_HEADER] = filter_text(only)   # says the filter was applied (DESIGN §12.4)
    return web.Response(body=body, content_type=NDJSON, headers=headers)


def _filter(request: web.Request) -> Any:
    """The key filter asked for (a ``gate.Slot`` or None), or the 400 problem naming the parameter."""
    try:
        return slot_filter(request.query)
    except ConfigError as exc:
        return _problem(400, exc.field, str(exc).split(": ", 1)[-1])


async def _hook_partition(request: web.Request) -> str | web.Response:
    """The mover credential, then the partition: what every hook checks first."""
    auth = request.app[AUTH_KEY]
    if not await auth.verify(request.headers.get(MOVER_TOKEN_HEADER)):
        why = ("missing or wrong" if auth.configured else
               "no mover credential configured here (set EPOCHGATE_MOVER_TOKEN or start with --consul);")
        return _problem(401, MOVER_TOKEN_HEADER, f"{why} the /_epochgate/ hooks are for the migration controller")
    return _partition(request, "query")


async def _hook_rows(request: web.Request) -> tuple[str, Any] | web.Response:
    """The credential, the partition and the key filter (DESIGN §12.4): what export, delta and
    clean-up check first."""
    partition = await _hook_partition(request)
    if isinstance(partition, web.Response):
        return partition
    only = _filter(request)
    if isinstance(only, web.Response):
        return only
    return partition, only


def _stale(exc: StaleMover) -> web.Response:
    doc = exc.problem()
    return web.Response(status=doc.status, body=doc.encode(), content_type=PROBLEM_CONTENT_TYPE)


async def export_hook(request: web.Request) -> web.StreamResponse:
    asked = await _hook_rows(request)
    if isinstance(asked, web.Response):
        return asked
    partition, only = asked
    return _ndjson(*request.app[STORE_KEY].export(partition, only), only)


async def delta_hook(request: web.Request) -> web.StreamResponse:
    asked = await _hook_rows(request)
    if isinstance(asked, web.Response):
        return asked
    partition, only = asked
    since = request.query.get("since", "")
    if not since.isdigit():
        return _problem(400, "since", f"expected a cursor (a non-negative integer), got {since!r}")
    return _ndjson(*request.app[STORE_KEY].delta(partition, int(since), only), only)


async def cleanup_hook(request: web.Request) -> web.StreamResponse:
    """Delete a partition's (filtered) rows here: after a reshard's flip on its source, before a
    bulk import on its destination (DESIGN §12.4). Fenced like an import; idempotent."""
    asked = await _hook_rows(request)
    if isinstance(asked, web.Response):
        return asked
    partition, only = asked
    try:
        fence = MoverFence.from_headers(request.headers, partition)
    except ConfigError as exc:
        return _problem(400, exc.field, str(exc).split(": ", 1)[-1])
    try:
        n = await request.app[STORE_KEY].cleanup(partition, fence=fence.token, only=only)
    except StaleMover as exc:
        return _stale(exc)
    line = {"partition": partition, "node": request.app[NODE_KEY], "deleted": n, "fence": fence.token,
            "filter": None if only is None else filter_text(only), "t": time.time()}
    os.write(request.app[CLEANUP_LOG_KEY], json.dumps(line).encode() + b"\n")
    return web.json_response({"deleted": n})


async def import_hook(request: web.Request) -> web.StreamResponse:
    partition = await _hook_partition(request)
    if isinstance(partition, web.Response):
        return partition
    try:
        fence = MoverFence.from_headers(request.headers, partition)
    except ConfigError as exc:
        return _problem(400, exc.field, str(exc).split(": ", 1)[-1])
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
    try:
        n = await request.app[STORE_KEY].import_rows(partition, rows, fence=fence.token, unfenced=UNFENCED)
    except StaleMover as exc:
        request.app[IMPORTS_KEY].labels("stale").inc()
        return _stale(exc)
    request.app[IMPORTS_KEY].labels("ok").inc()
    return web.json_response({"imported": n})


async def metrics(request: web.Request) -> web.StreamResponse:
    return web.Response(body=generate_latest(request.app[REGISTRY_KEY]), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def size_hook(request: web.Request) -> web.StreamResponse:
    """The partition's size for ``migrate --dry-run``: keys, and the bytes an export would send."""
    partition = _partition(request, "query")
    if isinstance(partition, web.Response):
        return partition
    keys, size = request.app[STORE_KEY].size(partition)
    return web.json_response({"partition": partition, "keys": keys, "bytes": size})


async def healthz(request: web.Request) -> web.StreamResponse:
    return web.Response(text="ok")


def _gated(admitter: Any, node: str) -> Any:
    """The gate middleware for the data path; the mover hooks and /healthz bypass it.
    ``node`` makes it refuse (421) a write the sidecar stamped for another node."""
    gate_mw = aiohttp_middleware(admitter, node=node)

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith(HOOKS) or request.path in ("/healthz", "/metrics"):
            return await handler(request)
        return await gate_mw(request, handler)

    return middleware


def build_app(node: str, data_dir: str | Path, admitter: Any, mover_auth: MoverAuth | None = None) -> web.Application:
    """The app for one node. ``admitter`` answers the commit-point admit
    (``gate.AdmitClient`` for the sidecar's Gate API, or ``gate.LocalAdmitter``);
    ``mover_auth`` checks the hooks' credential (default: ``EPOCHGATE_MOVER_TOKEN``)."""
    data = Path(data_dir)
    data.mkdir(parents=True, exist_ok=True)
    app = web.Application(middlewares=[_gated(admitter, node)], client_max_size=64 * 1024 * 1024)
    app[NODE_KEY] = node
    app[AUTH_KEY] = mover_auth if mover_auth is not None else MoverAuth(mover_token_from_env())
    app[REGISTRY_KEY] = registry = CollectorRegistry()
    app[IMPORTS_KEY] = Counter("epochgate_mover_imports", "Mover imports by outcome (stale = refused by the fence)",
                               ["outcome"], registry=registry)
    for outcome in ("ok", "stale"):
        app[IMPORTS_KEY].labels(outcome)
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
    app[CLEANUP_LOG_KEY] = os.open(data / "cleanups.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    async def close(app: web.Application) -> None:
        app[STORE_KEY].close()
        os.close(app[LOG_KEY])
        os.close(app[CLEANUP_LOG_KEY])

    app.on_cleanup.append(close)
    app.router.add_put("/kv/{key}", put_kv)
    app.router.add_get("/kv/{key}", get_kv)
    app.router.add_get(HOOKS + "export", export_hook)
    app.router.add_get(HOOKS + "delta", delta_hook)
    app.router.add_post(HOOKS + "import", import_hook)
    app.router.add_post(HOOKS + "cleanup", cleanup_hook)
    app.router.add_get(HOOKS + "size", size_hook)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app

