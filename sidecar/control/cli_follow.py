"""``migrate`` followed to its end: the job's progress as it goes, through a
controller fail-over (the stream is asked again for up to ``FOLLOW_RECONNECT_S``;
``drain``/``balance`` follow their operation the same way: ``reconnect_or_raise``)."""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

import grpc

from gate.pb.epochgate.v1 import epochgate_pb2 as pb

from ..api import convert as conv
from .cli_client import EXIT_INTERRUPTED, EXIT_OK, EXIT_UNREACHABLE, CliClient, CliError, outcome_status
from .cli_show import job_summary, size, ts_ms
from .jobstatus import JobStatus

_STEPS = tuple(s.value for s in JobStatus if s not in (JobStatus.FAILED, JobStatus.ABORTED))
FOLLOW_RECONNECT_S = 30.0  # a controller fail-over (Consul lock) fits in this


class StatusLine:
    """A status line redrawn in place on a terminal (carriage return, erase line), with
    event lines printed above it; on anything else (a pipe, a log file) plain lines, a
    status only when it changed. A dozen lines of ANSI: no progress library earns its
    place for one line."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        isatty = getattr(out, "isatty", None)
        self.tty = bool(isatty and isatty())
        self.current: str | None = None
        self.shown = False

    def line(self, text: str) -> None:
        """An event: it stays in the scroll-back, above the status."""
        if self.shown:
            self.out.write("\r\x1b[K")
        self.out.write(text + "\n")
        if self.shown and self.current is not None:
            self.out.write(self.current)
        self.out.flush()

    def status(self, text: str) -> None:
        if self.tty:
            self.out.write("\r\x1b[K" + text)
            self.shown = True
        elif text != self.current:
            self.out.write(text + "\n")
        self.current = text
        self.out.flush()

    def finish(self) -> None:
        """Leave the last status on its own line."""
        if self.shown:
            self.out.write("\n")
            self.out.flush()
            self.shown = False


class Progress:
    """A one-line bar redrawn in place on a terminal; a plain line per phase otherwise."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.view = StatusLine(out)
        self.tty = self.view.tty
        self.last: tuple[str, int] | None = None
        self.phases_seen = 0

    def update(self, job: pb.Job) -> None:
        if self.tty:
            step = _STEPS.index(job.status) if job.status in _STEPS else len(_STEPS) - 1
            filled = round(20 * step / (len(_STEPS) - 1))
            elapsed = (job.finished or time.time()) - job.started if job.started else 0.0
            self.view.status(f" job {job.id} [{'#' * filled}{'.' * (20 - filled)}] {job.status:<9} "
                             f"{size(job.bytes_copied)} copied  {elapsed:.1f}s")
        else:   # one line per phase the job recorded (cutover and acked too), then per status change
            lines = []
            if self.last is None and not job.phases:
                lines.append(f"job {job.id} {job.status} bytes={job.bytes_copied}")
            for rec in job.phases[self.phases_seen:]:
                lines.append(f"job {job.id} {rec.phase} bytes={job.bytes_copied} epoch={rec.epoch} at={ts_ms(rec.at)}")
            self.phases_seen = len(job.phases)
            if not lines and self.last is not None and self.last[0] != job.status:
                lines.append(f"job {job.id} {job.status} bytes={job.bytes_copied}")
            if lines:
                self.out.write("\n".join(lines) + "\n")
                self.out.flush()
        self.last = (job.status, job.bytes_copied)

    def finish(self) -> None:
        self.view.finish()


def reconnect_or_raise(client: CliClient, exc: grpc.RpcError | CliError, give_up: float | None,
                       lost: Callable[[CliError], str]) -> float:
    """A followed stream broke. Anything but "unreachable" is raised; "unreachable" is
    waited out (a little, then the caller asks again) until ``FOLLOW_RECONNECT_S`` after
    the first loss, then raised as ``lost(err)``. Returns the give-up time to pass back."""
    err = exc if isinstance(exc, CliError) else client.error(exc)
    if err.code != EXIT_UNREACHABLE:
        raise err from None
    give_up = give_up or time.monotonic() + FOLLOW_RECONNECT_S
    if time.monotonic() > give_up:
        raise CliError(lost(err), EXIT_UNREACHABLE) from None
    time.sleep(0.5)
    return give_up


def follow(client: CliClient, job: pb.Job, out: TextIO) -> int:
    """Watch a job to its end; reconnect through a controller fail-over."""
    progress = Progress(out)
    progress.update(job)
    give_up = None
    try:
        while job.status not in conv.TERMINAL_STATUSES:
            try:
                for job in client.stream(client.migration.WatchJob, pb.JobRequest(id=job.id)):
                    give_up = None
                    progress.update(job)
                    if job.status in conv.TERMINAL_STATUSES:
                        break
                else:  # the stream ended early (controller stepping down): ask again
                    job = client.call(client.migration.GetJob, pb.JobRequest(id=job.id))
                    progress.update(job)
            except (grpc.RpcError, CliError) as exc:
                give_up = reconnect_or_raise(
                    client, exc, give_up, lambda err: f"lost the control API while following job {job.id} ({err}); "
                                                      f"the job keeps running: check it with `jobs show {job.id}`")
    except KeyboardInterrupt:
        progress.finish()
        raise CliError(f"stopped following job {job.id}; it keeps running (`jobs abort {job.id}` stops it)",
                       EXIT_INTERRUPTED) from None
    progress.finish()
    code = outcome_status(job.status)
    if code == EXIT_OK:
        out.write(job_summary(job) + "\n")
    else:   # a failed or aborted move: its line goes to stderr (issue 27), the exit status says which
        out.flush()
        print(job_summary(job), file=sys.stderr, flush=True)
    return code
