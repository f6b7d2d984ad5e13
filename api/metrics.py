"""Prometheus metrics of one app (its own CollectorRegistry, so several apps in one process do not clash).

- ``nas_http_requests_total{method,route,status}`` and ``nas_http_request_duration_seconds{method,route}``, labelled
  by the route template (``/api/v1/searches/{search_id}``), never the raw path, and by a method from a fixed set
  (``METHODS``, else ``other``), so the label set stays small.
- ``nas_searches{status}`` and ``nas_queue_length``, read from the database at scrape time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.store import repo
from service.store.db import Database
from service.store.models import STATUSES

log = logging.getLogger(__name__)

UNMATCHED = "<unmatched>"
# the method label takes one of these, else "other": the server accepts any token as a method name, and a label per
# made-up name would grow the metrics page (and Prometheus's memory) without bound
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"


def method_label(method: str) -> str:
    return method if method in METHODS else OTHER_METHOD


class SearchCollector(Collector):
    """Searches by status and the queue length, counted when Prometheus scrapes."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def describe(self) -> Iterator[Metric]:
        """The metric names without values (registering must not query the database)."""
        yield GaugeMetricFamily("nas_searches", "Searches by status", labels=["status"])
        yield GaugeMetricFamily("nas_queue_length", "Searches waiting to run")

    def collect(self) -> Iterator[Metric]:
        try:
            with self.db.session() as s:
                counts = repo.status_counts(s)
        except Exception:  # a scrape must not fail because the database is away
            log.warning("metrics: could not count searches", exc_info=True)
            return
        by_status = GaugeMetricFamily("nas_searches", "Searches by status", labels=["status"])
        for status in STATUSES:
            by_status.add_metric([status], counts.get(status, 0))
        yield by_status
        yield GaugeMetricFamily("nas_queue_length", "Searches waiting to run", value=counts.get("queued", 0))


class Metrics:
    def __init__(self, db: Database) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "nas_http_requests",
            "HTTP requests by route template, method and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "nas_http_request_duration_seconds",
            "Time to the end of the response, by route template and method",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
        )
        self.registry.register(SearchCollector(db))


class MetricsMiddleware:
    """Counts and times every HTTP request, labelled after routing by the matched route's template."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED
            method = method_label(scope.get("method", ""))
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - start)
