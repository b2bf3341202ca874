"""Prometheus metrics, derived from the runtime store at each scrape, so they survive restarts.

Families:

* ``maf_tasks{state}``, ``maf_leases_active``, ``maf_reservations_active``
* ``maf_reservation_operations_total{op}`` (acquire, renew, release, force_release, expire, override)
* ``maf_reservation_conflicts_total``
* ``maf_escalations{status}``, ``maf_evidence_total{result}``
* ``maf_errors_total{kind}``: recorded failures (task rollbacks, expiries and exhaustions,
  reservation conflicts and overrides)
* ``maf_db_query_duration_seconds``: a histogram of this process's probe queries, one per scrape
* ``maf_system_health_score``: the share of health checks passing, 0 to 1
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Iterator
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Histogram, disable_created_metrics, generate_latest, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from pytest_maf import health
from pytest_maf.records import ESCALATION_STATUSES, EVIDENCE_RESULTS, TASK_STATES

if TYPE_CHECKING:
    from pytest_maf.config import Settings

disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series say nothing about values derived from the store

RESERVATION_OPERATIONS = ("acquire", "renew", "release", "force_release", "expire", "override")
QUERY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class StoreCollector:
    """Reads the store once per scrape and yields every family."""

    def __init__(self, settings: Settings, query_duration: Histogram) -> None:
        self.settings = settings
        self.query_duration = query_duration

    def collect(self) -> Iterator[Metric]:
        from pytest_maf.store import open_store

        started = time.perf_counter()
        with open_store(self.settings.db_path) as store:
            snapshot = store.read(lambda transaction: transaction.metrics_snapshot())
        self.query_duration.observe(time.perf_counter() - started)
        yield from self.query_duration.collect()  # after observing, so a scrape includes its own probe

        tasks = GaugeMetricFamily("maf_tasks", "Tasks by state.", labels=["state"])
        for state in TASK_STATES:
            tasks.add_metric([state], snapshot["tasks"].get(state, 0))
        yield tasks
        yield GaugeMetricFamily("maf_leases_active", "Unexpired task leases.", value=snapshot["leases"].get("active", 0))
        yield GaugeMetricFamily(
            "maf_reservations_active", "Unexpired file reservations.", value=snapshot["reservations"].get("active", 0)
        )
        operations = CounterMetricFamily(
            "maf_reservation_operations", "Reservation operations recorded.", labels=["op"]
        )
        for op in RESERVATION_OPERATIONS:
            operations.add_metric([op], snapshot["reservation_events"].get(op, 0))
        yield operations
        conflicts = snapshot["reservation_events"].get("conflict", 0)
        yield CounterMetricFamily("maf_reservation_conflicts", "Reservation requests denied by a conflict.", value=conflicts)
        escalations = GaugeMetricFamily("maf_escalations", "Escalations by status.", labels=["status"])
        for status in ESCALATION_STATUSES:
            escalations.add_metric([status], snapshot["escalations"].get(status, 0))
        yield escalations
        evidence = CounterMetricFamily("maf_evidence", "Evidence rows by result.", labels=["result"])
        for result in EVIDENCE_RESULTS:
            evidence.add_metric([result], snapshot["evidence"].get(result, 0))
        yield evidence
        errors = CounterMetricFamily("maf_errors", "Recorded failures by kind.", labels=["kind"])
        for kind in ("rollback", "expire", "exhaust"):
            errors.add_metric([f"task_{kind}"], snapshot["task_events"].get(kind, 0))
        errors.add_metric(["reservation_conflict"], conflicts)
        errors.add_metric(["reservation_override"], snapshot["reservation_events"].get("override", 0))
        yield errors
        items = health.database_health(self.settings) + health.environment_health(self.settings)
        score = sum(1 for item in items if item.result.ok) / len(items)
        yield GaugeMetricFamily("maf_system_health_score", "Share of health checks passing (0..1).", value=score)


def registry_for(settings: Settings) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    query_duration = Histogram(
        "maf_db_query_duration_seconds", "Duration of the store probe query run at each scrape.",
        buckets=QUERY_BUCKETS, registry=None,  # collected by StoreCollector, after each probe
    )
    registry.register(StoreCollector(settings, query_duration))
    return registry


def exposition(settings: Settings) -> str:
    """The Prometheus text exposition, once."""
    return generate_latest(registry_for(settings)).decode()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # one line per scrape would drown the operator's terminal


def metrics_server(settings: Settings, host: str, port: int) -> WSGIServer:
    """An HTTP server answering ``/metrics``; call ``serve_forever()`` on it (port 0: any free one)."""
    return make_server(host, port, make_wsgi_app(registry_for(settings)), handler_class=_QuietHandler)
