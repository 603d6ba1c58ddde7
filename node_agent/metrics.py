"""Prometheus metrics of one node, served as text at /metrics."""

from __future__ import annotations

import contextlib
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)
_LOAD_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600)


class NodeMetrics:
    """Counters, gauges and histograms of a node, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ("agent",)
        self.requests = Counter(
            "edgefleet_requests",
            "Agent and model requests served, by outcome",
            ("agent", "outcome"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "edgefleet_request_seconds",
            "Time from request to last chunk",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.first_token = Histogram(
            "edgefleet_first_token_seconds",
            "Time from request to first streamed chunk",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "edgefleet_tokens",
            "Tokens processed, by kind (prompt, completion)",
            ("agent", "kind"),
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "edgefleet_queue_depth", "Requests waiting per agent", labels, registry=self.registry
        )
        self.in_flight = Gauge(
            "edgefleet_in_flight", "Requests running per agent", labels, registry=self.registry
        )
        self.model_load = Histogram(
            "edgefleet_model_load_seconds",
            "Time to load a model until it serves",
            ("model",),
            buckets=_LOAD_BUCKETS,
            registry=self.registry,
        )
        self.models_ready = Gauge(
            "edgefleet_models_ready", "Models loaded and serving", registry=self.registry
        )
        self.model_memory = Gauge(
            "edgefleet_model_memory_bytes", "Memory used by model runtimes", registry=self.registry
        )
        self.model_slots = Gauge(
            "edgefleet_model_slots",
            "Requests a ready model runs at once (total) and runs now (busy), per its runtime",
            ("model", "state"),
            registry=self.registry,
        )
        self.runtime_queue_depth = Gauge(
            "edgefleet_runtime_queue_depth",
            "Requests waiting inside a model's runtime for a slot",
            ("model",),
            registry=self.registry,
        )
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def set_capacity(self, model: str, total: int | None, busy: int, queued: int) -> None:
        """Publish a ready model's capacity (no total: its runtime has no fixed slot count)."""
        if total is not None:
            self.model_slots.labels(model, "total").set(total)
        self.model_slots.labels(model, "busy").set(busy)
        self.runtime_queue_depth.labels(model).set(queued)

    def forget_capacity(self, model: str) -> None:
        """Drop the capacity series of a model that is no longer ready."""
        for state in ("total", "busy"):
            with contextlib.suppress(KeyError):
                self.model_slots.remove(model, state)
        with contextlib.suppress(KeyError):
            self.runtime_queue_depth.remove(model)

    def serve(self, host: str, port: int) -> int:
        """Serve /metrics on HOST:PORT (0 picks a free port); returns the port."""
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        return int(self._server.server_port)

    def close(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
