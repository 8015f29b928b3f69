"""The firehose sequence as the writer hands it out: from memory within a write group,
read and stored once per group (node/store/sqlite.py ``_GroupSeq``). A job that fails
after taking a seq gives it back, so the stream has no gap, and a storage opened
again goes on after the last stored seq."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from node import wiring
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
