"""Prometheus metrics, derived from the runtime store at each scrape, so they survive restarts.

Families:

* ``maf_tasks{state}``, ``maf_leases_active``, ``maf_reservations_active``
* ``maf_reservation_operations_total{op}`` (acquire, renew, release, force_release, expire, override)
* ``maf_reservation_conflicts_total``
* ``maf_escalations{status}``, ``maf_escalation_oldest_open_seconds``, ``maf_evidence_total{result}``
* ``maf_errors_total{kind}``: recorded failures (task rollbacks, expiries and exhaustions,
  reservation conflicts and overrides)
* ``maf_db_query_duration_seconds``: a histogram of this process's probe queries, one per scrape
* ``maf_system_health_score``: the share of health checks passing, 0 to 1
* ``maf_agents{state}`` (active, stale) and ``maf_agent_availability``: the share of known agents
  seen within ``agents.stale_after_seconds`` (NaN while no agent is known)
* ``maf_claim_duration_seconds``, ``maf_guard_duration_seconds{outcome}``,
  ``maf_preflight_duration_seconds{outcome}``, ``maf_escalation_resolution_seconds``: histograms of
  real traffic, recorded by each operation in its own transaction (:mod:`pytest_maf.kpi`)
* ``maf_preflight_pass_ratio``: the share of finished preflight runs that passed (NaN before the first)

The ``*_total`` counters count the store's history rows plus the totals
`maf db cleanup` folded away before deleting rows, so they never go down.
`maf metrics serve` answers each connection on its own thread and drops one
that idles past :data:`CONNECTION_TIMEOUT_S`.
"""

from __future__ import annotations

import socket
import sys
import time
from socketserver import ThreadingMixIn
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, disable_created_metrics, generate_latest, make_wsgi_app
from prometheus_client import Histogram as PrometheusHistogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from pytest_maf import health
from pytest_maf.agents import AGENT_STATES, availability, statuses_in
from pytest_maf.kpi import OPERATION_OUTCOMES, Histogram, histograms
from pytest_maf.errors import MafError
from pytest_maf.records import ESCALATION_STATUSES, EVIDENCE_RESULTS, TASK_STATES

if TYPE_CHECKING:
    from pytest_maf.agents import AgentStatus
    from pytest_maf.config import Settings
    from pytest_maf.store import Transaction

disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series say nothing about values derived from the store

RESERVATION_OPERATIONS = ("acquire", "renew", "release", "force_release", "expire", "override")
QUERY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class StoreCollector:
    """Reads the store once per scrape and yields every family."""

    def __init__(self, settings: Settings, query_duration: PrometheusHistogram) -> None:
        self.settings = settings
        self.query_duration = query_duration

    def collect(self) -> Iterator[Metric]:
        from pytest_maf.store import open_store_for

        started = time.perf_counter()
        stale_after_ms = self.settings.agent_stale_after_s * 1000
        with open_store_for(self.settings) as store:
            snapshot, agents, buckets, oldest_open_ms = store.read(lambda transaction: (
                transaction.metrics_snapshot(), statuses_in(transaction, stale_after_ms, holdings=False),
                transaction.duration_buckets(), _oldest_open_escalation_ms(transaction),
            ))
        self.query_duration.observe(time.perf_counter() - started)
        yield from self.query_duration.collect()  # after observing, so a scrape includes its own probe
        items = health.database_health(self.settings) + health.environment_health(self.settings)
        score = sum(1 for item in items if item.result.ok) / len(items)
        yield from _families(snapshot, agents, buckets, oldest_open_ms, score)

    def describe(self) -> Iterator[Metric]:
        """Every family (its name and type, no value) without reading the store: a scrape that asks
        for some by name (``/metrics?name[]=maf_tasks``) is served from what this names."""
        yield from self.query_duration.describe()
        yield from _families(defaultdict(dict), [], [], 0, 0.0)


def _families(
    snapshot: Mapping[str, Mapping[str, int]], agents: list[AgentStatus], buckets: Any, oldest_open_ms: int,
    score: float,
) -> Iterator[Metric]:
    """The store's families, from what one read of it found."""
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
    yield GaugeMetricFamily(
        "maf_escalation_oldest_open_seconds", "How long the oldest active escalation has been open (0: none is).",
        value=oldest_open_ms / 1000,
    )
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
    yield GaugeMetricFamily("maf_system_health_score", "Share of health checks passing (0..1).", value=score)

    by_state = GaugeMetricFamily("maf_agents", "Known agents by state (stale: silent past agents.stale_after_seconds).",
                                 labels=["state"])
    for state in AGENT_STATES:
        by_state.add_metric([state], sum(1 for agent in agents if agent.state == state))
    yield by_state
    yield GaugeMetricFamily(
        "maf_agent_availability", "Share of known agents seen within agents.stale_after_seconds (0..1).",
        value=availability(agents),
    )
    yield from duration_families(histograms(buckets))


def _oldest_open_escalation_ms(transaction: Transaction) -> int:
    return max((transaction.now - escalation.created_at for escalation in transaction.escalations(status="active")),
               default=0)


# Each recorded operation's histogram family, and what it measures.
DURATION_FAMILIES = {
    "claim": ("maf_claim_duration_seconds", "Task claims (lease acquisition), from the call to the lease written."),
    "guard": ("maf_guard_duration_seconds", "Guard runs (maf guard, the git hooks, the preflight's staged check)."),
    "preflight": ("maf_preflight_duration_seconds", "Preflight runs, from their task's creation to their verdict."),
    "escalation_resolution": ("maf_escalation_resolution_seconds", "Escalations, from opened to resolved."),
}


def duration_families(found: dict[tuple[str, str], Histogram]) -> Iterator[Metric]:
    """The histogram families of :data:`DURATION_FAMILIES`, and ``maf_preflight_pass_ratio``."""
    for operation, (name, documentation) in DURATION_FAMILIES.items():
        outcomes = OPERATION_OUTCOMES[operation]
        labelled = outcomes != ("",)
        family = HistogramMetricFamily(name, documentation, labels=["outcome"] if labelled else None)
        for outcome in outcomes:
            histogram = found[(operation, outcome)]
            family.add_metric(
                [outcome] if labelled else [],
                [(_bound(le), count) for le, count in histogram.buckets],
                histogram.sum_s,
            )
        yield family
    passed, failed = found[("preflight", "pass")].count, found[("preflight", "fail")].count
    yield GaugeMetricFamily(
        "maf_preflight_pass_ratio", "Share of finished preflight runs that passed (0..1).",
        value=passed / (passed + failed) if passed + failed else float("nan"),
    )


def _bound(seconds: float) -> str:
    return "+Inf" if seconds == float("inf") else repr(seconds)


def registry_for(settings: Settings) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    query_duration = PrometheusHistogram(
        "maf_db_query_duration_seconds", "Duration of the store probe query run at each scrape.",
        buckets=QUERY_BUCKETS, registry=None,  # collected by StoreCollector, after each probe
    )
    registry.register(StoreCollector(settings, query_duration))
    return registry


def exposition(settings: Settings) -> str:
    """The Prometheus text exposition, once."""
    return generate_latest(registry_for(settings)).decode()


# A connection that sends no request (or reads no answer) for this long is dropped.
CONNECTION_TIMEOUT_S = 10.0


class MetricsRequestHandler(WSGIRequestHandler):
    """One connection: quiet, and dropped when it idles past :data:`CONNECTION_TIMEOUT_S`."""

    timeout = CONNECTION_TIMEOUT_S  # applied to the connection's socket before the request is read

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # one line per scrape would drown the operator's terminal


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    """Each connection is served on its own thread, so one slow or idle client delays no other scrape."""

    daemon_threads = True  # an idle connection does not keep the process from stopping
    block_on_close = False

    def handle_error(self, request: object, client_address: object) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            return  # a client that timed out or went away: nothing for the operator to do
        print(f"maf: metrics: {type(error).__name__} serving {client_address}: {error}", file=sys.stderr)


def _answering_errors(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """``app``, answering a scrape that fails (an unreadable store, say) with 503 and one line, not a traceback."""

    def answer(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        try:
            return app(environ, start_response)
        except Exception as error:  # reported to the scraper and the operator, and the server goes on
            line = str(error) if isinstance(error, MafError) else f"{type(error).__name__}: {error}"
            print(f"maf: metrics: {line}", file=sys.stderr)
            start_response("503 Service Unavailable", [("Content-Type", "text/plain; charset=utf-8")])
            return [f"{line}\n".encode()]

    return answer


METRICS_PATH = "/metrics"


def _at_metrics_path(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """``app`` at :data:`METRICS_PATH` only (404 elsewhere, so a mistyped scrape target is noticed),
    answering HEAD as GET without the body (as uptime probes ask)."""

    def answer(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "").rstrip("/") != METRICS_PATH:
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [f"nothing here: the metrics are at {METRICS_PATH}\n".encode()]
        if environ.get("REQUEST_METHOD") != "HEAD":
            return app(environ, start_response)
        answered: list[Any] = []
        body = b"".join(app({**environ, "REQUEST_METHOD": "GET"}, lambda *response: answered.append(response)))
        status, headers, *_ = answered[-1]
        kept = [(name, value) for name, value in headers if name.lower() != "content-length"]
        start_response(status, [*kept, ("Content-Length", str(len(body)))])
        return []

    return answer


class ThreadingWSGIServer6(ThreadingWSGIServer):
    """:class:`ThreadingWSGIServer` on an IPv6 address (``::1``, ``::``)."""

    address_family = socket.AF_INET6


def metrics_server(settings: Settings, host: str, port: int) -> WSGIServer:
    """An HTTP server answering ``/metrics``; call ``serve_forever()`` on it (port 0: any free one).
    ``host`` may be an IPv6 address, bracketed or not (``[::1]``)."""
    app = _at_metrics_path(_answering_errors(make_wsgi_app(registry_for(settings))))
    address = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    server_class = ThreadingWSGIServer6 if ":" in address else ThreadingWSGIServer
    return make_server(address, port, app, server_class=server_class, handler_class=MetricsRequestHandler)
