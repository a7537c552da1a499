"""Every Prometheus metric epochgate exports, in one place (DESIGN §8).

The names are the contract ``grafana/`` and the alert rules rely on: add more,
rename none without changing ``grafana/`` in the same commit (a test checks).
Label values are bounded — never a partition id — and every label set is
pre-zeroed so dashboards and ``rate()`` see a series from the first scrape.

Each process builds one ``Metrics`` on its own ``CollectorRegistry`` (tests
run several sidecars in one process).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gate import Phase, RejectReason

from .control.jobstatus import JobStatus

# Label values come from the enums they count; "none" = not resolved / no reason.
PHASES = (*(p.value for p in Phase), "none")
KINDS = ("read", "write")
OUTCOMES = ("ok", "held_ok", "rejected", "bad_request", "unknown_partition", "upstream_error", "timeout", "error")
STAGES = ("resolve", "admit", "upstream", "total")
DECISIONS = ("admit", "reject")
REASONS = ("none", *(r.value for r in RejectReason))
JOB_STATUSES = tuple(s.value for s in JobStatus)
RESHARD_KINDS = ("split", "merge")   # sidecar.control.jobs.JobKind without "move"
MIGRATION_PHASES = tuple(s.value for s in JobStatus if not s.final and s is not JobStatus.PENDING)

_FAST = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_SLOW = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


class Metrics:
    """The sidecar's and controller's metrics on one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.requests = Counter("epochgate_requests_total", "Proxied requests by kind, phase and outcome.",
                                ("kind", "phase", "outcome"), registry=r)
        self.request_duration = Histogram("epochgate_request_duration_seconds", "Request time by stage.",
                                          ("kind", "stage"), buckets=_FAST, registry=r)
        self.gate_decisions = Counter("epochgate_gate_decisions_total", "Write-gate decisions.",
                                      ("phase", "decision", "reason"), registry=r)
        self.held_writes = Gauge("epochgate_held_writes", "Rejected writes currently held for retry.", registry=r)
        self.hold_duration = Histogram("epochgate_hold_duration_seconds", "How long held writes waited.",
                                       buckets=_SLOW, registry=r)
        self.inflight_writes = Gauge("epochgate_inflight_writes", "Admitted writes not yet answered upstream.",
                                     registry=r)
        self.table_epoch = Gauge("epochgate_table_epoch", "Applied table epoch.", registry=r)
        self.partitions = Gauge("epochgate_partitions", "Partitions by phase.", ("phase",), registry=r)
        self.store_last_contact = Gauge("epochgate_store_last_contact_seconds",
                                        "Seconds since the last successful table read.", registry=r)
        self.watch_updates = Counter("epochgate_watch_updates_total", "Table changes applied from the store.",
                                     registry=r)
        self.watch_errors = Counter("epochgate_watch_errors_total", "Failed or unparseable store reads.",
                                    registry=r)
        self.fail_closed = Gauge("epochgate_fail_closed", "1 while writes are refused because the table is stale.",
                                 registry=r)
        self.replica_blocked = Gauge("epochgate_replica_blocked",
                                     "1 while the replica is stopped at a change-log entry or partition value it "
                                     "cannot parse: nothing past it applied or acked, every write refused "
                                     "(DESIGN §4.3).", registry=r)
        self.push_stream_up = Gauge("epochgate_push_stream_up",
                                    "1 while the participant follows the log and acks cutovers over its stream "
                                    "from the controller (--push-from); 0: through Consul (DESIGN §5 \"The push "
                                    "path\").", registry=r)
        self.migration_phase_duration = Histogram("epochgate_migration_phase_duration_seconds",
                                                  "Duration of each migration job phase.", ("phase",),
                                                  buckets=_SLOW, registry=r)
        self.migration_jobs = Counter("epochgate_migration_jobs_total", "Migration jobs reaching a status.",
                                      ("status",), registry=r)
        self.cutover_window = Histogram("epochgate_cutover_window_seconds",
                                        "Write-unavailability window: enter_cutover to flip.", buckets=_SLOW,
                                        registry=r)
        self.reshard_jobs = Counter("epochgate_reshard_jobs_total",
                                    "Split and merge jobs reaching a status (DESIGN §12).", ("kind", "status"),
                                    registry=r)
        # Per hash slot: bounded by the table (--hash-slots N and the slots split from them), the
        # one label that names a partition, so `reshard plan` can read each slot's rate (DESIGN §12.6)
        self.slot_requests = Counter("epochgate_slot_requests_total",
                                     "Requests resolved to each hash slot (--hash-slots mode).", ("slot",),
                                     registry=r)
        self.ack_lag = Histogram("epochgate_fleet_ack_lag_seconds",
                                 "enter_cutover commit to the last participant's ack.", buckets=_SLOW, registry=r)
        self.participants = Gauge("epochgate_barrier_participants", "Live barrier participants seen.", registry=r)
        self.controller_leader = Gauge("epochgate_controller_leader", "1 on the controller holding the lock.",
                                       registry=r)
        # hostile-input bounds (see sidecar/proxy/limits.py)
        self.client_connections = Gauge("epochgate_client_connections", "Open client connections.", registry=r)
        self.connections_refused = Counter("epochgate_connections_refused_total",
                                           "Client connections refused at --max-connections.", registry=r)
        self.head_timeouts = Counter("epochgate_request_head_timeouts_total",
                                     "Connections closed (408) because a request head took longer than "
                                     "--head-timeout.", registry=r)
        self.body_budget_used = Gauge("epochgate_body_budget_bytes",
                                      "Request-body bytes held or kept for replay (of --body-budget).", registry=r)
        self._prezero()

    def _prezero(self) -> None:
        for kind in KINDS:
            for stage in STAGES:
                self.request_duration.labels(kind, stage)
            for phase in PHASES:
                for outcome in OUTCOMES:
                    self.requests.labels(kind, phase, outcome)
        for phase in PHASES:
            self.partitions.labels(phase)
            self.gate_decisions.labels(phase, "admit", "none")
            for reason in REASONS[1:]:
                self.gate_decisions.labels(phase, "reject", reason)
        for status in JOB_STATUSES:
            self.migration_jobs.labels(status)
        for phase in MIGRATION_PHASES:
            self.migration_phase_duration.labels(phase)
        for kind in RESHARD_KINDS:
            for status in JOB_STATUSES:
                self.reshard_jobs.labels(kind, status)
