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

import sqlite3
from typing import Any, Final, cast

import psycopg

from ..appview.index import rebuild_feeds
from .dialect import PgConnection, TableInfo, ddl_to_postgres, read_tables
from .sqlite import (
    _MIGRATIONS,
    _SIGNED_PREV_SCHEMA,
    SCHEMA_VERSION,
    SqliteStorage,
    _refuse_old_commits,
    _reindex,
)

__all__ = ["MIGRATE_LOCK", "PG_MIGRATIONS", "WRITE_LOCK", "PostgresStorage"]

#: Advisory lock keys (any bigint; these spell "skyfedW" / "skyfedM").
WRITE_LOCK: Final = 0x736B79666564_57
MIGRATE_LOCK: Final = 0x736B79666564_4D

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
}


class PostgresStorage(SqliteStorage):
    """PostgreSQL through psycopg 3; one group-committing writer thread, reader pool."""

    _db_errors = (psycopg.Error,)
    _thread_prefix = "pg"

    def __init__(self, dsn: str, *, readers: int = 4):
        super().__init__("", readers=readers)
        self.dsn = dsn
        self.tables: TableInfo = {}

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

    def _begin(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN")
        conn.execute("SELECT pg_advisory_xact_lock(?)", (WRITE_LOCK,))

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
                self._step(conn, _MIGRATIONS[i], PG_MIGRATIONS.get(i + 1, []))
            if 0 < version < 2:
                _reindex(cast(sqlite3.Connection, conn))
            if 0 < version < 3:
                rebuild_feeds(cast(sqlite3.Connection, conn))
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
