"""Tools for tests that attack a live node: a raw HTTP/1.1 exchange (for bytes no
HTTP client library will send) and a digest of everything a node stores (to show
that a refused request changed nothing)."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from dataclasses import dataclass

import psycopg

from node.store.postgres import PostgresStorage
from node.wiring import Node

__all__ = ["RawResponse", "raw_request", "snapshot"]


@dataclass(frozen=True, slots=True)
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes


#: Seconds a raw exchange may take before the test fails (a hang is a finding).
RAW_TIMEOUT = 10.0


async def raw_request(node: Node, request: bytes) -> RawResponse:
    """Send ``request`` as it is and read the answer until the node closes (the
    request should say ``Connection: close``), within :data:`RAW_TIMEOUT`."""
    async with asyncio.timeout(RAW_TIMEOUT):
        reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
        try:
            writer.write(request)
            await writer.drain()
            data = await reader.read()
        finally:
            writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawResponse(status, headers, body)


def snapshot(node: Node) -> str:
    """A digest of every row of every table in the node's database (read on the side,
    from the committed state), plus its repo heads: equal digests, nothing changed."""
    if isinstance(node.storage, PostgresStorage):
        return _pg_snapshot(node.storage.dsn)
    conn = sqlite3.connect(f"file:{node.config.db_path}?mode=ro", uri=True)
    try:
        digest = hashlib.sha256()
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        for table in tables:
            digest.update(table.encode())
            for row in conn.execute(f'SELECT * FROM "{table}" ORDER BY 1'):
                digest.update(repr(row).encode())
        return digest.hexdigest()
    finally:
        conn.close()


def _pg_snapshot(url: str) -> str:
    with psycopg.connect(url) as conn:
        digest = hashlib.sha256()
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename"
        ).fetchall()
        for (table,) in tables:
            digest.update(str(table).encode())
            for row in conn.execute(f'SELECT * FROM "{table}" ORDER BY 1').fetchall():
                digest.update(repr(row).encode())
        return digest.hexdigest()
