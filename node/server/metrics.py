"""The node's counters and gauges, served on ``/metrics`` in Prometheus' text format.

They are kept as plain numbers and read by functions; ``prometheus_client`` (with the
stdlib HTTP, WSGI and gzip servers it imports, about 1 MB of a process) is loaded by
the first scrape, which turns them into metric families. What is counted is bounded
by the caller: a counter's label values come from a fixed set (the node's routes and
HTTP status codes), never from what a client sends.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

__all__ = ["Count", "Counter", "Metrics"]


class Count:
    """One counted value and when it was first counted (Prometheus' ``_created``)."""

    __slots__ = ("created", "value")

    def __init__(self, created: float):
        self.value = 0.0
        self.created = created

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        self.value += amount


class Counter:
    """A counter as ``prometheus_client.Counter`` names it (``NAME_total``), with or
    without labels."""

    def __init__(
        self, name: str, doc: str, labelnames: tuple[str, ...], clock: Callable[[], float]
    ):
        self.name = name
        self.doc = doc
        self.labelnames = labelnames
        self._clock = clock
        self.children: dict[tuple[str, ...], Count] = {}
        if not labelnames:
            self.children[()] = Count(clock())

    def labels(self, *values: str) -> Count:
        """The count for these label values (made, at zero, on first use)."""
        child = self.children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values}")
            child = self.children[values] = Count(self._clock())
        return child

    def inc(self, amount: float = 1.0) -> None:
        if self.labelnames:
            raise ValueError(f"{self.name} has labels {self.labelnames}: use labels()")
        self.children[()].inc(amount)


class _Gauge:
    __slots__ = ("doc", "name", "read")

    def __init__(self, name: str, doc: str, read: Callable[[], float]):
        self.name = name
        self.doc = doc
        self.read = read


class Metrics:
    """Every metric of one node, in the order they were made."""

    def __init__(self, clock: Callable[[], float] = time.time):
        self._clock = clock
        self._metrics: list[Counter | _Gauge] = []
        self._registry: CollectorRegistry | None = None

    def counter(self, name: str, doc: str, labelnames: tuple[str, ...] = ()) -> Counter:
        counter = Counter(name, doc, labelnames, self._clock)
        self._metrics.append(counter)
        return counter

    def gauge(self, name: str, doc: str, read: Callable[[], float]) -> None:
        """A gauge whose value is ``read()`` at each scrape."""
        self._metrics.append(_Gauge(name, doc, read))

    def collect(self) -> Iterator[Metric]:
        """The metric families as ``prometheus_client`` builds them (its collector
        interface: a registry calls this at each scrape)."""
        from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily

        for m in list(self._metrics):
            if isinstance(m, Counter):
                family = CounterMetricFamily(m.name, m.doc, labels=m.labelnames)
                for values, count in list(m.children.items()):
                    family.add_metric(list(values), count.value, created=count.created)
                yield family
            else:
                yield GaugeMetricFamily(m.name, m.doc, value=float(m.read()))

    @property
    def registry(self) -> CollectorRegistry:
        """A ``prometheus_client`` registry of these metrics (made at first use)."""
        if self._registry is None:
            from prometheus_client import CollectorRegistry

            self._registry = CollectorRegistry()
            self._registry.register(self)
        return self._registry

    def exposition(self) -> tuple[bytes, str]:
        """The text a scrape gets, and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
