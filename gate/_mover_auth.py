"""The mover credential (DESIGN §6): the hooks belong to the controller's trust domain.

Anyone who can call an application's ``/_epochgate/`` hooks can read or
overwrite any partition, so the hooks require a credential only the controller
holds, sent as ``X-Epochgate-Mover-Token``. Provisioning adds no flag:

* ``EPOCHGATE_MOVER_TOKEN`` (the value, or the absolute path of a file holding
  it) wins on both sides when set;
* else, in Consul mode, the controller creates ``<prefix>mover/token`` (a random
  value, compare-and-set so two controllers agree) if it is absent, and an
  application started with ``--consul`` reads it there. Consul ACLs decide who
  may read that key: give it to the controller and the applications only.

An application with neither answers every hook call 401.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import TYPE_CHECKING
import os
import secrets
import time
from typing import Awaitable, Callable, Mapping

from ._exceptions import BackendError, ConfigError

if TYPE_CHECKING:
    from ._sessions import ConsulHTTP

MOVER_TOKEN_ENV = "EPOCHGATE_MOVER_TOKEN"
MOVER_TOKEN_HEADER = "X-Epochgate-Mover-Token"
MOVER_TOKEN_KEY = "mover/token"


def mover_token_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """``EPOCHGATE_MOVER_TOKEN``: the token, or an absolute path to a file holding it."""
    raw = (os.environ if environ is None else environ).get(MOVER_TOKEN_ENV, "").strip()
    if not raw:
        return None
    if os.path.isabs(raw):
        try:
            with open(raw, encoding="utf-8") as fh:
                raw = fh.read().strip()
        except OSError as exc:
            raise ConfigError(MOVER_TOKEN_ENV, f"cannot read {raw}: {exc.strerror or exc}") from exc
        if not raw:
            raise ConfigError(MOVER_TOKEN_ENV, "the file is empty")
    if len(raw) < 16:
        raise ConfigError(MOVER_TOKEN_ENV, "must be at least 16 characters")
    return raw


async def provision_mover_token(consul: "ConsulHTTP", prefix: str) -> str:
    """The controller's side: read ``<prefix>mover/token``, creating it if absent
    (``consul`` is a ``gate._sessions.ConsulHTTP``)."""
    key = prefix + MOVER_TOKEN_KEY
    for _ in range(5):
        entry = await consul.get(key)
        if entry is not None and entry.value.strip():
            token: str = entry.value.decode().strip()
            return token
        if await consul.put(key, secrets.token_urlsafe(32).encode(), cas=0 if entry is None else entry.modify_index):
            continue   # re-read what we wrote (or what a racing controller wrote)
    raise BackendError(f"could not provision {key}")


async def read_mover_token(consul: "ConsulHTTP", prefix: str) -> str | None:
    """The application's side in Consul mode: the token, or ``None`` if not provisioned yet."""
    entry = await consul.get(prefix + MOVER_TOKEN_KEY)
    if entry is None or not entry.value.strip():
        return None
    value: str = entry.value.decode().strip()
    return value


class MoverAuth:
    """Verifies a hook call's credential. ``fixed`` (from the environment) wins;
    else ``fetch`` (e.g. ``read_mover_token``) is asked, cached, and asked again at
    most once a second when a call presents another value (rotation)."""

    def __init__(self, fixed: str | None = None,
                 fetch: Callable[[], Awaitable[str | None]] | None = None) -> None:
        self.fixed, self.fetch = fixed, fetch
        self._cached: str | None = None
        self._fetched_at = float("-inf")
        self._fetching: asyncio.Task[bool] | None = None  # the one fetch in flight, shared

    @property
    def configured(self) -> bool:
        return self.fixed is not None or self.fetch is not None

    async def verify(self, presented: str | None) -> bool:
        if not presented:
            return False
        if self.fixed is not None:
            return hmac.compare_digest(presented.encode(), self.fixed.encode())
        if self.fetch is None:
            return False
        if self._cached is not None and hmac.compare_digest(presented.encode(), self._cached.encode()):
            return True
        fetching = self._fetching
        if fetching is None:
            if time.monotonic() - self._fetched_at < 1.0:
                return False
            self._fetched_at = time.monotonic()
            fetching = self._fetching = asyncio.get_running_loop().create_task(self._refresh(self.fetch))
        # Calls arriving while the fetch is in flight wait for it instead of being refused by the
        # once-a-second bound: the controller's parallel first hook calls (a drain's jobs) each
        # got a 401 but one (scripts/fleet --check in CI). Shielded: a caller that goes away
        # does not cancel the others' fetch.
        if not await asyncio.shield(fetching):
            return False
        return self._cached is not None and hmac.compare_digest(presented.encode(), self._cached.encode())

    async def _refresh(self, fetch: Callable[[], Awaitable[str | None]]) -> bool:
        """Read the credential again; False when the store could not be read."""
        try:
            self._cached = await fetch()
            return True
        except BackendError:
            return False
        finally:
            self._fetching = None
