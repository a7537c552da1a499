"""``python -m tests._stopping_controller controller …``: the real controller, except that
it SIGSTOPs itself once, right after its lock check and before its first import call
is sent — a GC pause / VM steal at the worst moment, made deterministic. The test
resumes it (SIGCONT) when another controller has finished the job."""

from __future__ import annotations

import os
import signal
import sys

from sidecar import _mover

_original = _mover.HttpHooksMover._post_import
_stopped = False


async def _post_import(self, url, partition, body, fence):
    global _stopped
    if not _stopped:
        _stopped = True
        print(f"stopping-controller: SIGSTOP before importing {len(body)} bytes at fence {fence}", flush=True)
        os.kill(os.getpid(), signal.SIGSTOP)
        print("stopping-controller: resumed; sending the import now", flush=True)
    return await _original(self, url, partition, body, fence)


_mover.HttpHooksMover._post_import = _post_import

if __name__ == "__main__":
    from sidecar._controller import main

    sys.exit(main(sys.argv[1:]))
