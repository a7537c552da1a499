"""A trace per migration job (the controller): copy, pre-barrier, barrier, delta, flip.

One root span ``migrate <partition>`` (INTERNAL; attributes: job id, partition,
source and target nodes, final status, error) and a child span per phase the job
went through, in order: ``begin`` (the draining transition), ``copy`` (bulk copy),
``pre-barrier``, ``barrier`` (enter cutover, list, wait for acks), ``delta`` (copy
the writes since the export cursor) and ``flip`` (the transition to active on the
target). A barrier span (and a pre-barrier slice) carries one event per participant
listed: ``ack`` (it published the epoch), ``dropped`` (its session went away) or
``late`` (the deadline passed without either), timestamped when it resolved, with
its id and the epoch it had published when listed — so a slow cutover shows who
was late. Every job is traced when tracing is on (jobs are few; no sampling).

``install(runner, barrier)`` wraps ``JobRunner.run`` and sets the runner's and the
barrier's hooks; a ``contextvars`` variable names the job a barrier runs for (the
barrier is shared by concurrent jobs; each job runs in its own task).
"""

from __future__ import annotations

import contextvars
import random
import time
from typing import Any

_current: contextvars.ContextVar["_JobTrace | None"] = contextvars.ContextVar("epochgate_job_trace", default=None)


class _JobTrace:
    __slots__ = ("trace_id", "root_id", "t0", "phases", "open")

    def __init__(self, trace_id: int, root_id: int) -> None:
        self.trace_id = trace_id
        self.root_id = root_id
        self.t0 = time.time_ns()
        self.phases: list[list[Any]] = []   # [name, t0_ns, t1_ns, events]
        self.open: list[Any] | None = None


class JobTracer:
    def __init__(self, processor: Any, resource: Any, scope: Any) -> None:
        from opentelemetry.sdk.trace import Event, ReadableSpan
        from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

        self.processor, self.resource, self.scope = processor, resource, scope
        self._Span, self._Event, self._Ctx = ReadableSpan, Event, SpanContext
        self._flags = TraceFlags(TraceFlags.SAMPLED)
        self._kind = SpanKind.INTERNAL
        self._error, self._ok = Status(StatusCode.ERROR), Status(StatusCode.UNSET)
        self._bits = random.Random().getrandbits
        self.jobs = 0

    def install(self, runner: Any, barrier: Any) -> None:
        run = runner.run

        async def traced_run(job: Any) -> Any:
            jt = _JobTrace(self._bits(128) or 1, self._bits(64) or 1)
            token = _current.set(jt)
            final, error = job, None
            try:
                final = await run(job)
                return final
            except BaseException as exc:
                error = f"{type(exc).__name__}: {exc}"
                raise
            finally:
                _current.reset(token)
                self._export(jt, final, error)

        runner.run = traced_run
        runner.tracer = self
        barrier.on_result = self.barrier_result

    # ---------------------------------------------------------------- hooks (runner, barrier)
    def phase(self, job: Any, name: str) -> None:
        """Job ``job`` enters phase ``name`` (the one before it ends now)."""
        jt = _current.get()
        if jt is None:
            return
        now = time.time_ns()
        if jt.open is not None:
            jt.open[2] = now
            jt.phases.append(jt.open)
        jt.open = [name, now, 0, []]

    def barrier_result(self, res: Any) -> None:
        """A barrier wait ended (passed or timed out): its participants, as events of the phase."""
        jt = _current.get()
        if jt is None or jt.open is None:
            return
        wall = time.time_ns() - int(time.monotonic() * 1e9)  # monotonic seconds → Unix ns
        now = time.time_ns()
        for item in res.listed:
            pid = item.id
            at = res.resolved_at.get(pid)
            kind = "ack" if pid in res.acked else "dropped" if pid in res.dropped else "late"
            jt.open[3].append(self._Event(kind, {"epochgate.participant": pid, "epochgate.epoch": res.epoch,
                                                 "epochgate.listed_epoch": item.epoch},
                                          wall + int(at * 1e9) if at is not None else now))

    # ---------------------------------------------------------------- export
    def _export(self, jt: _JobTrace, job: Any, error: str | None) -> None:
        now = time.time_ns()
        if jt.open is not None:
            jt.open[2] = now
            jt.phases.append(jt.open)
            jt.open = None
        status = getattr(job, "status", "?")
        error = error or getattr(job, "error", None) or None
        attrs = {"epochgate.job": job.id, "epochgate.partition": job.partition, "epochgate.source": job.source,
                 "epochgate.target": job.target, "epochgate.status": status}
        if error:
            attrs["error.type"] = status if status in ("failed", "aborted") else "exception"
            attrs["epochgate.error"] = error
        root = self._Ctx(jt.trace_id, jt.root_id, False, self._flags)
        failed = bool(error) or status in ("failed", "aborted")
        for name, t0, t1, events in jt.phases:
            self._emit(name, self._Ctx(jt.trace_id, self._bits(64) or 1, False, self._flags), root,
                       {"epochgate.job": job.id, "epochgate.partition": job.partition}, t0, t1, events=events)
        self._emit(f"migrate {job.partition}", root, None, attrs, jt.t0, now, failed)
        self.jobs += 1

    def _emit(self, name: str, ctx: Any, parent: Any, attrs: dict[str, Any], t0: int, t1: int, error: bool = False,
              events: Any = ()) -> None:
        self.processor.on_end(self._Span(name, ctx, parent, self.resource, attrs, list(events), (), self._kind,
                                         status=self._error if error else self._ok, start_time=t0, end_time=t1,
                                         instrumentation_scope=self.scope))


def open_job_tracing(endpoint: str, instance: str = "") -> tuple[JobTracer, Any]:
    """(tracer, processor) exporting the controller's job traces to ``endpoint``."""
    from .otlp import open_processor

    processor, resource, scope = open_processor(endpoint, "epochgate-controller", instance)
    return JobTracer(processor, resource, scope), processor
