"""The one exception tree of epochgate.

    EpochgateError
    ├── MigrationError                 an inapplicable transition; nothing changed
    │   ├── UnknownPartition           the partition is not in the table
    │   ├── AlreadyMigrating           begin_migration on a draining/cutover partition
    │   ├── NotMigrating               enter_cutover/complete/abort on an active partition
    │   ├── NotDraining                enter_cutover on a partition already in cutover
    │   ├── NotCutover                 complete_migration on a draining partition
    │   ├── NoOpMove                   begin_migration to the node that already owns it
    │   └── BackendError               a distributed store could not be reached: retryable
    │       ├── ConflictError          compare-and-set lost too many times in a row
    │       └── ConsulUnreachable      no connection to the Consul agent at all (refused, no route)
    ├── ConfigError                    bad configuration; the message names the field
    │   └── PlacementFileError         bad placement file; the message names the entry
    ├── GateUnavailable                the write gate could not be asked (fail closed)
    ├── StaleEpoch                     the commit-point admit refused the write; roll back
    ├── UnstampedWrite                 a write arrived without the sidecar's stamped headers
    └── MisdirectedWrite               a write stamped for another node reached this one (421)

``MigrationError.Backend`` is ``BackendError`` (DESIGN §3), so callers may write
``except MigrationError.Backend``.  Foreign exceptions (aiohttp, py-consul, grpc)
are re-raised as one of these with ``raise ... from exc``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._types import Reject


class EpochgateError(Exception):
    """Root of every error epochgate raises on purpose."""


class MigrationError(EpochgateError):
    """A transition that does not apply to the partition's current state.

    ``partition`` names the partition; the store is unchanged.
    """

    Backend: type["BackendError"]

    def __init__(self, message: str, partition: str | None = None) -> None:
        super().__init__(message)
        self.partition = partition


class UnknownPartition(MigrationError):
    """The partition is not in the table."""


class AlreadyMigrating(MigrationError):
    """``begin_migration`` on a partition that is already draining or in cutover."""


class NotMigrating(MigrationError):
    """A migration step on a partition that is active (no migration in progress)."""


class NotDraining(MigrationError):
    """``enter_cutover`` on a partition that is migrating but not draining."""


class NotCutover(MigrationError):
    """``complete_migration`` on a partition that is migrating but not in cutover."""


class NoOpMove(MigrationError):
    """``begin_migration`` to the node that already owns the partition."""


class BackendError(MigrationError):
    """The distributed store could not be reached or answered badly. Retryable."""


class ConflictError(BackendError):
    """A compare-and-set kept losing to concurrent writers past the retry bound."""


class ConsulUnreachable(BackendError):
    """No connection to the Consul agent could be made (refused, unresolvable, no route).

    Kept apart from other backend failures so a process waiting for its agent says so
    once, on one line with backoff (``gate/_reachability.py``), instead of a warning per
    attempt from every loop that talks to Consul."""

    def __init__(self, message: str, url: str, reason: str) -> None:
        super().__init__(message)
        self.url = url
        self.reason = reason


MigrationError.Backend = BackendError


class ConfigError(EpochgateError, ValueError):
    """Invalid configuration. ``field`` names the offending setting."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class PlacementFileError(ConfigError):
    """Invalid placement file. ``field`` names the bad entry (e.g. ``partitions.t1``)."""


class GateUnavailable(EpochgateError):
    """The write gate could not be consulted; the write must be refused."""


class StaleEpoch(EpochgateError):
    """The commit-point admit refused this write: roll the transaction back.

    ``reject`` is the ``Reject`` (reason, current placement, phase); ``partition``
    and ``epoch`` are what the request was stamped with. The gate middlewares
    turn it into the stale-epoch problem document (HTTP 503) or ``ABORTED``.
    """

    def __init__(self, reject: "Reject", partition: str, epoch: int) -> None:
        super().__init__(f"write to partition {partition!r} at epoch {int(epoch)} refused: {reject.reason}")
        self.reject = reject
        self.partition = partition
        self.epoch = epoch


class UnstampedWrite(EpochgateError):
    """A write reached the application without a valid stamp from the sidecar.

    ``field`` names the missing or malformed header (``X-Partition`` or
    ``X-Placement-Epoch``).
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class MisdirectedWrite(EpochgateError):
    """A write whose ``X-Placement`` names another node reached this node.

    Raised before the handler runs, only when the application configured its own
    node name (``aiohttp_middleware(..., node=NAME)``): a swapped placement URL or a
    node bound to another's port must not commit there. ``placement`` is the node
    the sidecar stamped, ``node`` this one. The gate middleware answers 421
    (``misdirected-write`` problem), which the sidecar relays and never retries.
    """

    def __init__(self, partition: str, placement: str, node: str) -> None:
        super().__init__(f"write to partition {partition!r} stamped for node {placement!r} reached node {node!r}")
        self.partition = partition
        self.placement = placement
        self.node = node
