"""The node's storage on a PostgreSQL server (``storage = "postgresql://..."``).

The same class of object as :class:`~node.store.sqlite.SqliteStorage`, with the same
threads: one writer thread that group-commits (every write of a group in its own
SAVEPOINT, one COMMIT, and only then the callers hear back), and a pool of reader
threads, each holding one connection. The driver is psycopg 3 (sync connections, in
those threads, so the event loop never blocks). The node's SQL is written once in the
SQLite dialect; :mod:`node.store.dialect` rewrites it.

Durability: ``synchronous_commit = on`` on every connection, so COMMIT returns only
once the WAL is flushed on the server; a write is acknowledged after that. (A server
run with ``fsync = off`` breaks this promise, and :meth:`open` refuses it.)

Several node processes may share one database: each write group first takes one
transaction-scoped advisory lock (:data:`WRITE_LOCK`), so groups from different
processes commit one after another, as SQLite's ``BEGIN IMMEDIATE`` makes them. The
repo head compare-and-swap in :class:`~node.store.sqlite.CommitBatch` and the event
sequence (``meta.last_seq``) are read and written under that lock, so two processes
can never both advance one repo from the same head, nor hand out one seq twice.
Readers run anywhere, without locks. What is *not* shared between processes: each
process's live firehose hears only the events its own writer committed (a subscriber
that reconnects with a cursor replays the rest from the ``events`` table).

Schema versions are kept in ``skyfed_schema``; migrations run under another advisory
lock, so processes started together upgrade once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
from typing import Any, Final, cast

import psycopg

from .dialect import PgConnection, TableInfo, ddl_to_postgres, read_tables
from .sqlite import (
    _MIGRATIONS,
    _NOTIFY_SEARCH_SCHEMA,
    _SIGNED_PREV_SCHEMA,
    PG_STEP_INSTEAD,
    SCHEMA_VERSION,
    SqliteStorage,
    _backfill,
    _refuse_old_commits,
)

__all__ = ["CHANNEL", "MIGRATE_LOCK", "PG_MIGRATIONS", "WRITE_LOCK", "PostgresStorage"]

log = logging.getLogger(__name__)

#: Advisory lock keys (any bigint; these spell "skyfedW" / "skyfedM").
WRITE_LOCK: Final = 0x736B79666564_57
MIGRATE_LOCK: Final = 0x736B79666564_4D

#: The LISTEN/NOTIFY channel on which a committed write group announces the newest seq.
CHANNEL: Final = "skyfed_events"
#: Events read at once when catching up with other processes' writes.
_CATCH_UP_MAX: Final = 10_000


def _last_seq(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
    return int(row[0]) if row else 0


def _events_between(conn: sqlite3.Connection, after: int, upto: int) -> list[tuple[int, bytes]]:
    """Stored events with after < seq <= upto, oldest first, _CATCH_UP_MAX at most
    (call again from the last one for more)."""
    rows = conn.execute(
        "SELECT seq, frame FROM events WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
        (after, upto, _CATCH_UP_MAX),
    ).fetchall()
    return [(int(seq), bytes(frame)) for seq, frame in rows]


#: PostgreSQL-only statements run after the shared step of the same version (1-based):
#: what SQLite has built in and PostgreSQL lacks.
PG_MIGRATIONS: Final[dict[int, list[str]]] = {
    1: [
        "CREATE OR REPLACE FUNCTION instr(text, text) RETURNS integer"
        " LANGUAGE sql IMMUTABLE STRICT AS 'SELECT strpos($1, $2)'",
        # SQLite's two-argument max/min are scalar (PostgreSQL's GREATEST/LEAST).
        "CREATE OR REPLACE FUNCTION max(bigint, bigint) RETURNS bigint"
        " LANGUAGE sql IMMUTABLE STRICT AS 'SELECT GREATEST($1, $2)'",
        "CREATE OR REPLACE FUNCTION min(bigint, bigint) RETURNS bigint"
        " LANGUAGE sql IMMUTABLE STRICT AS 'SELECT LEAST($1, $2)'",
    ],
    # v12 (notifications) takes min() of two timestamps in text; compared bytewise,
    # as SQLite compares (and as the "C" collation of every text column here).
    _NOTIFY_SEARCH_SCHEMA + 1: [
        "CREATE OR REPLACE FUNCTION min(text, text) RETURNS text"
        """ LANGUAGE sql IMMUTABLE STRICT AS 'SELECT LEAST($1 COLLATE "C", $2 COLLATE "C")'""",
        "CREATE OR REPLACE FUNCTION max(text, text) RETURNS text"
        """ LANGUAGE sql IMMUTABLE STRICT AS 'SELECT GREATEST($1 COLLATE "C", $2 COLLATE "C")'""",
    ],
}


class PostgresStorage(SqliteStorage):
    """PostgreSQL through psycopg 3; one group-committing writer thread, reader pool."""

    _db_errors = (psycopg.Error,)
    _thread_prefix = "pg"
    full_text_search = False

    @property
    def shared_path(self) -> str | None:
        """None: read views stay in the node's process on PostgreSQL (a worker
        process would need server connections of its own; not done)."""
        return None

    def __init__(self, dsn: str, *, readers: int = 4):
        super().__init__("", readers=readers)
        self.dsn = dsn
        self.tables: TableInfo = {}
        #: The newest seq whose events this process has published (its own writers'
        #: and, through LISTEN/NOTIFY, other processes'): always published in order.
        self._published_seq = 0
        #: The seq before this process's current write group (read under the lock).
        self._group_start_seq = 0
        self._listener: threading.Thread | None = None
        self._stop_listening = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def open(self) -> None:
        await super().open()
        self._loop = asyncio.get_running_loop()
        self._published_seq = await self.read(_last_seq)
        self._stop_listening.clear()
        ready = threading.Event()
        self._listener = threading.Thread(
            target=self._listen, args=(ready,), name="pg-listen", daemon=True
        )
        self._listener.start()
        # LISTEN is in place before open returns: no notification falls between.
        await asyncio.to_thread(ready.wait, 30)

    async def close(self) -> None:
        if self._listener is not None:
            self._stop_listening.set()
            await asyncio.to_thread(self._listener.join)
            self._listener = None
        await super().close()

    # -- events from other processes (LISTEN/NOTIFY) --------------------------------
    def _before_commit(self, conn: sqlite3.Connection) -> None:
        # Delivered at COMMIT, only if it commits: "the sequence moved, to this".
        conn.execute(
            "SELECT pg_notify(?, convert_from(value, 'UTF8')) FROM meta WHERE key = 'last_seq'",
            (CHANNEL,),
        )

    def _committed_events(
        self, conn: sqlite3.Connection, events: list[tuple[int, bytes]]
    ) -> list[tuple[int, bytes]]:
        # Seqs are handed out under WRITE_LOCK, so every seq up to the one this group
        # started from is committed: other processes' events before ours are read
        # here and published first, keeping the firehose in seq order. (Called with
        # _publish_lock held.)
        out: list[tuple[int, bytes]] = []
        if self._group_start_seq > self._published_seq:
            after = self._published_seq
            try:
                while chunk := _events_between(conn, after, self._group_start_seq):
                    out += chunk
                    after = chunk[-1][0]
            except self._db_errors:
                # Publishing ours now would skip theirs: leave all of it to the
                # listener's catch-up, which reads everything from the table in order.
                return []
            self._published_seq = max(self._published_seq, self._group_start_seq)
        out += [e for e in events if e[0] > self._published_seq]
        if out:
            self._published_seq = max(self._published_seq, out[-1][0])
        return out

    def _listen(self, ready: threading.Event) -> None:
        raw: psycopg.Connection[Any] | None = None
        try:
            while not self._stop_listening.is_set():
                try:
                    if raw is None or raw.closed:
                        raw = self._raw(readonly=True)
                        raw.execute(f"LISTEN {CHANNEL}")
                        ready.set()
                        self._catch_up(raw)  # what was missed while not listening
                    newest = 0
                    for note in raw.notifies(timeout=0.5, stop_after=64):
                        with contextlib.suppress(ValueError):
                            newest = max(newest, int(note.payload))
                    if newest > self._published_seq:
                        self._catch_up(raw)
                except psycopg.Error as e:
                    # The server went away (or a query failed): try again shortly, from
                    # where we were, on a new connection.
                    log.warning("LISTEN %s: %s; reconnecting", CHANNEL, e)
                    ready.set()
                    if raw is not None:
                        raw.close()
                    raw = None
                    self._stop_listening.wait(1.0)
        finally:
            ready.set()
            if raw is not None:
                raw.close()

    def _catch_up(self, raw: psycopg.Connection[Any]) -> None:
        conn = cast(sqlite3.Connection, PgConnection(raw, self.tables))
        with self._publish_lock:
            newest = _last_seq(conn)
            if newest <= self._published_seq:
                return
            # In chunks, each handed over in order: a long absence costs time, not memory.
            while events := _events_between(conn, self._published_seq, newest):
                self._published_seq = events[-1][0]
                if self._loop is not None:
                    with contextlib.suppress(RuntimeError):  # loop closed during shutdown
                        self._loop.call_soon_threadsafe(self._deliver, [], events)
            self._published_seq = newest

    def _prepare(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as raw:
            row = raw.execute("SHOW fsync").fetchone()
            if row is None or row[0] != "on":
                raise RuntimeError(
                    "the PostgreSQL server runs with fsync off: acknowledged writes"
                    " would not survive a crash"
                )

    def _raw(self, *, readonly: bool) -> psycopg.Connection[Any]:
        raw = psycopg.connect(self.dsn, autocommit=True)
        raw.execute("SET synchronous_commit = on")
        if readonly:
            raw.execute("SET default_transaction_read_only = on")
        return raw

    def _connect_reader(self) -> sqlite3.Connection:
        # Callers are typed against sqlite3.Connection; PgConnection has the part of
        # it they use (execute, executemany, fetchone/fetchall/rowcount, iteration).
        return cast(sqlite3.Connection, PgConnection(self._raw(readonly=True), self.tables))

    def _connect_writer(self) -> sqlite3.Connection:
        return cast(sqlite3.Connection, PgConnection(self._raw(readonly=False), self.tables))

    def _usable(self, conn: sqlite3.Connection) -> bool:
        return not cast(PgConnection, conn).raw.closed

    def _begin(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN")
        conn.execute("SELECT pg_advisory_xact_lock(?)", (WRITE_LOCK,))
        self._group_start_seq = _last_seq(conn)

    def _migrate(self) -> None:
        raw = self._raw(readonly=False)
        conn = PgConnection(raw, read_tables(raw))
        try:
            raw.execute("BEGIN")
            raw.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))
            raw.execute("CREATE TABLE IF NOT EXISTS skyfed_schema (version BIGINT NOT NULL)")
            row = raw.execute("SELECT version FROM skyfed_schema").fetchone()
            version = 0 if row is None else int(row[0])
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"database schema v{version} is newer than this skyfed (v{SCHEMA_VERSION})"
                )
            if 0 < version < _SIGNED_PREV_SCHEMA:
                _refuse_old_commits(cast(sqlite3.Connection, conn))
            for i in range(version, SCHEMA_VERSION):
                shared = PG_STEP_INSTEAD.get(i, _MIGRATIONS[i])
                self._step(conn, shared, PG_MIGRATIONS.get(i + 1, []))
            _backfill(cast(sqlite3.Connection, conn), version, search=False)
            raw.execute("DELETE FROM skyfed_schema")
            raw.execute("INSERT INTO skyfed_schema VALUES (%s)", (SCHEMA_VERSION,))
            raw.execute("COMMIT")
            self.tables.clear()
            self.tables.update(read_tables(raw))
        except BaseException:
            if not raw.closed:
                raw.execute("ROLLBACK")
            raise
        finally:
            raw.close()

    @staticmethod
    def _step(conn: PgConnection, shared: str, extra: list[str]) -> None:
        for sqlite_statement in shared.split(";"):
            if not sqlite_statement.strip():
                continue
            # One at a time: an INSERT OR REPLACE needs the key of a table made above.
            for statement in ddl_to_postgres(sqlite_statement, conn.tables):
                conn.raw.execute(statement, [])
                if statement.lstrip().upper().startswith(("CREATE TABLE", "DROP TABLE")):
                    conn.tables.clear()
                    conn.tables.update(read_tables(conn.raw))
        for statement in extra:
            conn.raw.execute(statement)
