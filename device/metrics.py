"""Prometheus metrics of the daemon, with prometheus_client.

Each :class:`Metrics` has its own registry (no process-global state), which
``/metrics`` renders in the Prometheus text format.
"""

from __future__ import annotations

import datetime as _dt
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

#: Latency buckets in seconds: a query on a Pi 4 takes tens of milliseconds.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """Counters, histograms and gauges of one daemon."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.queries = Counter("glimpse_queries", "Searches answered, by kind.", ["kind"],
                               registry=self.registry)
        self.errors = Counter("glimpse_errors", "Requests that failed, by kind.", ["kind"],
                              registry=self.registry)
        self.latency = Histogram("glimpse_request_duration_seconds", "Time to answer a request.",
                                 ["endpoint"], buckets=BUCKETS, registry=self.registry)
        self.reloads = Counter("glimpse_reloads", "Bundle reloads, by result.", ["result"],
                               registry=self.registry)
        self.added = Counter("glimpse_uploaded_photos", "Photos accepted for adding on the device.",
                             registry=self.registry)
        self.button = Counter("glimpse_button_events", "Front-panel button events, by kind (press, hold).",
                              ["event"], registry=self.registry)
        self.items = Gauge("glimpse_items", "Photos in the bundle being served.", registry=self.registry)
        self.model = Gauge("glimpse_model_info", "The model being served (always 1).", ["model", "bundle_id"],
                           registry=self.registry)
        self.bundle_age = Gauge("glimpse_bundle_age_seconds", "Seconds since the served bundle was built.",
                                registry=self.registry)
        self._bundle_created = None
        self.bundle_age.set_function(self._age)

    def _age(self) -> float:
        return time.time() - self._bundle_created if self._bundle_created else 0.0

    def bundle_loaded(self, bundle) -> None:
        """Point the bundle gauges at a newly loaded bundle."""
        self.items.set(len(bundle))
        self.model.clear()
        self.model.labels(model=bundle.spec.full_id, bundle_id=bundle.id).set(1)
        try:
            created = _dt.datetime.fromisoformat(str(bundle.manifest.get("created")).replace("Z", "+00:00"))
            self._bundle_created = created.timestamp()
        except ValueError:
            self._bundle_created = None

    def total_queries(self) -> float:
        """All searches answered so far."""
        return sum(sample.value for metric in self.queries.collect() for sample in metric.samples
                   if sample.name.endswith("_total"))

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
