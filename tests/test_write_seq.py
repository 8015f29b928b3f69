"""The firehose sequence as the writer hands it out: from memory within a write group,
read and stored once per group (node/store/sqlite.py ``_GroupSeq``). A job that fails
after taking a seq gives it back, so the stream has no gap, and a storage opened
again goes on after the last stored seq."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from node import wiring
from node.appview.search import index_post, unindex_post
from node.config import NodeConfig
from node.store.sqlite import SqliteStorage, _append_event

DID = "did:example:seq"


def _event(storage: SqliteStorage) -> object:
    def w(conn: sqlite3.Connection) -> int:
        seq, _ = _append_event(conn, storage._seq, DID, "#account", {"did": DID, "time": ""})
        return seq

    return w


async def test_a_failed_job_gives_its_seq_back_and_a_reopened_storage_goes_on(
    tmp_path: Path,
) -> None:
    config = NodeConfig(data_dir=tmp_path / "node", port=0)
    storage = wiring.make_storage(config)
    await storage.open()
    event = _event(storage)

    def failing(conn: sqlite3.Connection) -> int:
        event(conn)  # type: ignore[operator]
        raise RuntimeError("refused after taking a seq")

    try:
        for _ in range(3):  # whether or not the three share a group
            first, failed, last = await asyncio.wait_for(
                asyncio.gather(
                    storage.write(event),  # type: ignore[arg-type]
                    storage.write(failing),
                    storage.write(event),  # type: ignore[arg-type]
                    return_exceptions=True,
                ),
                timeout=30,
            )
            assert isinstance(failed, RuntimeError)
            assert isinstance(first, int)
            assert isinstance(last, int)
            assert last == first + 1
            assert (await storage.seq_bounds())[1] == last
        stored = [seq for seq, _ in await storage.events_after(0, 100)]
        assert stored == list(range(stored[0], stored[0] + 6))
    finally:
        await storage.close()

    again = wiring.make_storage(config)
    await again.open()
    try:
        seq = await asyncio.wait_for(again.write(_event(again)), timeout=30)  # type: ignore[arg-type]
        assert seq == last + 1
    finally:
        await again.close()


async def test_search_rows_queued_in_a_group_match_what_is_stored(tmp_path: Path) -> None:
    """post_fts is written once per group (node/store/sqlite.py ``_flush_post_fts``):
    a post indexed and removed, or edited, within one group, and one whose write
    failed, leave the index as if each write had gone alone (FTS5's integrity check
    compares it with post_search), and a post is searchable once its write returns."""
    config = NodeConfig(data_dir=tmp_path / "node", port=0)
    storage = wiring.make_storage(config)
    if not storage.full_text_search:
        return  # PostgreSQL: no search tables
    await storage.open()
    at = "2026-12-02T10:00:00.000Z"
    uris = [f"at://{DID}/app.bsky.feed.post/{i}" for i in range(4)]

    def post(uri: str, text: str) -> object:
        def w(conn: sqlite3.Connection) -> None:
            index_post(conn, uri, DID, {"text": text}, at)

        return w

    def gone(uri: str) -> object:
        def w(conn: sqlite3.Connection) -> None:
            unindex_post(conn, uri)

        return w

    def edit(uri: str, text: str) -> object:
        def w(conn: sqlite3.Connection) -> None:
            unindex_post(conn, uri)
            index_post(conn, uri, DID, {"text": text}, at)

        return w

    def failing(conn: sqlite3.Connection) -> None:
        index_post(conn, uris[3], DID, {"text": "gamma"}, at)
        raise RuntimeError("refused after indexing")

    def matches(word: str) -> object:
        def q(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT s.uri FROM post_fts f JOIN post_search s ON s.id = f.rowid"
                " WHERE post_fts MATCH ? ORDER BY s.uri",
                (word,),
            ).fetchall()
            return [r[0] for r in rows]

        return q

    def check(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO post_fts (post_fts) VALUES ('integrity-check')")

    try:
        await storage.write(post(uris[2], "epsilon"))  # type: ignore[arg-type]
        jobs = [
            post(uris[0], "alpha"),
            gone(uris[0]),
            post(uris[1], "beta"),
            failing,
            edit(uris[1], "delta"),
            edit(uris[2], "zeta"),
        ]
        results = await asyncio.wait_for(
            asyncio.gather(*(storage.write(j) for j in jobs), return_exceptions=True),  # type: ignore[arg-type]
            timeout=30,
        )
        assert [isinstance(r, RuntimeError) for r in results] == [False] * 3 + [True] + [False] * 2
        for word, want in [
            ("alpha", []),
            ("beta", []),
            ("gamma", []),
            ("epsilon", []),
            ("delta", [uris[1]]),
            ("zeta", [uris[2]]),
        ]:
            assert await storage.read(matches(word)) == want, word  # type: ignore[arg-type]
        await storage.write(check)
        await storage.write(gone(uris[1]))  # type: ignore[arg-type]
        assert await storage.read(matches("delta")) == []  # type: ignore[arg-type]
        await storage.write(check)
    finally:
        await storage.close()
