"""Fencing the mover (DESIGN §6): what an application checks in its import hook.

A controller can be paused (GC, VM steal, SIGSTOP) or cut off while an import
it sent is still on its way. A lock checked by the controller cannot stop that
import from landing after another controller flipped the partition, and an
upsert of an old snapshot would then overwrite newer acknowledged writes. So
every call that writes on the target carries a *fencing token*: the partition
epoch of the migration attempt's phase (draining for the bulk copy, cutover
for the delta), strictly increasing per partition across attempts and
controllers. The receiving application keeps the highest token it has seen
per partition **in the same transaction as the import** and refuses a lower
one (409, problem ``type`` ending ``stale-mover``). Equal tokens are accepted:
the batches of one phase share theirs.

The check is three lines in any store::

    fence = MoverFence.from_headers(request.headers, partition)   # 400 on a bad header
    async with db.transaction() as tx:
        fence.check(await tx.highest_fence(partition))           # raises StaleMover
        await tx.save_fence(partition, fence.token)
        ...upsert the rows...

``sqlite_fence(conn, partition, token)`` does the two middle lines for a
``sqlite3`` connection inside an open transaction (the example app uses it).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Mapping

from ._exceptions import ConfigError, EpochgateError, MigrationError
from ._problem import PROBLEM_TYPE_PREFIX, ProblemDocument
from ._types import partition_id

FENCE_HEADER = "X-Epochgate-Fence"
STALE_MOVER_TYPE = PROBLEM_TYPE_PREFIX + "stale-mover"

_SQLITE_SCHEMA = ("CREATE TABLE IF NOT EXISTS epochgate_fence "
                  "(partition TEXT PRIMARY KEY, token INTEGER NOT NULL)")


class StaleAttempt(MigrationError):
    """A transition asked ``at_epoch`` E found the partition at another epoch: the
    attempt that asked was superseded (a paused controller); nothing was written."""


def stale_attempt(op: str, partition: str, seqno: int, at_epoch: int) -> StaleAttempt:
    """The refusal of an ``at_epoch`` transition, built in one place for the one-by-one
    path (``ConsensusStore._transition``) and the batched one (``GroupCommit._commit``)."""
    return StaleAttempt(f"{op} {partition!r}: the partition is at epoch {seqno}, "
                        f"not {int(at_epoch)}: a newer attempt moved it", partition)


class StaleMover(EpochgateError):
    """A data-moving call carried a fencing token lower than one the target already saw:
    it comes from a superseded migration attempt (a paused controller, a delayed
    packet). The import must not be applied; answer ``problem()`` (409)."""

    def __init__(self, partition: str, token: int, highest: int) -> None:
        super().__init__(f"partition {partition!r}: mover token {token} is older than {highest} "
                         "(a superseded migration attempt)")
        self.partition, self.token, self.highest = partition, token, highest

    def problem(self) -> ProblemDocument:
        """The 409 problem document the hook answers (not retryable)."""
        return ProblemDocument(409, {
            "type": STALE_MOVER_TYPE,
            "title": "Import from a superseded migration attempt",
            "status": 409,
            "detail": str(self),
            "partition": self.partition,
            "token": self.token,
            "highest": self.highest,
        })


@dataclass(frozen=True, slots=True)
class MoverFence:
    """The fencing token a data-moving call carries for one partition."""

    partition: str
    token: int

    def __post_init__(self) -> None:
        partition_id(self.partition)
        if isinstance(self.token, bool) or not isinstance(self.token, int) or self.token < 1:
            raise ConfigError(FENCE_HEADER, f"must be a positive integer, got {self.token!r}")

    @classmethod
    def parse(cls, partition: str, raw: str | None) -> "MoverFence":
        """From the header value; ``ConfigError`` naming the header when missing or bad."""
        if raw is None or not raw.strip():
            raise ConfigError(FENCE_HEADER, "missing: every import must carry the mover's fencing token")
        text = raw.strip()
        if not text.isdigit() or len(text) > 19:
            raise ConfigError(FENCE_HEADER, f"must be a positive integer, got {raw[:40]!r}")
        return cls(partition, int(text))

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], partition: str) -> "MoverFence":
        return cls.parse(partition, headers.get(FENCE_HEADER))

    def check(self, highest: int | None) -> None:
        """Raise ``StaleMover`` when ``highest`` (the largest token stored for the
        partition, ``None`` if none) is above this token."""
        check_fence(self.partition, self.token, highest)


def check_fence(partition: str, token: int, highest: int | None) -> None:
    """The rule itself: a token lower than the highest seen is refused."""
    if highest is not None and token < highest:
        raise StaleMover(partition, token, highest)


def sqlite_fence(conn: sqlite3.Connection, partition: str, token: int) -> int | None:
    """Check and record ``token`` for ``partition`` inside the caller's open transaction
    on ``conn`` (call it after ``BEGIN IMMEDIATE``, before the import's rows, and
    commit both together). Returns the previous highest token; raises ``StaleMover``
    (the caller rolls back). Creates its table ``epochgate_fence`` on first use."""
    conn.execute(_SQLITE_SCHEMA)
    row = conn.execute("SELECT token FROM epochgate_fence WHERE partition = ?", (partition,)).fetchone()
    highest = None if row is None else int(row[0])
    check_fence(partition, token, highest)
    if highest is None or token > highest:
        conn.execute("INSERT INTO epochgate_fence (partition, token) VALUES (?, ?) "
                     "ON CONFLICT (partition) DO UPDATE SET token = excluded.token", (partition, token))
    return highest
