"""The change log's encoding (DESIGN §4.2, §4.3): the key layout, a partition state's value, one
log entry, and ``log/head`` (one entry or a group commit's batch). Shared by the consensus store
that writes them, the reshard transaction (``_reshard_txn``) and the replica that reads them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ._exceptions import ConfigError
from ._machine import Op
from ._placement_file import validate_url
from ._types import PartitionState, node_name, partition_id

PARTITIONS = "partitions/"
LOG = "log/e/"
HEAD = "log/head"
HISTORY = "history/"
NODES = "nodes/"
#: the one op whose partition log entries may carry ``"state": null`` (the slot was removed)
REMOVED_BY = Op.COMPLETE_RESHARD.value


def log_key(seq: int) -> str:
    return f"{LOG}{seq:016d}"


def seq_of(key: str) -> int | None:
    """The sequence number in a ``log/e/<seq>`` or ``history/<p>/<seq>`` key."""
    tail = key.rsplit("/", 1)[-1]
    return int(tail) if tail.isdigit() else None


def encode_state(state: PartitionState) -> bytes:
    return json.dumps(state.to_dict(), separators=(",", ":")).encode()


def decode_state(raw: bytes) -> PartitionState:
    """Parse a ``partitions/<p>`` value; ``ValueError`` when it is not one."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON: {raw[:60]!r}") from exc
    return PartitionState.from_dict(data)


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One change: a partition's new state, or a node's new URL."""

    seq: int
    partition: str | None = None
    state: PartitionState | None = None
    op: str | None = None
    node: str | None = None
    url: str | None = None
    time: float = 0.0
    actor: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.seq, bool) or not isinstance(self.seq, int) or self.seq < 1:
            raise ValueError(f"log entry seq must be a positive int, got {self.seq!r}")
        if (self.partition is None) == (self.node is None):
            raise ValueError("a log entry names exactly one of partition and node")
        if self.partition is not None and self.state is None and self.op != REMOVED_BY:
            raise ValueError("a partition log entry needs a state (null only for a slot the flip removed)")
        if self.node is not None and not self.url:
            raise ValueError("a node log entry needs a url")

    def encode(self) -> bytes:
        out: dict[str, Any] = {"seq": self.seq, "time": round(self.time, 6), "actor": self.actor}
        if self.partition is not None:
            out.update(p=self.partition, op=self.op, state=None if self.state is None else self.state.to_dict())
        else:
            out.update(node=self.node, url=self.url)
        return json.dumps(out, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> "LogEntry":
        """Parse a log entry; ``ValueError`` on anything malformed."""
        try:
            return cls.from_dict(json.loads(raw))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"malformed log entry {raw[:80]!r}: {exc}") from exc

    @classmethod
    def from_dict(cls, d: Any) -> "LogEntry":
        """From the decoded JSON object; ``ValueError`` on anything malformed."""
        try:
            if not isinstance(d, dict):
                raise ValueError("not an object")
            if "p" in d:
                op = str(d.get("op"))
                removed = d["state"] is None and op == REMOVED_BY   # DESIGN §12.3: the flip removes the sources
                return cls(d["seq"], partition=partition_id(d["p"], "p"),
                           state=None if removed else PartitionState.from_dict(d["state"]),
                           op=op, time=float(d.get("time", 0)), actor=str(d.get("actor", "")))
            return cls(d["seq"], node=node_name(d["node"]), url=validate_url(d["url"], "url"),
                       time=float(d.get("time", 0)), actor=str(d.get("actor", "")))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError, ConfigError) as exc:
            raise ValueError(f"malformed log entry {str(d)[:80]!r}: {exc}") from exc


def encode_head(entries: list[LogEntry]) -> bytes:
    """The value of ``log/head``: the newest entry, or — when a group commit wrote
    several in one transaction — ``{"batch": [...]}`` holding all of them, oldest
    first, so a replica gets the whole commit in one blocking-query answer."""
    if len(entries) == 1:
        return entries[0].encode()
    return b'{"batch":[' + b",".join(e.encode() for e in entries) + b"]}"


def decode_head(raw: bytes) -> list[LogEntry]:
    """The entries a ``log/head`` value holds (one, or a group commit's batch),
    in seq order; ``ValueError`` when malformed or not consecutive."""
    try:
        d = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"malformed log head {raw[:80]!r}: {exc}") from exc
    if isinstance(d, dict) and "batch" in d:
        rows = d["batch"]
        if not isinstance(rows, list) or not rows:
            raise ValueError("a log head batch must be a non-empty list")
        out = [LogEntry.from_dict(r) for r in rows]
        if any(b.seq != a.seq + 1 for a, b in zip(out, out[1:])):
            raise ValueError("a log head batch must hold consecutive seqs")
        return out
    return [LogEntry.from_dict(d)]
