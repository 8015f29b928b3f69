"""Shared fixtures: deterministic keys, so runs repeat exactly.

``SKYFED_TEST_STORAGE=postgresql`` runs the tests on PostgreSQL instead of SQLite: a
throwaway server is started once per session (tests/pg.py), and every node a test
makes in this process gets its own fresh database (one per data directory, so a node
restarted on the same data dir finds its data again). Under pytest-xdist each worker
starts a server of its own (the crash test kills its server; no other worker's tests
may be on it then).

Under pytest-xdist (``make pytest`` runs ``-n``), every worker orders the tests it
collected longest first, so the long ones start first and do not finish alone at the
end while the other workers idle: by the duration each test took in the last run that
recorded one (pytest's cache, ``skyfed/durations``), or, never run here, by the
``timeout`` its author gave it when that is longer than the default.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from node import wiring
from node.client import Client
from node.config import NodeConfig
from node.store.postgres import PostgresStorage
from node.store.sqlite import SqliteStorage
from node.wiring import Node
from protocol.keys import SigningKey

from .pg import PgServer, RawDb, start_server
from .seeds import seeded_key

#: "sqlite" (the default) or "postgresql".
TEST_STORAGE = os.environ.get("SKYFED_TEST_STORAGE", "sqlite")

#: Where the last run's durations are kept in pytest's cache (one map per backend:
#: the same test takes longer on PostgreSQL).
DURATIONS_KEY = f"skyfed/durations-{TEST_STORAGE}"
#: At most this many tests' durations are kept (the suite has ~3,000).
DURATIONS_KEPT = 20_000


def _expected_seconds(item: pytest.Item, durations: dict[str, float]) -> float:
    if item.nodeid in durations:
        return durations[item.nodeid]
    marker = item.get_closest_marker("timeout")
    default = float(item.config.getini("timeout") or 0)
    if marker is not None and marker.args and float(marker.args[0]) > default:
        return float(marker.args[0])
    return 0.0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Only in an xdist worker (the controller collects nothing): a run without xdist
    # keeps the file order. Every worker sorts the same items by the same cache file,
    # so all of them agree on the order, as xdist requires.
    if not hasattr(config, "workerinput") or config.cache is None:
        return
    durations: dict[str, float] = config.cache.get(DURATIONS_KEY, {})
    items.sort(key=lambda item: _expected_seconds(item, durations), reverse=True)


class _Durations:
    """Setup + call + teardown seconds of each test that ran, in the process that
    reports them (the xdist controller, or pytest itself without xdist)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.seconds[report.nodeid] = self.seconds.get(report.nodeid, 0.0) + report.duration

    def save(self, config: pytest.Config) -> None:
        if config.cache is None or not self.seconds:
            return
        kept: dict[str, float] = config.cache.get(DURATIONS_KEY, {})
        kept.update({k: round(v, 2) for k, v in self.seconds.items()})
        config.cache.set(DURATIONS_KEY, dict(list(kept.items())[-DURATIONS_KEPT:]))


_DURATIONS_KEY = pytest.StashKey[_Durations]()


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):
        recorder = _Durations()
        config.stash[_DURATIONS_KEY] = recorder
        config.pluginmanager.register(recorder, "skyfed-durations")


def pytest_unconfigure(config: pytest.Config) -> None:
    recorder = config.stash.get(_DURATIONS_KEY, None)
    if recorder is not None:
        recorder.save(config)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    with start_server() as server:
        yield server


@pytest.fixture(autouse=True)
def _storage_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if TEST_STORAGE == "sqlite":
        return
    if TEST_STORAGE != "postgresql":
        raise ValueError(f"SKYFED_TEST_STORAGE={TEST_STORAGE!r}: sqlite or postgresql")
    server: PgServer = request.getfixturevalue("pg_server")
    real = wiring.make_storage

    def make_storage(config: NodeConfig) -> SqliteStorage:
        if config.storage != "sqlite":
            return real(config)
        return PostgresStorage(server.database_for(str(config.data_dir.resolve())))

    monkeypatch.setattr(wiring, "make_storage", make_storage)


@pytest.fixture
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The ``storage`` setting for a node started as a subprocess in this test."""
    if TEST_STORAGE == "sqlite":
        return "sqlite"
    server: PgServer = request.getfixturevalue("pg_server")
    return server.database_for(str(tmp_path.resolve()))


@pytest.fixture
def key() -> SigningKey:
    return seeded_key(1)


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    """A real node on 127.0.0.1 with a free port and a fresh data dir."""
    config = NodeConfig(data_dir=tmp_path / "node", port=0)
    async with Node(config) as n:
        yield n


@pytest.fixture
async def client(node: Node) -> AsyncIterator[Client]:
    async with Client(node.url) as c:
        yield c


@pytest.fixture
def raw_db(request: pytest.FixtureRequest) -> Callable[[NodeConfig], RawDb]:
    """Direct access to the database of a node made with a config (either backend)."""

    def open_raw(config: NodeConfig) -> RawDb:
        if TEST_STORAGE == "sqlite":
            return RawDb(sqlite_path=config.db_path)
        server: PgServer = request.getfixturevalue("pg_server")
        return RawDb(url=server.database_for(str(config.data_dir.resolve())))

    return open_raw
