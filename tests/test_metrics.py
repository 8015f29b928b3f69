"""node/server/metrics.py: plain counters and gauges that scrape exactly as
prometheus_client's own Counter and Gauge do."""

from __future__ import annotations

import re

import prometheus_client
import pytest

from node.server.metrics import Metrics

_CREATED = re.compile(r"^(\S+_created(?:\{[^}]*\})?) [0-9.e+]+$", re.MULTILINE)


def _without_created_values(text: str) -> str:
    # _created holds when each series was made: the two sides made theirs apart.
    return _CREATED.sub(r"\1 T", text)


def test_scrape_matches_prometheus_client() -> None:
    ours = Metrics()
    requests = ours.counter("skyfed_requests", "XRPC requests", ("nsid", "status"))
    commits = ours.counter("skyfed_commits", "Commits stored")
    depth = [3]
    ours.gauge("skyfed_write_queue_depth", "Writes waiting for the writer", lambda: depth[0])

    registry = prometheus_client.CollectorRegistry()
    theirs_requests = prometheus_client.Counter(
        "skyfed_requests", "XRPC requests", ["nsid", "status"], registry=registry
    )
    theirs_commits = prometheus_client.Counter(
        "skyfed_commits", "Commits stored", registry=registry
    )
    prometheus_client.Gauge(
        "skyfed_write_queue_depth", "Writes waiting for the writer", registry=registry
    ).set_function(lambda: depth[0])

    for nsid, status in [("_health", "200"), ("_health", "200"), ("other", "404")]:
        requests.labels(nsid, status).inc()
        theirs_requests.labels(nsid, status).inc()
    commits.inc(5)
    theirs_commits.inc(5)
    depth[0] = 7  # gauges are read at the scrape

    body, content_type = ours.exposition()
    assert content_type == prometheus_client.CONTENT_TYPE_LATEST
    expected = prometheus_client.generate_latest(registry).decode()
    assert _without_created_values(body.decode()) == _without_created_values(expected)
    assert 'skyfed_requests_total{nsid="_health",status="200"} 2.0' in body.decode()
    assert "skyfed_write_queue_depth 7.0" in body.decode()


def test_created_is_when_a_series_was_first_counted() -> None:
    now = [100.0]
    metrics = Metrics(clock=lambda: now[0])
    requests = metrics.counter("skyfed_requests", "XRPC requests", ("nsid", "status"))
    now[0] = 250.0
    requests.labels("_health", "200").inc()
    requests.labels("_health", "200").inc()
    body = metrics.exposition()[0].decode()
    assert 'skyfed_requests_created{nsid="_health",status="200"} 250.0' in body


def test_a_gauge_added_after_the_first_scrape_is_served() -> None:
    # The atproto bridge adds its gauges when it is first used, maybe after a scrape.
    metrics = Metrics()
    metrics.exposition()
    metrics.gauge("skyfed_atproto_commits", "atproto commits", lambda: 4)
    assert "skyfed_atproto_commits 4.0" in metrics.exposition()[0].decode()


def test_counters_refuse_misuse() -> None:
    metrics = Metrics()
    labelled = metrics.counter("skyfed_requests", "XRPC requests", ("nsid", "status"))
    plain = metrics.counter("skyfed_commits", "Commits stored")
    with pytest.raises(ValueError, match="labels"):
        labelled.inc()
    with pytest.raises(ValueError, match="takes labels"):
        labelled.labels("only-one")
    with pytest.raises(ValueError, match="only goes up"):
        plain.inc(-1)
