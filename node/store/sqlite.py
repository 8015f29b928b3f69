"""Durable storage for a node: embedded SQLite in WAL mode, off the event loop.

Everything the node persists goes through :class:`Storage`, so a server database can
be added later behind the same methods. :class:`SqliteStorage` implements it:

* one writer thread owns the only write connection and *group-commits*: it takes
  every write waiting in its queue, runs each in its own SAVEPOINT inside one
  transaction, commits (``synchronous=FULL``: the WAL is fsynced), and only then
  resolves the callers' futures. A write is never acknowledged before it is
  durable, and one failing write does not fail the others in its group;
* a small pool of reader threads, each with its own read-only connection;
* a commit's blocks, record index rows, repo head and firehose event are written in
  one transaction, so a crash (even ``kill -9``) never leaves half a commit;
* the schema carries a version (``PRAGMA user_version``) and migrates forward on open.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from protocol.cid import CID
from protocol.commit import Commit
from protocol.encoding import Value
from protocol.errors import DecodeError
from protocol.eventstream import encode_frame
from protocol.heads import label_set_digest
from protocol.ingest import HeadState

from ..accounts.handles import HANDLES_SCHEMA, Handles
from ..appview.graph import GRAPH_SCHEMA, reindex_graph
from ..appview.index import (
    FEED_SCHEMA,
    FEEDGEN_SCHEMA,
    INDEX_SCHEMA,
    index_record,
    rebuild_feeds,
    unindex_record,
)
from ..appview.notifications import NOTIFICATIONS_SCHEMA, rebuild_notifications
from ..appview.search import SEARCH_SCHEMA, rebuild_search
from ..atproto.store import ATPROTO_SCHEMA
from ..datadir import create_private_file, make_data_dir
from ..server.auth import SessionRow
from .blobs import BLOBS_SCHEMA, backfill_refs, track_refs

__all__ = [
    "AccountRow",
    "CommitBatch",
    "EquivocationRow",
    "LabelRow",
    "RecordRow",
    "RepoHead",
    "SqliteSessionStore",
    "SqliteStorage",
    "Storage",
]

T = TypeVar("T")

#: Writes taken into one transaction at most (bounds the latency of a group).
_GROUP_MAX = 512
#: The writer's page cache (KiB) and WAL pages between automatic checkpoints.
_WRITER_CACHE_KIB = 16 * 1024
_WAL_CHECKPOINT_PAGES = 8000
#: Writes queued for the writer at most; more wait for room.
_MAX_IN_FLIGHT = 4096

_MIGRATIONS: list[str] = [
    # v1
    """
    CREATE TABLE blocks (
        cid BLOB PRIMARY KEY,
        data BLOB NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE repos (
        did TEXT PRIMARY KEY,
        head BLOB NOT NULL,
        rev TEXT NOT NULL,
        root BLOB NOT NULL,
        status TEXT,
        local INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE commits (
        did TEXT NOT NULL,
        rev TEXT NOT NULL,
        cid BLOB NOT NULL,
        root BLOB NOT NULL,
        since TEXT,
        PRIMARY KEY (did, rev)
    ) WITHOUT ROWID;
    CREATE TABLE equivocations (
        did TEXT NOT NULL,
        since TEXT,
        kept BLOB NOT NULL,
        dropped BLOB NOT NULL,
        seen_at TEXT NOT NULL,
        PRIMARY KEY (did, kept, dropped)
    ) WITHOUT ROWID;
    CREATE TABLE records (
        did TEXT NOT NULL,
        collection TEXT NOT NULL,
        rkey TEXT NOT NULL,
        cid BLOB NOT NULL,
        PRIMARY KEY (did, collection, rkey)
    ) WITHOUT ROWID;
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY,
        did TEXT NOT NULL,
        kind TEXT NOT NULL,
        frame BLOB NOT NULL
    );
    CREATE TABLE accounts (
        did TEXT PRIMARY KEY,
        handle TEXT NOT NULL UNIQUE,
        email TEXT,
        password_hash TEXT NOT NULL,
        signing_key TEXT NOT NULL,
        rotation_key TEXT NOT NULL,
        created_at TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE identity_ops (
        did TEXT NOT NULL,
        idx INTEGER NOT NULL,
        cid BLOB NOT NULL,
        op BLOB NOT NULL,
        PRIMARY KEY (did, idx)
    ) WITHOUT ROWID;
    CREATE TABLE identities (
        did TEXT PRIMARY KEY,
        handle TEXT,
        signing_key TEXT NOT NULL,
        endpoint TEXT,
        head BLOB NOT NULL,
        tombstoned INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    CREATE INDEX identities_handle ON identities (handle);
    CREATE TABLE sessions (
        sid TEXT PRIMARY KEY,
        did TEXT NOT NULL,
        refresh_hash TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        revoked INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    CREATE INDEX sessions_did ON sessions (did);
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value BLOB NOT NULL
    ) WITHOUT ROWID;
    """,
]
_MIGRATIONS.append(INDEX_SCHEMA)  # v2: the app.bsky indexes (node/appview/index.py)
_MIGRATIONS.append(FEED_SCHEMA)  # v3: timelines written at index time
_MIGRATIONS.append(  # v4: labels, and one digest per labeler for reconciliation
    """
    CREATE TABLE labels (
        cid BLOB PRIMARY KEY,
        src TEXT NOT NULL,
        uri TEXT NOT NULL,
        val TEXT NOT NULL,
        neg INTEGER NOT NULL,
        cts TEXT NOT NULL,
        exp TEXT,
        data BLOB NOT NULL
    );
    CREATE INDEX labels_uri ON labels (uri);
    CREATE INDEX labels_src ON labels (src);
    CREATE TABLE label_sets (
        src TEXT PRIMARY KEY,
        digest BLOB NOT NULL,
        count INTEGER NOT NULL
    ) WITHOUT ROWID;
    """
)
_MIGRATIONS.append(  # v5: node moderation (accounts/moderation.py): takedowns, per-reader mutes
    """
    CREATE TABLE takedowns (
        id INTEGER PRIMARY KEY,
        did TEXT NOT NULL,
        scopes TEXT NOT NULL,
        reason TEXT NOT NULL,
        created_at TEXT NOT NULL,
        reversed_at TEXT,
        reverse_reason TEXT
    );
    CREATE INDEX takedowns_did ON takedowns (did);
    CREATE UNIQUE INDEX takedowns_active ON takedowns (did) WHERE reversed_at IS NULL;
    CREATE TABLE mutes (
        did TEXT NOT NULL,
        subject TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (did, subject)
    ) WITHOUT ROWID;
    """
)
# v6: identity (node/accounts/portability.py): signing keys reserved for a rotation, and the
# accounts this node hosts but may not write for (moving here, moved away, deactivated)
_MIGRATIONS.append(
    """
    CREATE TABLE reserved_keys (
        did TEXT PRIMARY KEY,
        signing_key TEXT NOT NULL,
        created_at TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE account_deactivations (
        did TEXT PRIMARY KEY,
        reason TEXT NOT NULL,
        since TEXT NOT NULL
    ) WITHOUT ROWID;
    """
)
# v7: equivocation evidence is two signed commits (docs/protocol.md §17.1), kept so
# anyone can re-verify it. Rows of v1-v6 rested on the unsigned ``since`` and prove
# nothing, so they go.
_MIGRATIONS.append(
    """
    DROP TABLE equivocations;
    CREATE TABLE equivocations (
        did TEXT NOT NULL,
        kept BLOB NOT NULL,
        dropped BLOB NOT NULL,
        reason TEXT NOT NULL,
        kept_commit BLOB NOT NULL,
        dropped_commit BLOB NOT NULL,
        seen_at TEXT NOT NULL,
        PRIMARY KEY (did, kept, dropped)
    ) WITHOUT ROWID;
    """
)
#: The first schema whose commits sign prev (commit version 4): an older database
#: that holds repositories holds version-3 commits, which no node accepts any more.
_SIGNED_PREV_SCHEMA = len(_MIGRATIONS)
# v8: confirmed handles (node/accounts/handles.py): one DID per handle, the confirmations
# learned with identities, and the issuer pinned per handle domain
_MIGRATIONS.append(HANDLES_SCHEMA)
#: The first schema with feed generator declarations indexed: an older database's
#: generator records are indexed when it is upgraded.
_FEEDGEN_SCHEMA = len(_MIGRATIONS)
# v9: feed generator declarations (node/appview/index.py, node/appview/feeds.py)
_MIGRATIONS.append(FEEDGEN_SCHEMA)
# v10: lists, listblocks, gates, labeler declarations, and per-account private state
# (list and thread mutes, preferences, the report queue): node/appview/graph.py
_MIGRATIONS.append(GRAPH_SCHEMA)
_GRAPH_SCHEMA = len(_MIGRATIONS)
# v11: blobs (node/store/blobs.py): uploads, which records point at which blobs, and
# the cache of blobs fetched from peers
_BLOBS_SCHEMA = len(_MIGRATIONS) + 1
_MIGRATIONS.append(BLOBS_SCHEMA)
# v12: notifications written at index time, and full-text search (node/appview/
# notifications.py, search.py); an older database has both built from its records
_NOTIFY_SEARCH_SCHEMA = len(_MIGRATIONS)
_MIGRATIONS.append(NOTIFICATIONS_SCHEMA + SEARCH_SCHEMA)
# v13: the atproto bridge (node/atproto/, docs/atproto-bridge.md "Node side"): cursors
# per upstream, accounts followed there, and their records (DAG-CBOR, as signed)
_MIGRATIONS.append(ATPROTO_SCHEMA)
# v14: the reply-parent and quote indexes hold only the posts that have one: every
# other post's NULL entry sat at a random place (ordered by URI) and cost each
# one-post commit a page of each index in the WAL (bench/RESULTS.md, "Issue 16: the
# writer's cost per commit"). Their queries ask for ``= ?``, which implies NOT NULL.
_MIGRATIONS.append(
    """
    DROP INDEX posts_parent;
    CREATE INDEX posts_parent ON posts (reply_parent) WHERE reply_parent IS NOT NULL;
    DROP INDEX posts_quote;
    CREATE INDEX posts_quote ON posts (quote) WHERE quote IS NOT NULL;
    """
)
# v15: the post search index keeps no per-row token counts (FTS5 columnsize=0): only
# bm25() reads them, and post search ranks by time and engagement, never by bm25
# (actor search, which does, keeps its own). One row and 0.6-0.7 WAL pages fewer per
# post. SQLite only: PostgreSQL has no search tables (PG_STEP_INSTEAD below).
_POST_FTS_COLUMNSIZE = len(_MIGRATIONS)
_MIGRATIONS.append(
    """
    DROP TRIGGER post_search_ai;
    DROP TRIGGER post_search_ad;
    DROP TABLE post_fts;
    CREATE VIRTUAL TABLE post_fts USING fts5(
        text, author, lang, mentions, domains,
        content='post_search', content_rowid='id', columnsize=0,
        tokenize='unicode61 remove_diacritics 2'
    );
    CREATE TRIGGER post_search_ai AFTER INSERT ON post_search BEGIN
        INSERT INTO post_fts (rowid, text, author, lang, mentions, domains)
        VALUES (new.id, new.text, new.author, new.lang, new.mentions, new.domains);
    END;
    CREATE TRIGGER post_search_ad AFTER DELETE ON post_search BEGIN
        INSERT INTO post_fts (post_fts, rowid, text, author, lang, mentions, domains)
        VALUES ('delete', old.id, old.text, old.author, old.lang, old.mentions, old.domains);
    END;
    INSERT INTO post_fts (post_fts) VALUES ('rebuild');
    """
)
# v16: the post search index is written once per write group, not once per commit
# (FTS5 writes a segment, and merges, at every SAVEPOINT, and each write of a group
# runs in one): the triggers that wrote it row by row go, and the connections that
# write (the writer, the upgrade) queue new rows in a TEMP table instead
# (_POST_FTS_QUEUE), flushed into post_fts before COMMIT (_flush_post_fts).
_POST_FTS_DEFERRED = len(_MIGRATIONS)
_MIGRATIONS.append(
    """
    DROP TRIGGER post_search_ai;
    DROP TRIGGER post_search_ad;
    """
)
# v17: blocks in a rowid table, with a unique index on the CID. As a WITHOUT ROWID
# table its rows (up to a few KB each) sat in the CID's B-tree, which keeps a row
# inline only up to ~1 KB and splits full pages at every random insert: ~10 WAL pages
# per one-post commit and twice the file. Now the data is appended in rowid order and
# only the small index entries land at random places (bench/RESULTS.md, "Issue 16:
# the writer's cost per commit"). PostgreSQL keeps its table (a heap with the CID's
# index already): PG_STEP_INSTEAD.
_BLOCKS_BY_ROW = len(_MIGRATIONS)
_MIGRATIONS.append(
    """
    CREATE TABLE blocks_by_row (
        id INTEGER PRIMARY KEY,
        cid BLOB NOT NULL,
        data BLOB NOT NULL
    );
    INSERT INTO blocks_by_row (cid, data) SELECT cid, data FROM blocks;
    DROP TABLE blocks;
    ALTER TABLE blocks_by_row RENAME TO blocks;
    CREATE UNIQUE INDEX blocks_cid ON blocks (cid);
    """
)
#: Steps PostgreSQL runs instead of the shared one of the same index: SQLite FTS5 has no
#: translation, so a PostgreSQL node has no search tables (searchPosts and
#: searchActors answer MethodNotImplemented there; docs/postgresql.md).
PG_STEP_INSTEAD: dict[int, str] = {
    _NOTIFY_SEARCH_SCHEMA: NOTIFICATIONS_SCHEMA,
    _POST_FTS_COLUMNSIZE: "",
    _POST_FTS_DEFERRED: "",
    _BLOCKS_BY_ROW: "",
}

#: Installed on each SQLite connection that writes (TEMP objects are per connection):
#: a post_search row inserted is queued, not yet in post_fts; one deleted is taken
#: out of post_fts if it was in it, or out of the queue if it never got there. A
#: savepoint rolled back (a failed write) rolls its queue entries back with it.
_POST_FTS_QUEUE = """
CREATE TEMP TABLE IF NOT EXISTS post_fts_queue (id INTEGER PRIMARY KEY);
CREATE TEMP TRIGGER IF NOT EXISTS post_search_queue AFTER INSERT ON main.post_search BEGIN
    INSERT INTO post_fts_queue VALUES (new.id);
END;
CREATE TEMP TRIGGER IF NOT EXISTS post_search_unindex AFTER DELETE ON main.post_search BEGIN
    INSERT INTO post_fts (post_fts, rowid, text, author, lang, mentions, domains)
    SELECT 'delete', old.id, old.text, old.author, old.lang, old.mentions, old.domains
    WHERE NOT EXISTS (SELECT 1 FROM post_fts_queue WHERE id = old.id);
    DELETE FROM post_fts_queue WHERE id = old.id;
END;
"""


def _queue_post_fts(conn: sqlite3.Connection) -> None:
    # Statement by statement: executescript() would COMMIT an open transaction first.
    statement = ""
    for piece in _POST_FTS_QUEUE.split(";"):
        statement += piece + ";"
        if sqlite3.complete_statement(statement):
            if statement.strip(" \n;"):
                conn.execute(statement)
            statement = ""


def _flush_post_fts(conn: sqlite3.Connection) -> None:
    """Index the queued post_search rows in post_fts (in the open transaction)."""
    if conn.execute("SELECT 1 FROM temp.post_fts_queue LIMIT 1").fetchone() is None:
        return
    conn.execute(
        "INSERT INTO main.post_fts (rowid, text, author, lang, mentions, domains)"
        " SELECT s.id, s.text, s.author, s.lang, s.mentions, s.domains"
        " FROM temp.post_fts_queue q JOIN main.post_search s ON s.id = q.id ORDER BY s.id"
    )
    conn.execute("DELETE FROM temp.post_fts_queue")


SCHEMA_VERSION = len(_MIGRATIONS)


@dataclass(frozen=True, slots=True)
class RepoHead:
    did: str
    head: CID
    rev: str
    root: CID
    status: str | None
    local: bool

    @property
    def active(self) -> bool:
        return self.status is None


@dataclass(frozen=True, slots=True)
class AccountRow:
    did: str
    handle: str
    email: str | None
    password_hash: str
    signing_key: str
    rotation_key: str
    created_at: str


@dataclass(frozen=True, slots=True)
class RecordRow:
    did: str
    collection: str
    rkey: str
    cid: CID
    value: bytes


@dataclass(frozen=True, slots=True)
class EquivocationRow:
    """Evidence an author signed two histories: both signed commit blocks."""

    did: str
    reason: str
    kept: CID
    kept_commit: bytes
    dropped: CID
    dropped_commit: bytes
    seen_at: str


@dataclass(frozen=True, slots=True)
class CommitBatch:
    """Everything one commit changes, written in one transaction.

    ``prev_head`` is a compare-and-swap guard: the write fails unless the stored head
    is still that commit (None: the repo must not exist yet)."""

    did: str
    commit_cid: CID
    rev: str
    root: CID
    prev_head: CID | None
    blocks: dict[CID, bytes]
    record_changes: Sequence[tuple[str, str, CID | None]]  # collection, rkey, cid or delete
    frame_kind: str
    frame: Callable[[int], bytes]  # builds the firehose frame once seq is known
    since: str | None = None
    local: bool = True
    #: When this node indexed the commit (views' indexedAt).
    indexed_at: str = ""


#: One label to store: its CID, its encoding, and the fields it is queried by
#: (src, uri, val, neg, cts, exp).
LabelRow = tuple[CID, bytes, str, str, str, bool, str, str | None]


class HeadMoved(Exception):
    """The repo head changed under a compare-and-swap write (a race, not bad input)."""


class Storage(Protocol):
    """What the node asks of its database."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...

    # repos and blocks
    async def apply_commit(self, batch: CommitBatch) -> int: ...
    async def get_head(self, did: str) -> RepoHead | None: ...
    async def list_repos(self, after: str | None, limit: int) -> list[RepoHead]: ...
    async def set_repo_status(self, did: str, status: str | None, time: str = "") -> None: ...
    async def get_blocks(self, cids: Iterable[CID]) -> dict[CID, bytes]: ...
    async def get_record(self, did: str, collection: str, rkey: str) -> RecordRow | None: ...
    async def list_records(
        self, did: str, collection: str, limit: int, cursor: str | None, reverse: bool
    ) -> list[RecordRow]: ...
    async def list_collections(self, did: str) -> list[str]: ...
    async def commit_at(self, did: str, rev: str) -> tuple[CID, CID] | None: ...
    def read_block(self, cid: CID) -> bytes | None: ...

    # events
    async def events_after(self, seq: int, limit: int) -> list[tuple[int, bytes]]: ...
    async def seq_bounds(self) -> tuple[int, int]: ...
    async def trim_events(self, keep_after: int) -> None: ...

    # accounts and identity
    async def create_account(
        self,
        account: AccountRow,
        identity_op: tuple[CID, bytes],
        genesis: CommitBatch,
        *,
        signing_did_key: str,
        endpoint: str,
    ) -> int: ...
    async def account_by_handle(self, handle: str) -> AccountRow | None: ...
    async def account_by_did(self, did: str) -> AccountRow | None: ...
    async def identity_ops(self, did: str) -> list[bytes]: ...
    async def resolve_handle(self, handle: str) -> str | None: ...
    async def account_count(self) -> int: ...

    # sessions
    async def put_session(self, row: SessionRow) -> None: ...
    async def get_session(self, sid: str) -> SessionRow | None: ...
    async def rotate_refresh(
        self, sid: str, old_hash: str, new_hash: str, expires_at: int
    ) -> bool: ...
    async def revoke_session(self, sid: str) -> None: ...
    async def revoke_all_sessions(self, did: str) -> None: ...

    # node state
    async def get_meta(self, key: str) -> bytes | None: ...
    async def put_meta(self, key: str, value: bytes) -> None: ...


def _connect(path: str, *, readonly: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    if readonly:
        conn.execute("PRAGMA query_only=ON")
    return conn


def _tune_writer(conn: sqlite3.Connection) -> None:
    """Settings for the one write connection (none of them weakens durability: the
    WAL is still fsynced at every COMMIT)."""
    # Every commit inserts blocks at random keys: a page cache that holds the
    # blocks index's inner pages saves reads in every insert (default is 2 MB).
    conn.execute(f"PRAGMA cache_size=-{_WRITER_CACHE_KIB}")
    # Checkpoint less often: a page rewritten by many commits in a row (the inner
    # pages, repos, meta, the newest events) is then copied back to the database
    # file once per 8,000 pages of WAL instead of once per 1,000.
    conn.execute(f"PRAGMA wal_autocheckpoint={_WAL_CHECKPOINT_PAGES}")


class _WriteJob:
    __slots__ = ("fn", "future", "loop")

    def __init__(self, fn: Callable[[sqlite3.Connection], Any], loop: asyncio.AbstractEventLoop):
        self.fn = fn
        self.loop = loop
        self.future: asyncio.Future[Any] = loop.create_future()


def _settle(job: _WriteJob, result: Any, error: BaseException | None) -> None:
    if job.future.done():  # the caller went away (cancelled)
        return
    if error is not None:
        job.future.set_exception(error)
    else:
        job.future.set_result(result)


class SqliteStorage:
    """SQLite in WAL mode; one group-committing writer thread and a reader pool."""

    def __init__(self, path: str | Path, *, readers: int = 4):
        self.path = str(path)
        self._readers = readers
        self._local = threading.local()
        self._read_pool: ThreadPoolExecutor | None = None
        self._queue: queue.SimpleQueue[_WriteJob | None] = queue.SimpleQueue()
        self._in_flight = asyncio.Semaphore(_MAX_IN_FLIGHT)
        self._writer: threading.Thread | None = None
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._publish_lock = threading.Lock()
        #: The seq counter of the writer's current group (writer thread only).
        self._seq = _GroupSeq()
        #: Called on the event loop after each durable group, with (seq, frame) pairs.
        self.on_events: Callable[[list[tuple[int, bytes]]], None] | None = None
        self.group_sizes: list[int] = []
        #: Bumped whenever labels are stored (reconciliation rebuilds its items).
        self.label_version = 0
        #: The handle rule (set by the node): run in every identity write, so the
        #: handle table never disagrees with the logs it was built from.
        self.handles: Handles | None = None

    # -- life cycle --------------------------------------------------------------
    #: What a failed transaction raises (the group fails as a whole on these).
    _db_errors: tuple[type[BaseException], ...] = (sqlite3.Error,)
    #: Names the reader and writer threads.
    _thread_prefix = "sqlite"
    #: Whether the search tables exist (SQLite FTS5; not on PostgreSQL).
    full_text_search = True

    @property
    def shared_path(self) -> str | None:
        """The database file another process may open to read (WAL lets its readers
        see every committed write), or None where it may not: worker processes
        render read views over it (node/appview/render.py)."""
        return self.path

    async def open(self) -> None:
        await asyncio.to_thread(self._prepare)
        await asyncio.to_thread(self._migrate)
        self._read_pool = ThreadPoolExecutor(
            self._readers, thread_name_prefix=f"{self._thread_prefix}-read"
        )
        self._writer = threading.Thread(
            target=self._write_loop, name=f"{self._thread_prefix}-write", daemon=True
        )
        self._writer.start()

    def _prepare(self) -> None:
        make_data_dir(Path(self.path).parent)
        # Created 0600 before SQLite opens it: the database holds signing keys and
        # password hashes, and SQLite gives its -wal and -shm files the same mode.
        create_private_file(Path(self.path))

    def _connect_reader(self) -> sqlite3.Connection:
        return _connect(self.path, readonly=True)

    def _connect_writer(self) -> sqlite3.Connection:
        conn = _connect(self.path, readonly=False)
        _tune_writer(conn)
        _queue_post_fts(conn)
        return conn

    def _begin(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")

    async def close(self) -> None:
        if self._writer is not None:
            self._queue.put(None)
            await asyncio.to_thread(self._writer.join)
            self._writer = None
        if self._read_pool is not None:
            self._read_pool.shutdown(wait=True)
            self._read_pool = None
        with self._conns_lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()

    def _migrate(self) -> None:
        conn = _connect(self.path, readonly=False)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"database schema v{version} is newer than this skyfed (v{SCHEMA_VERSION})"
                )
            if version == SCHEMA_VERSION:
                return
            if 0 < version < _SIGNED_PREV_SCHEMA:
                _refuse_old_commits(conn)
            # One transaction for the whole upgrade: the schema steps first, then the
            # back-fills, which index with code that expects the newest schema.
            conn.execute("BEGIN IMMEDIATE")
            for i in range(version, SCHEMA_VERSION):
                # Split at the ";" that end statements (a trigger body holds more).
                statement = ""
                for piece in _MIGRATIONS[i].split(";"):
                    statement += piece + ";"
                    if sqlite3.complete_statement(statement):
                        if statement.strip(" \n;"):
                            conn.execute(statement)
                        statement = ""
            _queue_post_fts(conn)
            _backfill(conn, version)
            _flush_post_fts(conn)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("COMMIT")
        finally:
            conn.close()

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    # -- plumbing ----------------------------------------------------------------
    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and not self._usable(conn):
            with self._conns_lock:
                self._conns.remove(conn)
            with contextlib.suppress(*self._db_errors):
                conn.close()
            conn = None
        if conn is None:
            conn = self._connect_reader()
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` on a reader thread."""
        assert self._read_pool is not None, "storage is not open"
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._read_pool, lambda: fn(self._reader()))

    async def run_in_reader(self, fn: Callable[[], T]) -> T:
        """Run ``fn()`` on a reader thread (for work that reads blocks as it goes)."""
        assert self._read_pool is not None, "storage is not open"
        return await asyncio.get_running_loop().run_in_executor(self._read_pool, fn)

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` in the writer's next group; returns once durable."""
        if self._writer is None:
            raise RuntimeError("storage is not open")
        # Bounded: past _MAX_IN_FLIGHT waiting writes, callers wait here (back
        # pressure) instead of growing the writer's queue without limit.
        async with self._in_flight:
            job = _WriteJob(fn, asyncio.get_running_loop())
            self._queue.put(job)
            return await job.future  # type: ignore[no-any-return]

    def _write_loop(self) -> None:
        conn: sqlite3.Connection | None = self._connect_writer()
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                jobs = [first]
                stop = False
                while len(jobs) < _GROUP_MAX:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        stop = True
                        break
                    jobs.append(nxt)
                if conn is None:  # lost after an earlier group: connect again
                    try:
                        conn = self._connect_writer()
                    except self._db_errors as e:
                        self._fail(jobs, e)
                        continue
                self._run_group(conn, jobs)
                if not self._usable(conn):
                    with contextlib.suppress(*self._db_errors):
                        conn.close()
                    conn = None
                if stop:
                    return
        finally:
            if conn is not None:
                conn.close()

    def _usable(self, conn: sqlite3.Connection) -> bool:
        """Whether a connection still works (a server's can be dropped; a file's not)."""
        return True

    def _fail(self, jobs: list[_WriteJob], error: BaseException) -> None:
        for job in jobs:
            with contextlib.suppress(RuntimeError):  # loop closed during shutdown
                job.loop.call_soon_threadsafe(_settle, job, None, error)

    def _run_group(self, conn: sqlite3.Connection, jobs: list[_WriteJob]) -> None:
        results: list[tuple[Any, BaseException | None]] = []
        try:
            self._begin(conn)
            self._seq.begin(conn)
            for job in jobs:
                conn.execute("SAVEPOINT job")
                mark = self._seq.last
                try:
                    result = job.fn(conn)
                except BaseException as e:
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    self._seq.last = mark
                    results.append((None, e))
                else:
                    conn.execute("RELEASE job")
                    results.append((result, None))
            self._seq.store(conn)
            self._before_commit(conn)
            conn.execute("COMMIT")
        except self._db_errors as e:
            with contextlib.suppress(*self._db_errors):
                conn.execute("ROLLBACK")
            results = [(None, e) for _ in jobs]
        self.group_sizes.append(len(jobs))
        if len(self.group_sizes) > 1000:
            del self.group_sizes[:500]
        events: list[tuple[int, bytes]] = []
        for result, error in results:
            if error is None and isinstance(result, _Published):
                events.extend(result.events)
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_WriteJob, Any, Any]]] = {}
        for job, (result, error) in zip(jobs, results, strict=True):
            by_loop.setdefault(job.loop, []).append((job, result, error))
        # Held while the events are picked and handed to the loop (which runs the
        # callbacks in the order they were handed over): events reach the firehose in
        # seq order even when another thread also publishes (node/store/postgres.py).
        with self._publish_lock:
            events = self._committed_events(conn, events)
            for loop, items in by_loop.items():
                with contextlib.suppress(RuntimeError):  # loop closed during shutdown
                    loop.call_soon_threadsafe(self._deliver, items, events)

    def _before_commit(self, conn: sqlite3.Connection) -> None:
        """Last statements of a write group's transaction: on SQLite, the group's
        posts into the search index."""
        _flush_post_fts(conn)

    def _committed_events(
        self, conn: sqlite3.Connection, events: list[tuple[int, bytes]]
    ) -> list[tuple[int, bytes]]:
        """The events to publish after a group committed (on SQLite, the group's own:
        this process is the only writer)."""
        return events

    def _deliver(
        self, items: list[tuple[_WriteJob, Any, Any]], events: list[tuple[int, bytes]]
    ) -> None:
        # Publish before resolving: a client that hears "done" and subscribes next
        # must find the event already in the stream's history or live queue.
        if events and self.on_events is not None:
            self.on_events(events)
        for job, value, error in items:
            _settle(job, value, error)

    # -- repos and blocks --------------------------------------------------------
    async def apply_commit(self, batch: CommitBatch) -> int:
        published = await self.write(lambda conn: _apply_commit(conn, batch, self._seq))
        return published.value

    async def get_head(self, did: str) -> RepoHead | None:
        return await self.read(lambda conn: _get_head(conn, did))

    def get_head_sync(self, did: str) -> RepoHead | None:
        return _get_head(self._reader(), did)

    async def list_repos(self, after: str | None, limit: int) -> list[RepoHead]:
        def q(conn: sqlite3.Connection) -> list[RepoHead]:
            rows = conn.execute(
                "SELECT did, head, rev, root, status, local FROM repos WHERE did > ?"
                " ORDER BY did LIMIT ?",
                (after or "", limit),
            ).fetchall()
            return [_head_row(r) for r in rows]

        return await self.read(q)

    async def set_repo_status(self, did: str, status: str | None, time: str = "") -> None:
        """Change a repo's account status and announce it with an #account event."""

        def w(conn: sqlite3.Connection) -> _Published:
            cur = conn.execute(
                "UPDATE repos SET status = ? WHERE did = ? AND status IS NOT ?",
                (status, did, status),
            )
            if cur.rowcount == 0:
                return _Published(0, [])
            body: dict[str, Value] = {"active": status is None, "did": did, "time": time}
            if status is not None:
                body["status"] = status
            seq, frame = _append_event(conn, self._seq, did, "#account", body)
            return _Published(seq, [(seq, frame)])

        await self.write(w)

    def read_block(self, cid: CID) -> bytes | None:
        """Synchronous block read, for trees walked on a reader thread."""
        row = (
            self._reader()
            .execute("SELECT data FROM blocks WHERE cid = ?", (cid.to_bytes(),))
            .fetchone()
        )
        return None if row is None else row[0]

    def get_block(self, cid: CID) -> bytes | None:
        """:class:`protocol.mst.BlockSource`: only from a reader thread."""
        return self.read_block(cid)

    async def get_blocks(self, cids: Iterable[CID]) -> dict[CID, bytes]:
        wanted = [c.to_bytes() for c in cids]

        def q(conn: sqlite3.Connection) -> dict[CID, bytes]:
            out: dict[CID, bytes] = {}
            for i in range(0, len(wanted), 500):
                chunk = wanted[i : i + 500]
                marks = ",".join("?" * len(chunk))
                for cid, data in conn.execute(
                    f"SELECT cid, data FROM blocks WHERE cid IN ({marks})", chunk
                ):
                    out[CID.from_bytes(cid)] = data
            return out

        return await self.read(q)

    async def get_record(self, did: str, collection: str, rkey: str) -> RecordRow | None:
        def q(conn: sqlite3.Connection) -> RecordRow | None:
            row = conn.execute(
                "SELECT r.cid, b.data FROM records r JOIN blocks b ON b.cid = r.cid"
                " WHERE r.did = ? AND r.collection = ? AND r.rkey = ?",
                (did, collection, rkey),
            ).fetchone()
            if row is None:
                return None
            return RecordRow(did, collection, rkey, CID.from_bytes(row[0]), row[1])

        return await self.read(q)

    async def list_records(
        self, did: str, collection: str, limit: int, cursor: str | None, reverse: bool
    ) -> list[RecordRow]:
        def q(conn: sqlite3.Connection) -> list[RecordRow]:
            # Default order is newest first (rkeys are TIDs), as atproto lists them.
            if reverse:
                cond, order = "r.rkey > ?", "ASC"
                start = cursor or ""
            else:
                cond, order = "r.rkey < ?", "DESC"
                start = cursor if cursor is not None else "\U0010ffff"
            rows = conn.execute(
                "SELECT r.rkey, r.cid, b.data FROM records r JOIN blocks b ON b.cid = r.cid"
                f" WHERE r.did = ? AND r.collection = ? AND {cond}"
                f" ORDER BY r.rkey {order} LIMIT ?",
                (did, collection, start, limit),
            ).fetchall()
            return [RecordRow(did, collection, k, CID.from_bytes(c), v) for k, c, v in rows]

        return await self.read(q)

    async def list_collections(self, did: str) -> list[str]:
        def q(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT DISTINCT collection FROM records WHERE did = ? ORDER BY collection",
                (did,),
            ).fetchall()
            return [r[0] for r in rows]

        return await self.read(q)

    async def commit_at(self, did: str, rev: str) -> tuple[CID, CID] | None:
        def q(conn: sqlite3.Connection) -> tuple[CID, CID] | None:
            row = conn.execute(
                "SELECT cid, root FROM commits WHERE did = ? AND rev = ?", (did, rev)
            ).fetchone()
            return None if row is None else (CID.from_bytes(row[0]), CID.from_bytes(row[1]))

        return await self.read(q)

    async def head_state(self, did: str) -> HeadState | None:
        """The held head with the ``since`` it was committed on and its signed
        ``prev`` (for ingest)."""

        def q(conn: sqlite3.Connection) -> HeadState | None:
            row = conn.execute(
                "SELECT r.head, r.rev, r.root, c.since, b.data FROM repos r"
                " LEFT JOIN commits c ON c.did = r.did AND c.rev = r.rev"
                " LEFT JOIN blocks b ON b.cid = r.head WHERE r.did = ?",
                (did,),
            ).fetchone()
            if row is None:
                return None
            if row[4] is None:
                raise RuntimeError(f"the head commit block of {did} is missing")
            prev = Commit.from_bytes(row[4]).prev
            return HeadState(CID.from_bytes(row[0]), row[1], CID.from_bytes(row[2]), row[3], prev)

        return await self.read(q)

    async def all_heads(self) -> list[tuple[str, CID, str]]:
        """(did, head, rev) of every repo held, for reconciliation."""

        def q(conn: sqlite3.Connection) -> list[tuple[str, CID, str]]:
            rows = conn.execute("SELECT did, head, rev FROM repos").fetchall()
            return [(d, CID.from_bytes(h), r) for d, h, r in rows]

        return await self.read(q)

    async def identity_heads(self) -> list[tuple[str, CID]]:
        def q(conn: sqlite3.Connection) -> list[tuple[str, CID]]:
            rows = conn.execute("SELECT did, head FROM identities").fetchall()
            return [(d, CID.from_bytes(h)) for d, h in rows]

        return await self.read(q)

    async def record_equivocation(self, row: EquivocationRow) -> None:
        def w(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR IGNORE INTO equivocations VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    row.did,
                    row.kept.to_bytes(),
                    row.dropped.to_bytes(),
                    row.reason,
                    row.kept_commit,
                    row.dropped_commit,
                    row.seen_at,
                ),
            )

        await self.write(w)

    async def equivocations(self, limit: int = 100) -> list[EquivocationRow]:
        def q(conn: sqlite3.Connection) -> list[EquivocationRow]:
            rows = conn.execute(
                "SELECT did, reason, kept, kept_commit, dropped, dropped_commit, seen_at"
                " FROM equivocations ORDER BY seen_at DESC LIMIT ?",
                (limit,),
            ).fetchall()
            return [
                EquivocationRow(d, r, CID.from_bytes(k), kc, CID.from_bytes(x), xc, t)
                for d, r, k, kc, x, xc, t in rows
            ]

        return await self.read(q)

    # -- labels ------------------------------------------------------------------
    async def put_labels(self, labels: Sequence[LabelRow]) -> int:
        """Store labels (ones already held are ignored) and recompute the digest of
        every labeler touched, in one transaction. Returns how many were new."""

        def w(conn: sqlite3.Connection) -> int:
            added = 0
            touched: set[str] = set()
            for cid, data, src, uri, val, neg, cts, exp in labels:
                cur = conn.execute(
                    "INSERT OR IGNORE INTO labels VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (cid.to_bytes(), src, uri, val, int(neg), cts, exp, data),
                )
                if cur.rowcount:
                    added += 1
                    touched.add(src)
            for src in touched:
                rows = conn.execute("SELECT cid FROM labels WHERE src = ?", (src,)).fetchall()
                digest = label_set_digest(CID.from_bytes(r[0]) for r in rows)
                conn.execute(
                    "INSERT OR REPLACE INTO label_sets VALUES (?, ?, ?)", (src, digest, len(rows))
                )
            return added

        added = await self.write(w)
        if added:
            self.label_version += 1
        return added

    async def label_cids(self, src: str) -> set[bytes]:
        """The binary CIDs of every label held from ``src``."""

        def q(conn: sqlite3.Connection) -> set[bytes]:
            return {r[0] for r in conn.execute("SELECT cid FROM labels WHERE src = ?", (src,))}

        return await self.read(q)

    async def label_digest(self, src: str) -> bytes | None:
        """The digest of ``src``'s label set (protocol.heads), None if none is held."""

        def q(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute("SELECT digest FROM label_sets WHERE src = ?", (src,)).fetchone()
            return None if row is None else bytes(row[0])

        return await self.read(q)

    async def labels_for(self, src: str, limit: int = 10_000) -> list[bytes]:
        """The encodings of ``src``'s labels, in CID order, at most ``limit``."""

        def q(conn: sqlite3.Connection) -> list[bytes]:
            rows = conn.execute(
                "SELECT data FROM labels WHERE src = ? ORDER BY cid LIMIT ?", (src, limit)
            ).fetchall()
            return [r[0] for r in rows]

        return await self.read(q)

    async def query_labels(
        self,
        uri_patterns: Sequence[str],
        sources: Sequence[str],
        limit: int,
        cursor: int | None,
    ) -> list[tuple[int, bytes]]:
        """(cursor, encoding) of the labels on subjects matching any pattern (a
        trailing ``*`` is a prefix match; a lone ``*`` matches all), from any of
        ``sources`` (all when empty), in storage order after ``cursor``."""

        def q(conn: sqlite3.Connection) -> list[tuple[int, bytes]]:
            clauses: list[str] = []
            args: list[Any] = []
            for pattern in uri_patterns:
                if pattern.endswith("*"):
                    # Not LIKE: it folds ASCII case, and subjects are case-sensitive.
                    prefix = pattern[:-1]
                    clauses.append("substr(uri, 1, ?) = ?")
                    args += [len(prefix), prefix]
                else:
                    clauses.append("uri = ?")
                    args.append(pattern)
            sql = "SELECT rowid, data FROM labels WHERE (" + " OR ".join(clauses) + ")"
            if sources:
                sql += " AND src IN (" + ",".join("?" * len(sources)) + ")"
                args.extend(sources)
            if cursor is not None:
                sql += " AND rowid > ?"
                args.append(cursor)
            sql += " ORDER BY rowid LIMIT ?"
            args.append(limit)
            return conn.execute(sql, args).fetchall()

        return await self.read(q)

    async def label_sets(self) -> list[tuple[str, bytes]]:
        def q(conn: sqlite3.Connection) -> list[tuple[str, bytes]]:
            return conn.execute("SELECT src, digest FROM label_sets").fetchall()

        return await self.read(q)

    # -- events ------------------------------------------------------------------
    async def events_after(self, seq: int, limit: int) -> list[tuple[int, bytes]]:
        def q(conn: sqlite3.Connection) -> list[tuple[int, bytes]]:
            return conn.execute(
                "SELECT seq, frame FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
            ).fetchall()

        return await self.read(q)

    async def seq_bounds(self) -> tuple[int, int]:
        def q(conn: sqlite3.Connection) -> tuple[int, int]:
            lo, hi = conn.execute("SELECT MIN(seq), MAX(seq) FROM events").fetchone()
            if hi is None:
                last = conn.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
                n = int(last[0]) if last else 0
                return n + 1, n
            return lo, hi

        return await self.read(q)

    async def trim_events(self, keep_after: int) -> None:
        def w(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM events WHERE seq <= ?", (keep_after,))

        await self.write(w)

    # -- accounts and identity ---------------------------------------------------
    async def create_account(
        self,
        account: AccountRow,
        identity_op: tuple[CID, bytes],
        genesis: CommitBatch,
        *,
        signing_did_key: str,
        endpoint: str,
    ) -> int:
        def w(conn: sqlite3.Connection) -> _Published:
            a = account
            conn.execute(
                "INSERT INTO accounts VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    a.did,
                    a.handle,
                    a.email,
                    a.password_hash,
                    a.signing_key,
                    a.rotation_key,
                    a.created_at,
                ),
            )
            _put_identity(conn, a.did, [identity_op], a.handle, signing_did_key, endpoint)
            # As atproto announces a new account: its identity, its status, its repo.
            events = [
                _append_event(
                    conn,
                    self._seq,
                    a.did,
                    "#identity",
                    {"did": a.did, "handle": a.handle, "time": a.created_at},
                ),
                _append_event(
                    conn,
                    self._seq,
                    a.did,
                    "#account",
                    {"active": True, "did": a.did, "time": a.created_at},
                ),
            ]
            published = _apply_commit(conn, genesis, self._seq)
            if self.handles is not None:
                self.handles.rebind(conn, a.did)
            return _Published(published.value, events + published.events)

        return (await self.write(w)).value

    async def put_identity(
        self,
        did: str,
        ops: list[tuple[CID, bytes]],
        handle: str | None,
        signing_key: str,
        endpoint: str | None,
        tombstoned: bool = False,
        time: str = "",
    ) -> None:
        """Replace ``did``'s stored log (its chain last) and announce it (#identity)."""

        def w(conn: sqlite3.Connection) -> _Published:
            conn.execute("DELETE FROM identity_ops WHERE did = ?", (did,))
            _put_identity(conn, did, ops, handle, signing_key, endpoint, tombstoned)
            shown = handle
            if self.handles is not None:
                self.handles.rebind(conn, did)
                # The event names the handle only if it is confirmed here.
                row = conn.execute("SELECT handle FROM handles WHERE did = ?", (did,)).fetchone()
                shown = None if row is None else str(row[0])
            body: dict[str, Value] = {"did": did, "time": time}
            if shown is not None:
                body["handle"] = shown
            seq, frame = _append_event(conn, self._seq, did, "#identity", body)
            return _Published(seq, [(seq, frame)])

        await self.write(w)

    async def account_by_handle(self, handle: str) -> AccountRow | None:
        def q(conn: sqlite3.Connection) -> AccountRow | None:
            row = conn.execute("SELECT * FROM accounts WHERE handle = ?", (handle,)).fetchone()
            return None if row is None else AccountRow(*row)

        return await self.read(q)

    async def account_by_did(self, did: str) -> AccountRow | None:
        def q(conn: sqlite3.Connection) -> AccountRow | None:
            row = conn.execute("SELECT * FROM accounts WHERE did = ?", (did,)).fetchone()
            return None if row is None else AccountRow(*row)

        return await self.read(q)

    async def account_count(self) -> int:
        return await self.read(
            lambda c: int(c.execute("SELECT COUNT(*) FROM accounts").fetchone()[0])
        )

    async def identity_ops(self, did: str) -> list[bytes]:
        def q(conn: sqlite3.Connection) -> list[bytes]:
            rows = conn.execute(
                "SELECT op FROM identity_ops WHERE did = ? ORDER BY idx", (did,)
            ).fetchall()
            return [r[0] for r in rows]

        return await self.read(q)

    async def resolve_handle(self, handle: str) -> str | None:
        """The DID ``handle`` resolves to here: confirmed handles only."""

        def q(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT did FROM handles WHERE handle = ?", (handle,)).fetchone()
            return None if row is None else row[0]

        return await self.read(q)

    async def confirmed_handle(self, did: str) -> str | None:
        """``did``'s handle if it is confirmed here, else None (``handle.invalid``)."""

        def q(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT handle FROM handles WHERE did = ?", (did,)).fetchone()
            return None if row is None else row[0]

        return await self.read(q)

    async def handle_confirmation(self, did: str) -> bytes | None:
        """The confirmation held for ``did``'s handle (sent with its identity)."""

        def q(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute(
                "SELECT data FROM handle_confirmations WHERE did = ?", (did,)
            ).fetchone()
            return None if row is None else bytes(row[0])

        return await self.read(q)

    async def rebind_handle(self, did: str) -> None:
        """Re-run the handle rule for ``did`` (after its registry row changed)."""
        handles = self.handles
        if handles is not None:
            await self.write(lambda conn: handles.rebind(conn, did))

    async def identity(self, did: str) -> tuple[str | None, str, str | None] | None:
        """(handle, signing key, endpoint) of a known identity."""

        def q(conn: sqlite3.Connection) -> tuple[str | None, str, str | None] | None:
            row = conn.execute(
                "SELECT handle, signing_key, endpoint FROM identities WHERE did = ?", (did,)
            ).fetchone()
            return None if row is None else (row[0], row[1], row[2])

        return await self.read(q)

    # -- sessions ----------------------------------------------------------------
    async def put_session(self, row: SessionRow) -> None:
        def w(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?)",
                (row.sid, row.did, row.refresh_hash, row.created_at, row.expires_at, row.revoked),
            )

        await self.write(w)

    async def get_session(self, sid: str) -> SessionRow | None:
        def q(conn: sqlite3.Connection) -> SessionRow | None:
            row = conn.execute("SELECT * FROM sessions WHERE sid = ?", (sid,)).fetchone()
            if row is None:
                return None
            return SessionRow(row[0], row[1], row[2], int(row[3]), int(row[4]), bool(row[5]))

        return await self.read(q)

    async def rotate_refresh(self, sid: str, old_hash: str, new_hash: str, expires_at: int) -> bool:
        def w(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE sessions SET refresh_hash = ?, expires_at = ?"
                " WHERE sid = ? AND refresh_hash = ? AND revoked = 0",
                (new_hash, expires_at, sid, old_hash),
            )
            return cur.rowcount == 1

        return await self.write(w)

    async def revoke_session(self, sid: str) -> None:
        def w(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE sessions SET revoked = 1 WHERE sid = ?", (sid,))

        await self.write(w)

    async def revoke_all_sessions(self, did: str) -> None:
        def w(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE sessions SET revoked = 1 WHERE did = ?", (did,))

        await self.write(w)

    # -- node state --------------------------------------------------------------
    async def get_meta(self, key: str) -> bytes | None:
        def q(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            return None if row is None else bytes(row[0])

        return await self.read(q)

    async def put_meta(self, key: str, value: bytes) -> None:
        def w(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

        await self.write(w)


@dataclass(frozen=True, slots=True)
class _Published:
    """A write result that also carries firehose events to publish once durable."""

    value: int
    events: list[tuple[int, bytes]]


def _refuse_old_commits(conn: sqlite3.Connection) -> None:
    """Commits of version 3 cannot be carried over (they would have to be re-signed
    with their prev, docs/protocol.md §8): say so plainly instead of failing later."""
    rows = conn.execute(
        "SELECT r.did, b.data FROM repos r LEFT JOIN blocks b ON b.cid = r.head"
    ).fetchall()
    for did, block in rows:
        try:
            if block is None:
                raise DecodeError("its head commit block is missing")
            Commit.from_bytes(block)
        except DecodeError as e:
            raise RuntimeError(
                f"this database holds {did}'s repository in a commit format skyfed no"
                f" longer accepts ({e}); start the node with a new data directory"
            ) from e


def _head_row(r: Sequence[Any]) -> RepoHead:
    return RepoHead(r[0], CID.from_bytes(r[1]), r[2], CID.from_bytes(r[3]), r[4], bool(r[5]))


def _get_head(conn: sqlite3.Connection, did: str) -> RepoHead | None:
    row = conn.execute(
        "SELECT did, head, rev, root, status, local FROM repos WHERE did = ?", (did,)
    ).fetchone()
    return None if row is None else _head_row(row)


class _GroupSeq:
    """The firehose sequence inside one write group: read from ``meta`` once when the
    group begins (the writer holds the database's write lock then, so no other
    process moves it), handed out from memory to the group's events, and written
    back once before COMMIT; a job rolled back to its savepoint gives its seqs back.
    Only the writer thread touches it."""

    __slots__ = ("last", "start")

    def __init__(self) -> None:
        self.start = 0
        self.last = 0

    def begin(self, conn: sqlite3.Connection) -> None:
        row = conn.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
        self.start = self.last = int(row[0]) if row else 0

    def next(self) -> int:
        self.last += 1
        return self.last

    def store(self, conn: sqlite3.Connection) -> None:
        """Write the group's last seq (in its transaction), if it handed any out."""
        if self.last != self.start:
            conn.execute(
                "INSERT OR REPLACE INTO meta VALUES ('last_seq', ?)", (str(self.last).encode(),)
            )


def _apply_commit(conn: sqlite3.Connection, b: CommitBatch, seqs: _GroupSeq) -> _Published:
    row = conn.execute("SELECT head FROM repos WHERE did = ?", (b.did,)).fetchone()
    current = None if row is None else CID.from_bytes(row[0])
    if current != b.prev_head:
        raise HeadMoved(f"head of {b.did} moved")
    conn.executemany(
        "INSERT OR IGNORE INTO blocks (cid, data) VALUES (?, ?)",
        [(cid.to_bytes(), data) for cid, data in b.blocks.items()],
    )
    indexed_at = b.indexed_at or _utc_now()
    # A node that refuses to serve an account does not index it (node/accounts/moderation.py).
    unserved = conn.execute(
        "SELECT 1 FROM takedowns WHERE did = ? AND reversed_at IS NULL"
        " AND instr(scopes, 'serve') > 0",
        (b.did,),
    ).fetchone()
    for collection, rkey, cid in b.record_changes:
        if cid is None:
            unindex_record(conn, b.did, collection, rkey)
            conn.execute(
                "DELETE FROM records WHERE did = ? AND collection = ? AND rkey = ?",
                (b.did, collection, rkey),
            )
            track_refs(conn, b.did, b.rev, collection, rkey, None)
        else:
            raw = cid.to_bytes()
            # A record at a path that held none has no index rows or blob refs to
            # take away (they are written and removed with its records row, in one
            # transaction): the insert says which case this is, and only a record
            # replacing another pays for the look-ups and deletes.
            fresh = conn.execute(
                "INSERT OR IGNORE INTO records VALUES (?, ?, ?, ?)",
                (b.did, collection, rkey, raw),
            ).rowcount
            if not fresh:
                unindex_record(conn, b.did, collection, rkey)
                conn.execute(
                    "UPDATE records SET cid = ? WHERE did = ? AND collection = ? AND rkey = ?",
                    (raw, b.did, collection, rkey),
                )
            block = b.blocks.get(cid)
            if block is None:
                row = conn.execute("SELECT data FROM blocks WHERE cid = ?", (raw,)).fetchone()
                block = None if row is None else row[0]
            if block is not None and unserved is None:
                index_record(conn, b.did, collection, rkey, block, raw, indexed_at)
            track_refs(conn, b.did, b.rev, collection, rkey, block, replaced=not fresh)
    conn.execute(
        "INSERT INTO repos (did, head, rev, root, status, local) VALUES (?, ?, ?, ?, NULL, ?)"
        " ON CONFLICT (did) DO UPDATE SET head = excluded.head, rev = excluded.rev,"
        " root = excluded.root, status = CASE WHEN repos.status = 'desynchronized'"
        " THEN NULL ELSE repos.status END",
        (b.did, b.commit_cid.to_bytes(), b.rev, b.root.to_bytes(), int(b.local)),
    )
    conn.execute(
        "INSERT OR REPLACE INTO commits VALUES (?, ?, ?, ?, ?)",
        (b.did, b.rev, b.commit_cid.to_bytes(), b.root.to_bytes(), b.since),
    )
    seq = seqs.next()
    if unserved is not None:
        return _Published(seq, [])  # nor on this node's firehose
    frame = b.frame(seq)
    conn.execute("INSERT INTO events VALUES (?, ?, ?, ?)", (seq, b.did, b.frame_kind, frame))
    return _Published(seq, [(seq, frame)])


def _append_event(
    conn: sqlite3.Connection, seqs: _GroupSeq, did: str, kind: str, body: dict[str, Value]
) -> tuple[int, bytes]:
    """Sequence and store one firehose event (#identity, #account) in the current
    transaction; the frame is built here, once."""
    seq = seqs.next()
    frame = encode_frame(kind, {**body, "seq": seq})
    conn.execute("INSERT INTO events VALUES (?, ?, ?, ?)", (seq, did, kind, frame))
    return seq, frame


def _put_identity(
    conn: sqlite3.Connection,
    did: str,
    ops: list[tuple[CID, bytes]],
    handle: str | None,
    signing_key: str,
    endpoint: str | None,
    tombstoned: bool = False,
) -> None:
    for idx, (cid, op) in enumerate(ops):
        conn.execute(
            "INSERT OR REPLACE INTO identity_ops VALUES (?, ?, ?, ?)",
            (did, idx, cid.to_bytes(), op),
        )
    head = ops[-1][0].to_bytes()
    conn.execute(
        "INSERT OR REPLACE INTO identities VALUES (?, ?, ?, ?, ?, ?)",
        (did, handle, signing_key, endpoint, head, int(tombstoned)),
    )


class SqliteSessionStore:
    """:class:`node.server.auth.SessionStore` over a :class:`SqliteStorage`."""

    def __init__(self, storage: SqliteStorage):
        self.storage = storage

    async def create(self, session: SessionRow) -> None:
        await self.storage.put_session(session)

    async def get(self, sid: str) -> SessionRow | None:
        return await self.storage.get_session(sid)

    async def rotate_refresh(self, sid: str, old_hash: str, new_hash: str, new_expiry: int) -> bool:
        return await self.storage.rotate_refresh(sid, old_hash, new_hash, new_expiry)

    async def revoke(self, sid: str) -> None:
        await self.storage.revoke_session(sid)

    async def revoke_all(self, did: str) -> None:
        await self.storage.revoke_all_sessions(did)


def _utc_now() -> str:
    t = datetime.datetime.now(datetime.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _backfill(conn: sqlite3.Connection, version: int, *, search: bool = True) -> None:
    """After the schema steps from ``version`` up: index what an older database holds
    into the tables made since (both backends; ``search=False`` where the full-text
    tables do not exist, PostgreSQL)."""
    if 0 < version < 2:
        _reindex(conn)
    if 0 < version < 3:
        rebuild_feeds(conn)
    if 2 <= version <= _FEEDGEN_SCHEMA:
        _reindex(conn, "app.bsky.feed.generator")
    if 2 <= version < _GRAPH_SCHEMA:
        reindex_graph(conn, _utc_now())
    if 0 < version < _BLOBS_SCHEMA:
        backfill_refs(conn)
    if 0 < version <= _NOTIFY_SEARCH_SCHEMA:
        if search:
            rebuild_search(conn)
        rebuild_notifications(conn)


def _reindex(conn: sqlite3.Connection, only: str | None = None) -> None:
    """Build the indexes from the stored records (a database from before them), or
    those of the collection ``only`` (a database from before it was indexed)."""
    now = _utc_now()
    # Two statements, not "? IS NULL OR ...": PostgreSQL cannot type a bare NULL parameter.
    select = "SELECT r.did, r.collection, r.rkey, r.cid, b.data FROM records r JOIN blocks b"
    if only is None:
        rows = conn.execute(f"{select} ON b.cid = r.cid")
    else:
        rows = conn.execute(f"{select} ON b.cid = r.cid WHERE r.collection = ?", (only,))
    for did, collection, rkey, cid, data in rows.fetchall():
        index_record(conn, did, collection, rkey, data, cid, now)
