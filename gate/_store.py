"""The async store seam (DESIGN §4) and the embedded table behind it.

``MigrationStore`` is what the controller drives and the control API serves.
``EmbeddedStore`` puts a ``PlacementTable`` behind it, so a controller written
against the protocol runs on a single sidecar with no other service.

``PlacementSource`` is the read side a sidecar serves requests from: the
``PlacementTable`` itself (embedded) or the Consul replica. Both answer
``get``/``admit_write`` with the same code (``PlacementTable``).
"""

from __future__ import annotations

from typing import Callable, Mapping, Protocol, runtime_checkable

from ._table import PlacementTable, Subscriber
from ._types import Epoch, PartitionState, PlacementAt, WriteAdmission


@runtime_checkable
class MigrationStore(Protocol):
    """Where transitions are decided. Every method may raise ``MigrationError``
    (``BackendError`` when a distributed store cannot be reached)."""

    async def set(self, partition: str, node: str) -> Epoch: ...

    async def begin(self, partition: str, target: str) -> Epoch: ...

    async def enter_cutover(self, partition: str) -> Epoch: ...

    async def complete(self, partition: str) -> Epoch: ...

    async def abort(self, partition: str) -> Epoch: ...

    async def state(self, partition: str) -> tuple[PartitionState, Epoch] | None: ...

    async def partitions(self) -> dict[str, tuple[PartitionState, Epoch]]: ...

    async def nodes(self) -> dict[str, str]: ...

    async def set_node(self, name: str, url: str) -> None: ...


@runtime_checkable
class PlacementSource(Protocol):
    """The read side a sidecar serves from (embedded table or Consul replica)."""

    def get(self, partition: str) -> PlacementAt | None: ...

    def lookup(self, partition: str) -> PlacementAt | None: ...

    def get_or_raise(self, partition: str) -> PlacementAt: ...

    def admit_write(self, partition: str, epoch: int) -> WriteAdmission: ...

    def state(self, partition: str) -> tuple[PartitionState, Epoch] | None: ...

    def current_epoch(self) -> Epoch: ...

    def partitions(self) -> dict[str, tuple[PartitionState, Epoch]]: ...

    def subscribe(self, fn: Subscriber) -> Callable[[], None]: ...


class EmbeddedStore:
    """``MigrationStore`` over an in-process ``PlacementTable`` (and a node map)."""

    def __init__(self, table: PlacementTable | None = None, nodes: Mapping[str, str] | None = None) -> None:
        self.table = table if table is not None else PlacementTable()
        self._nodes: dict[str, str] = dict(nodes or {})

    async def set(self, partition: str, node: str) -> Epoch:
        return self.table.set(partition, node)

    async def begin(self, partition: str, target: str) -> Epoch:
        return self.table.begin_migration(partition, target)

    async def enter_cutover(self, partition: str) -> Epoch:
        return self.table.enter_cutover(partition)

    async def complete(self, partition: str) -> Epoch:
        return self.table.complete_migration(partition)

    async def abort(self, partition: str) -> Epoch:
        return self.table.abort_migration(partition)

    async def state(self, partition: str) -> tuple[PartitionState, Epoch] | None:
        return self.table.state(partition)

    async def partitions(self) -> dict[str, tuple[PartitionState, Epoch]]:
        return self.table.partitions()

    async def nodes(self) -> dict[str, str]:
        return dict(self._nodes)

    async def set_node(self, name: str, url: str) -> None:
        from ._placement_file import validate_url
        from ._types import node_name

        self._nodes[node_name(name)] = validate_url(url, f"nodes.{name}")
