"""``python -m tests._stopping_controller controller …``: the real controller, except that
it SIGSTOPs itself once, after its own checks passed and right before one action goes out —
a GC pause / VM steal at the worst moment, made deterministic. ``EPOCHGATE_TEST_STOP_AT``:

* ``import`` (default): before its first bulk import is sent (mid-copy);
* ``delta``: before the delta import is sent (replay, in cutover);
* ``complete``: before ``complete_migration`` goes to the store (just before the flip).

The test resumes it (SIGCONT) when another controller has finished the job."""

from __future__ import annotations

import os
import signal
import sys

from sidecar.control import mover as _mover
from sidecar.control import retry as _retry

WHERE = os.environ.get("EPOCHGATE_TEST_STOP_AT", "import")
_state = {"stopped": False, "delta": False}


def _stop(what: str) -> None:
    if not _state["stopped"]:
        _state["stopped"] = True
        print(f"stopping-controller: SIGSTOP before {what}", flush=True)
        os.kill(os.getpid(), signal.SIGSTOP)
        print(f"stopping-controller: resumed; {what} now", flush=True)


_post = _mover.HttpHooksMover._post_import
_delta = _mover.HttpHooksMover.copy_delta
_complete = _retry.RetryingStore.complete


async def _post_import(self, url, partition, body, fence):
    if WHERE == "import" or (WHERE == "delta" and _state["delta"]):
        _stop(f"importing {len(body)} bytes at fence {fence}")
    return await _post(self, url, partition, body, fence)


async def _copy_delta(self, *args, **kw):
    _state["delta"] = True
    return await _delta(self, *args, **kw)


async def _complete_(self, partition, **kw):
    if WHERE == "complete":
        _stop(f"complete_migration of {partition} at_epoch {kw.get('at_epoch')}")
    return await _complete(self, partition, **kw)


_mover.HttpHooksMover._post_import = _post_import
_mover.HttpHooksMover.copy_delta = _copy_delta
_retry.RetryingStore.complete = _complete_

if __name__ == "__main__":
    from sidecar.control.controller_main import main

    sys.exit(main(sys.argv[1:]))
