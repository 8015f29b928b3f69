"""Shared fixtures: deterministic keys, so runs repeat exactly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from node.client import Client
from node.config import NodeConfig
from node.wiring import Node
from protocol.keys import SigningKey

from .seeds import seeded_key


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
