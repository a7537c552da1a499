"""One Consul KV entry, apart from the client (``_sessions``) so that code that
only handles entries (the embedded controller's in-memory KV) does not load
py-consul, requests and aiohttp with it (~14 MiB resident, issue 20)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class KVEntry:
    """One key as Consul returns it (value decoded from base64)."""

    key: str
    value: bytes
    session: str | None
    modify_index: int

    @classmethod
    def from_decoded(cls, raw: dict[str, Any]) -> "KVEntry":
        """From py-consul's answer (``Value`` already decoded to bytes, or None)."""
        return cls(raw["Key"], raw.get("Value") or b"", raw.get("Session") or None,
                   int(raw.get("ModifyIndex", 0)))
