"""Blob storage: uploads of accounts hosted here, which records point at which blobs,
and a bounded cache of blobs fetched from peers.

Three tables (one migration, ``BLOBS_SCHEMA``):

* ``blobs``: bytes uploaded here, per account (``did``, ``cid``), with the time of the
  upload; served for as long as some record of the account points at them.
* ``blob_refs``: one row per (account, blob, record, place in the record), for every
  record the node holds (local or gossiped), written by :func:`track_refs` in the
  transaction that stores the commit, so it is never ahead of or behind the repos.
  It says which blobs a node may serve or fetch for an account: only referenced ones.
* ``blob_cache``: bytes of other nodes' blobs, fetched on demand, keyed by CID (the
  CID was checked), dropped least recently used first past the byte budget.

Garbage collection (:meth:`BlobStore.collect`): an upload no record points at is
deleted once it is older than the grace period, whether it was never used or its
last record went. ``blob_gc`` lists the candidates (each upload, and each upload a
record stopped pointing at, with the time it became one), so a pass looks at a
bounded number of rows, never at every blob the node holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from protocol.blobs import blob_refs_in
from protocol.cid import CID
from protocol.encoding import decode
from protocol.errors import SkyfedError

if TYPE_CHECKING:
    from .sqlite import SqliteStorage

log = logging.getLogger("skyfed.blobs")

__all__ = ["BLOBS_SCHEMA", "BlobRow", "BlobStore", "backfill_refs", "track_refs"]

BLOBS_SCHEMA = """
CREATE TABLE IF NOT EXISTS blobs (
    did TEXT NOT NULL,
    cid BLOB NOT NULL,
    mime TEXT NOT NULL,
    size INTEGER NOT NULL,
    created_at REAL NOT NULL,
    data BLOB NOT NULL,
    UNIQUE (did, cid)
);
CREATE INDEX IF NOT EXISTS blobs_age ON blobs (created_at);
CREATE TABLE IF NOT EXISTS blob_refs (
    did TEXT NOT NULL,
    cid BLOB NOT NULL,
    uri TEXT NOT NULL,
    path TEXT NOT NULL,
    mime TEXT NOT NULL,
    rev TEXT NOT NULL,
    link TEXT NOT NULL,
    PRIMARY KEY (did, cid, uri, path)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS blob_refs_uri ON blob_refs (uri);
CREATE INDEX IF NOT EXISTS blob_refs_rev ON blob_refs (did, rev);
CREATE TABLE IF NOT EXISTS blob_cache (
    cid BLOB PRIMARY KEY,
    mime TEXT NOT NULL,
    size INTEGER NOT NULL,
    used_at REAL NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS blob_cache_used ON blob_cache (used_at);
CREATE TABLE IF NOT EXISTS blob_gc (
    did TEXT NOT NULL,
    cid BLOB NOT NULL,
    since REAL NOT NULL,
    PRIMARY KEY (did, cid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS blob_gc_since ON blob_gc (since);
"""


def track_refs(
    conn: sqlite3.Connection,
    did: str,
    rev: str,
    collection: str,
    rkey: str,
    block: bytes | None,
    *,
    replaced: bool = True,
) -> None:
    """Replace the blob refs of one record (``block`` None: it was deleted;
    ``replaced`` False: no record was stored at this path before, so it has none)."""
    uri = f"at://{did}/{collection}/{rkey}"
    had = replaced and (
        conn.execute("SELECT 1 FROM blob_refs WHERE uri = ? LIMIT 1", (uri,)).fetchone()
    )
    if had:
        # Uploads this record pointed at may now be unreferenced: candidates for
        # collection (if it still points at one, the collector finds the ref).
        # The time from here, not SQL's julianday('now'): PostgreSQL has none.
        conn.execute(
            "INSERT OR REPLACE INTO blob_gc SELECT r.did, r.cid, ? FROM blob_refs r"
            " JOIN blobs b ON b.did = r.did AND b.cid = r.cid WHERE r.uri = ?",
            (time.time(), uri),
        )
        conn.execute("DELETE FROM blob_refs WHERE uri = ?", (uri,))
    # Every blob ref has a "mimeType" key, spelled out in the encoded map: most
    # records have none, and are not decoded and walked a second time for it.
    if block is None or b"mimeType" not in block:
        return
    try:
        value = decode(block)
    except SkyfedError:
        return
    # ``link``: the CID's string, so views print URLs without encoding base32 again.
    rows = [
        (did, ref.cid.to_bytes(), uri, ref.path, ref.mime, rev, ref.cid.to_str())
        for ref in blob_refs_in(value)
    ]
    if rows:
        conn.executemany("INSERT OR IGNORE INTO blob_refs VALUES (?, ?, ?, ?, ?, ?, ?)", rows)


def backfill_refs(conn: sqlite3.Connection) -> None:
    """Fill ``blob_refs`` from the records already stored (a database from before it)."""
    rows = conn.execute(
        "SELECT r.did, r.collection, r.rkey, b.data, p.rev FROM records r"
        " JOIN blocks b ON b.cid = r.cid JOIN repos p ON p.did = r.did"
    )
    for did, collection, rkey, data, rev in rows:
        track_refs(conn, did, rev, collection, rkey, data)


#: Candidates one garbage-collection pass looks at (then it runs again at once if
#: there were that many).
_GC_BATCH = 500


@dataclass(frozen=True, slots=True)
class BlobRow:
    cid: CID
    mime: str
    data: bytes


class BlobStore:
    """The node's blobs, over its SQLite storage (every call one read or write)."""

    def __init__(
        self,
        storage: SqliteStorage,
        *,
        cache_bytes: int,
        grace: float,
        clock: object = time.time,
    ):
        self.storage = storage
        self.cache_bytes = cache_bytes
        self.grace = grace
        self._clock = clock

    def _now(self) -> float:
        return float(self._clock())  # type: ignore[operator]

    # -- uploads -----------------------------------------------------------------
    async def put_upload(self, did: str, cid: CID, mime: str, data: bytes) -> None:
        now = self._now()

        def put(conn: sqlite3.Connection) -> None:
            # A second upload of the same bytes restarts the grace period.
            conn.execute(
                "INSERT INTO blobs VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (did, cid)"
                " DO UPDATE SET created_at = excluded.created_at",
                (did, cid.to_bytes(), mime, len(data), now, data),
            )
            conn.execute(
                "INSERT OR REPLACE INTO blob_gc VALUES (?, ?, ?)", (did, cid.to_bytes(), now)
            )

        await self.storage.write(put)

    async def uploaded(self, did: str, cid: CID) -> tuple[str, int] | None:
        """(mime, size) of an upload held for ``did``."""

        def q(conn: sqlite3.Connection) -> tuple[str, int] | None:
            row = conn.execute(
                "SELECT mime, size FROM blobs WHERE did = ? AND cid = ?", (did, cid.to_bytes())
            ).fetchone()
            return None if row is None else (row[0], row[1])

        return await self.storage.read(q)

    # -- reading -----------------------------------------------------------------
    async def local(self, did: str, cid: CID, *, referenced: bool) -> BlobRow | None:
        """An upload of ``did``'s; with ``referenced``, only if a record points at it."""
        raw = cid.to_bytes()

        def q(conn: sqlite3.Connection) -> BlobRow | None:
            row = conn.execute(
                "SELECT mime, data FROM blobs WHERE did = ? AND cid = ?", (did, raw)
            ).fetchone()
            if row is None:
                return None
            if referenced and not _is_referenced(conn, did, raw):
                return None
            return BlobRow(cid, row[0], row[1])

        return await self.storage.read(q)

    async def referenced(self, did: str, cid: CID) -> bool:
        raw = cid.to_bytes()
        return await self.storage.read(lambda conn: _is_referenced(conn, did, raw))

    async def cached(self, cid: CID) -> BlobRow | None:
        raw = cid.to_bytes()
        row = await self.storage.read(
            lambda conn: conn.execute(
                "SELECT mime, data, used_at FROM blob_cache WHERE cid = ?", (raw,)
            ).fetchone()
        )
        if row is None:
            return None
        now = self._now()
        if now - row[2] > 60:  # touch at most once a minute: a read should not write
            await self.storage.write(
                lambda conn: conn.execute(
                    "UPDATE blob_cache SET used_at = ? WHERE cid = ?", (now, raw)
                )
            )
        return BlobRow(cid, row[0], row[1])

    async def put_cached(self, cid: CID, mime: str, data: bytes) -> None:
        """Keep a fetched blob (its CID checked by the caller), then drop the least
        recently used ones until the cache is within its byte budget."""
        if len(data) > self.cache_bytes:
            return
        now = self._now()
        budget = self.cache_bytes

        def put(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO blob_cache VALUES (?, ?, ?, ?, ?)",
                (cid.to_bytes(), mime, len(data), now, data),
            )
            _trim_cache(conn, budget)

        await self.storage.write(put)

    async def cache_size(self) -> int:
        return await self.storage.read(
            lambda conn: conn.execute("SELECT COALESCE(SUM(size), 0) FROM blob_cache").fetchone()[0]
        )

    async def list_refs(
        self, did: str, since: str | None, after: bytes | None, limit: int
    ) -> list[CID]:
        """Distinct blobs ``did``'s records point at, in CID order after ``after``;
        with ``since``, only those of records written after that rev."""

        def q(conn: sqlite3.Connection) -> list[CID]:
            sql = "SELECT DISTINCT cid FROM blob_refs WHERE did = ? AND cid > ?"
            args: list[object] = [did, after or b""]
            if since is not None:
                sql += " AND rev > ?"
                args.append(since)
            sql += " ORDER BY cid LIMIT ?"
            args.append(limit)
            return [CID.from_bytes(r[0]) for r in conn.execute(sql, args)]

        return await self.storage.read(q)

    # -- collection --------------------------------------------------------------
    async def collect(self, limit: int = _GC_BATCH) -> int:
        """Look at up to ``limit`` candidates past the grace period (uploads, and
        uploads a record stopped pointing at) and delete those no record points at;
        returns how many went. The work of a pass is bounded by ``limit`` however
        many blobs the node holds."""
        return (await self._collect(limit))[1]

    async def _collect(self, limit: int) -> tuple[int, int]:
        cutoff = self._now() - self.grace

        def gc(conn: sqlite3.Connection) -> tuple[int, int]:
            due = conn.execute(
                "SELECT did, cid FROM blob_gc WHERE since < ? ORDER BY since LIMIT ?",
                (cutoff, limit),
            ).fetchall()
            deleted = 0
            for did, cid in due:
                conn.execute("DELETE FROM blob_gc WHERE did = ? AND cid = ?", (did, cid))
                if not _is_referenced(conn, did, cid):
                    conn.execute("DELETE FROM blobs WHERE did = ? AND cid = ?", (did, cid))
                    deleted += 1
            return len(due), deleted

        return await self.storage.write(gc)

    def gc_context(self, interval: float) -> Callable[[Any], AsyncIterator[None]]:
        """An aiohttp cleanup context running :meth:`collect` every ``interval``
        seconds (a full pass runs again at once, so a backlog drains in batches)."""

        async def loop() -> None:
            while True:
                await asyncio.sleep(interval)
                try:
                    while (await self._collect(_GC_BATCH))[0] == _GC_BATCH:
                        pass
                except Exception:
                    log.exception("blob garbage collection failed")

        async def ctx(_app: Any) -> AsyncIterator[None]:
            task = asyncio.create_task(loop())
            yield
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        return ctx


def _is_referenced(conn: sqlite3.Connection, did: str, raw: bytes) -> bool:
    return (
        conn.execute(
            "SELECT 1 FROM blob_refs WHERE did = ? AND cid = ? LIMIT 1", (did, raw)
        ).fetchone()
        is not None
    )


def _trim_cache(conn: sqlite3.Connection, budget: int) -> None:
    total = conn.execute("SELECT COALESCE(SUM(size), 0) FROM blob_cache").fetchone()[0]
    while total > budget:
        rows = conn.execute("SELECT cid, size FROM blob_cache ORDER BY used_at LIMIT 64").fetchall()
        if not rows:
            return
        for cid, size in rows:
            conn.execute("DELETE FROM blob_cache WHERE cid = ?", (cid,))
            total -= size
            if total <= budget:
                return
