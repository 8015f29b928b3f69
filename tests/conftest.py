"""Shared fixtures: deterministic keys, so runs repeat exactly.

``SKYFED_TEST_STORAGE=postgresql`` runs the tests on PostgreSQL instead of SQLite: a
throwaway server is started once per session (tests/pg.py), and every node a test
makes in this process gets its own fresh database (one per data directory, so a node
restarted on the same data dir finds its data again).
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
