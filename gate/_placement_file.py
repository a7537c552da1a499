"""The placement file (DESIGN §10): TOML (or JSON by extension).

    [nodes]
    a = "http://127.0.0.1:9001"

    [partitions]
    tenant-1 = "a"

Every error names the bad entry (``partitions.tenant-1``, ``nodes.a``).
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping
from urllib.parse import urlsplit

from ._exceptions import ConfigError, PlacementFileError
from ._types import node_name, partition_id


def validate_url(url: object, field_name: str) -> str:
    """An upstream URL: ``http://host:port`` (optional path prefix) for HTTP/1.1, ``h2c://``
    for HTTP/2 with prior knowledge, ``https://`` for TLS with ALPN. Returned normalised."""
    if not isinstance(url, str) or not url:
        raise ConfigError(field_name, f"expected an http:// URL, got {url!r}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "h2c") or not parts.hostname:
        raise ConfigError(field_name, f"expected an http://, h2c:// or https://host[:port] URL, got {url!r}")
    try:
        parts.port
    except ValueError as exc:
        raise ConfigError(field_name, f"bad port in {url!r}") from exc
    if parts.query or parts.fragment:
        raise ConfigError(field_name, f"an upstream URL takes no query or fragment: {url!r}")
    return url.rstrip("/")


@dataclass(frozen=True, slots=True)
class PlacementConfig:
    """A parsed placement file: node → URL, partition → node."""

    nodes: Mapping[str, str] = field(default_factory=dict)
    partitions: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "nodes", MappingProxyType(dict(self.nodes)))
        object.__setattr__(self, "partitions", MappingProxyType(dict(self.partitions)))

    def check_nodes(self, extra_nodes: Mapping[str, str] = MappingProxyType({})) -> None:
        """Every partition's node must be known (file's ``[nodes]`` plus ``extra_nodes``)."""
        known = set(self.nodes) | set(extra_nodes)
        for p, n in self.partitions.items():
            if n not in known:
                raise PlacementFileError(
                    f"partitions.{p}", f"node {n!r} is not defined (known nodes: {', '.join(sorted(known)) or 'none'})"
                )


def parse_placement(data: Any, source: str = "placement") -> PlacementConfig:
    """Validate already-decoded placement data."""
    if not isinstance(data, dict):
        raise PlacementFileError(source, "expected a table with [nodes] and [partitions]")
    unknown = set(data) - {"nodes", "partitions"}
    if unknown:
        raise PlacementFileError(sorted(unknown)[0], "unknown section (expected 'nodes' and 'partitions')")
    nodes_raw = data.get("nodes", {})
    parts_raw = data.get("partitions", {})
    for name, value in (("nodes", nodes_raw), ("partitions", parts_raw)):
        if not isinstance(value, dict):
            raise PlacementFileError(name, f"expected a table, got {type(value).__name__}")
    try:
        nodes: dict[str, str] = {node_name(k, f"nodes.{k}"): validate_url(v, f"nodes.{k}") for k, v in nodes_raw.items()}
        partitions: dict[str, str] = {
            partition_id(k, f"partitions.{k}"): node_name(v, f"partitions.{k}") for k, v in parts_raw.items()
        }
    except PlacementFileError:
        raise
    except ConfigError as exc:
        raise PlacementFileError(exc.field, str(exc).split(": ", 1)[-1]) from exc
    # Partition → node references are checked by the caller once ``--node``
    # flags are merged in (``PlacementConfig.check_nodes``).
    return PlacementConfig(nodes, partitions)


def load_placement_file(path: str | Path) -> PlacementConfig:
    """Read and validate a placement file; ``PlacementFileError`` names what is wrong."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PlacementFileError("placement", f"cannot read {str(path)!r}: {exc.strerror}") from exc
    try:
        if path.suffix == ".json":
            data = json.loads(raw)
        else:
            data = tomllib.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise PlacementFileError("placement", f"{path}: not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {exc}") from exc
    return parse_placement(data, str(path))
