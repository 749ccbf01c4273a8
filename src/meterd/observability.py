"""What meterd tells its operators: Prometheus metrics, a health check, request logs.

``GET /metrics`` (Prometheus text format) and ``GET /healthz`` need no key: expose the port
only where they may be read. Metrics live in a registry of the app's own (each app, and each
``--workers`` process, counts for itself; a scraper adds the processes up). Request logs are
one JSON line per request on the ``meterd.requests`` logger, off unless the settings turn them
on.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any

import msgspec
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from meterd.ingest.writes import ACCEPTED, Accepted, Duplicate, Outcome, Rejected

request_log = logging.getLogger("meterd.requests")
disable_created_metrics()  # type: ignore[no-untyped-call]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 10, 100, 250, 500, 1000, 2500, 5000, 10000)


class Metrics:
    """The app's Prometheus metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "meterd_http_requests",
            "HTTP requests answered, by route, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "meterd_http_request_duration_seconds",
            "Time from a request's arrival to its answer, by route and method.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.events = Counter(
            "meterd_events",
            "Meter events by outcome: counted, uncounted (stored, raised an error report), "
            "duplicate (identifier already used), rejected (a v2 rule, nothing stored).",
            ["outcome"],
            registry=self.registry,
        )
        self.error_reports = Counter(
            "meterd_error_report_events",
            "Accepted events that cannot count, by error-report code.",
            ["code"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "meterd_ingest_queue_depth",
            "Events waiting for the group commit.",
            registry=self.registry,
        )
        self.commit_events = Histogram(
            "meterd_ingest_commit_events",
            "Events per group commit (one transaction, one fsync).",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.commits = Counter(
            "meterd_ingest_commits",
            "Group commits by result (ok, failed).",
            ["result"],
            registry=self.registry,
        )
        self._answered: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def answered(self, route: str, method: str, status: int, seconds: float) -> None:
        """One request answered. The labelled children are kept (routes are templates, so
        they are few): ``labels()`` costs more than the count itself on the stream."""
        key = (route, method, status)
        children = self._answered.get(key)
        if children is None:
            children = (
                self.requests.labels(route, method, str(status)),
                self.latency.labels(route, method),
            )
            self._answered[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def watch_queue(self, depth: Callable[[], int]) -> None:
        self.queue_depth.set_function(depth)

    def committed(self, count: int, outcomes: list[Outcome] | None) -> None:
        """A pipeline commit (on the writer's thread: the metrics are thread-safe)."""
        if outcomes is None:
            self.commits.labels("failed").inc()
            return
        self.commits.labels("ok").inc()
        self.commit_events.observe(count)
        counted = outcomes.count(ACCEPTED)  # the stream's usual batch: counted in C
        if counted and counted == len(outcomes):
            self.events.labels("counted").inc(counted)
            return
        tally: dict[str, int] = {}
        codes: dict[str, int] = {}
        for outcome in outcomes:
            if isinstance(outcome, Accepted):
                problem = outcome.problem
                if problem is None:
                    tally["counted"] = tally.get("counted", 0) + 1
                else:
                    tally["uncounted"] = tally.get("uncounted", 0) + 1
                    codes[problem.code] = codes.get(problem.code, 0) + 1
            elif outcome.__class__ is Duplicate:
                tally["duplicate"] = tally.get("duplicate", 0) + 1
            elif outcome.__class__ is Rejected:
                tally["rejected"] = tally.get("rejected", 0) + 1
        for name, n in tally.items():
            self.events.labels(name).inc(n)
        for code, n in codes.items():
            self.error_reports.labels(code).inc(n)

    def exposition(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


class ObserveRequests:
    """Times every request, counts it by route and status, and logs it if asked to."""

    def __init__(self, app: ASGIApp, metrics: Metrics, log_requests: bool) -> None:
        self.app = app
        self.metrics = metrics
        self.log_requests = log_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            took = time.perf_counter() - began
            route = _route_of(scope)
            method = scope["method"]
            self.metrics.answered(route, method, status, took)
            if self.log_requests:
                who = scope.get("meterd.scope")
                request_log.info(
                    msgspec.json.encode(
                        {
                            "request_id": scope.get("meterd.request_id", b"").decode(),
                            "account": who.account_id if who else None,
                            "livemode": who.livemode if who else None,
                            "method": method,
                            "route": route,
                            "status": status,
                            "duration_ms": round(took * 1000, 3),
                        }
                    ).decode()
                )


def _route_of(scope: Scope) -> str:
    """The route's path template (``/v1/billing/meters/{id}``), never the raw path: ids in
    labels would grow the metrics without bound."""
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


def enable_request_log() -> None:
    """Request lines go to stderr, one JSON object each."""
    if not request_log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        request_log.addHandler(handler)
    request_log.setLevel(logging.INFO)
    request_log.propagate = False


async def metrics_endpoint(request: Request) -> Response:
    metrics: Metrics = request.app.state.metrics
    return metrics.exposition()
