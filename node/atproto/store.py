"""What the atproto bridge keeps in the node's database, and how it changes.

Functions here run on the writer (or a reader) connection, inside the caller's
transaction, so a record, its index rows and the upstream's cursor move together:
a crash replays an event instead of skipping it. Records are kept as the DAG-CBOR
the account signed, apart from skyfed's own blocks: they are not skyfed repos and
are never served or gossiped as such.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from protocol.errors import SkyfedError

from ..appview.index import index_value, unindex_record

__all__ = [
    "ATPROTO_SCHEMA",
    "AccountState",
    "Write",
    "account_count",
    "account_state",
    "apply_writes",
    "get_cursor",
    "put_cursor",
    "record_json",
    "remove_account",
    "replace_repo",
    "set_identity",
    "set_status",
]

ATPROTO_SCHEMA = """
CREATE TABLE IF NOT EXISTS atproto_cursors (
    source TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS atproto_accounts (
    did TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    handle TEXT,
    status TEXT NOT NULL DEFAULT 'active',
    rev TEXT,
    data BLOB
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS atproto_records (
    uri TEXT PRIMARY KEY,
    did TEXT NOT NULL,
    cid BLOB NOT NULL,
    data BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS atproto_records_did ON atproto_records (did);
"""


@dataclass(frozen=True, slots=True)
class AccountState:
    status: str
    rev: str | None
    data: bytes | None


@dataclass(frozen=True, slots=True)
class Write:
    """One record change: ``block`` None for a delete."""

    collection: str
    rkey: str
    cid: bytes | None
    block: bytes | None


def get_cursor(conn: sqlite3.Connection, source: str) -> int | None:
    row = conn.execute("SELECT seq FROM atproto_cursors WHERE source = ?", (source,)).fetchone()
    return int(row[0]) if row else None


def put_cursor(conn: sqlite3.Connection, source: str, seq: int | None) -> None:
    if seq is None:
        conn.execute("DELETE FROM atproto_cursors WHERE source = ?", (source,))
    else:
        conn.execute("INSERT OR REPLACE INTO atproto_cursors VALUES (?, ?)", (source, seq))


def account_state(conn: sqlite3.Connection, did: str) -> AccountState | None:
    row = conn.execute(
        "SELECT status, rev, data FROM atproto_accounts WHERE did = ?", (did,)
    ).fetchone()
    return AccountState(row[0], row[1], row[2]) if row else None


def account_count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM atproto_accounts").fetchone()[0])


def set_identity(conn: sqlite3.Connection, did: str, host: str, handle: str | None) -> None:
    """Record an account's PDS host and its handle (None: not verified both ways)."""
    conn.execute(
        "INSERT INTO atproto_accounts (did, host, handle) VALUES (?, ?, ?)"
        " ON CONFLICT (did) DO UPDATE SET host = excluded.host, handle = excluded.handle",
        (did, host, handle),
    )


def set_status(conn: sqlite3.Connection, did: str, status: str) -> None:
    conn.execute("UPDATE atproto_accounts SET status = ? WHERE did = ?", (status, did))


def _drop_record(conn: sqlite3.Connection, did: str, collection: str, rkey: str) -> None:
    unindex_record(conn, did, collection, rkey)
    conn.execute("DELETE FROM atproto_records WHERE uri = ?", (f"at://{did}/{collection}/{rkey}",))


def record_json(block: bytes) -> dict[str, object] | None:
    """A record block as its JSON form, or None if it is not an atproto record."""
    from protocol.atproto import dagcbor  # only where bridged records are read

    try:
        value = dagcbor.decode(block)
        dagcbor.check_data_model(value)
        out = dagcbor.to_json(value)
    except SkyfedError:
        return None
    return out if isinstance(out, dict) else None


def _put_record(conn: sqlite3.Connection, did: str, w: Write, indexed_at: str) -> None:
    _drop_record(conn, did, w.collection, w.rkey)
    assert w.block is not None
    assert w.cid is not None
    value = record_json(w.block)
    if value is None:
        return  # hashed and signed, but not a record we can read: not shown
    uri = f"at://{did}/{w.collection}/{w.rkey}"
    conn.execute("INSERT INTO atproto_records VALUES (?, ?, ?, ?)", (uri, did, w.cid, w.block))
    index_value(conn, did, w.collection, w.rkey, value, w.cid, indexed_at)


def apply_writes(
    conn: sqlite3.Connection,
    did: str,
    rev: str,
    data: bytes,
    writes: Iterable[Write],
    indexed_at: str,
) -> None:
    """A verified commit's changes, and the account's new ``(rev, data)``."""
    for w in writes:
        if w.block is None:
            _drop_record(conn, did, w.collection, w.rkey)
        else:
            _put_record(conn, did, w, indexed_at)
    conn.execute("UPDATE atproto_accounts SET rev = ?, data = ? WHERE did = ?", (rev, data, did))


def _drop_all(conn: sqlite3.Connection, did: str) -> None:
    prefix = f"at://{did}/"
    for (uri,) in conn.execute("SELECT uri FROM atproto_records WHERE did = ?", (did,)).fetchall():
        collection, _, rkey = uri[len(prefix) :].partition("/")
        _drop_record(conn, did, collection, rkey)


def replace_repo(
    conn: sqlite3.Connection,
    did: str,
    rev: str,
    data: bytes,
    writes: Iterable[Write],
    indexed_at: str,
) -> None:
    """A verified whole repo (getRepo) replaces everything held for ``did``."""
    _drop_all(conn, did)
    apply_writes(conn, did, rev, data, writes, indexed_at)


def remove_account(conn: sqlite3.Connection, did: str) -> None:
    """A deleted account: its records and index rows go, and the account row."""
    _drop_all(conn, did)
    conn.execute("DELETE FROM atproto_accounts WHERE did = ?", (did,))
