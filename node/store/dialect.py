"""SQL written for SQLite, run on PostgreSQL: the few rewrites between the two.

Every query in the node is written once, in the SQLite dialect the project started
with, and passed to ``conn.execute``. On PostgreSQL, :class:`PgConnection` stands in
for the ``sqlite3.Connection`` and rewrites each statement once (cached) with
:func:`to_postgres`:

* ``?`` placeholders become ``%s`` (and a literal ``%`` becomes ``%%``);
* ``INSERT OR IGNORE`` becomes ``INSERT ... ON CONFLICT DO NOTHING``;
* ``INSERT OR REPLACE INTO t`` becomes ``INSERT ... ON CONFLICT (primary key) DO
  UPDATE SET`` every other column (the key is read from the database's catalog);
* ``x IS NOT ?`` becomes ``x IS DISTINCT FROM %s``; ``BEGIN IMMEDIATE``, ``BEGIN``;
* an empty list (a query built for zero values, which SQLite takes): ``x IN ()``
  becomes ``x = ANY('{}')`` (false) and ``x NOT IN ()`` becomes ``x <> ALL('{}')``
  (true), as in SQLite; the empty array takes ``x``'s type.

Schema steps go through :func:`ddl_to_postgres`: ``BLOB`` is ``BYTEA``, ``INTEGER``
is ``BIGINT`` (SQLite integers are 64-bit), ``REAL`` is ``DOUBLE PRECISION`` (so is
SQLite's), ``TEXT`` sorts bytewise (``COLLATE "C"``,
as SQLite compares), ``INTEGER PRIMARY KEY`` is an identity column, ``WITHOUT ROWID``
goes, and a table SQLite gives a hidden ``rowid`` gets a real one (last, so
``INSERT ... VALUES`` of the declared columns still fits).

What it refuses: ``PRAGMA`` (SQLite-only: branch on :attr:`PgConnection.dialect`),
and anything it does not know (FTS5, ``json_*``, ``strftime``) is passed through
unchanged and fails on PostgreSQL, loudly. docs/postgresql.md says how a feature that
needs such a thing branches.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

__all__ = ["PgConnection", "TableInfo", "ddl_to_postgres", "to_postgres"]

#: Statements translated and kept per connection, at most (the node has a few hundred).
_CACHE_MAX = 2048

#: table -> (columns in order, primary-key columns)
TableInfo = dict[str, tuple[list[str], list[str]]]

_OR_IGNORE = re.compile(r"^\s*INSERT\s+OR\s+IGNORE\s+INTO\s+", re.IGNORECASE)
_OR_REPLACE = re.compile(
    r"^\s*INSERT\s+OR\s+REPLACE\s+INTO\s+(\w+)\s*(\(([^)]*)\))?", re.IGNORECASE
)
_IS_NOT_PARAM = re.compile(r"\bIS\s+NOT\s+\?", re.IGNORECASE)
_EMPTY_NOT_IN = re.compile(r"\bNOT\s+IN\s*\(\s*\)", re.IGNORECASE)
_EMPTY_IN = re.compile(r"\bIN\s*\(\s*\)", re.IGNORECASE)
_BEGIN = re.compile(r"^\s*BEGIN\s+(IMMEDIATE|EXCLUSIVE|DEFERRED)\s*$", re.IGNORECASE)


def _placeholders(sql: str) -> str:
    """``?`` -> ``%s`` and ``%`` -> ``%%``, outside quoted strings and names."""
    out: list[str] = []
    quote = ""
    for ch in sql:
        if quote:
            out.append("%%" if ch == "%" else ch)
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
            out.append(ch)
        elif ch == "?":
            out.append("%s")
        elif ch == "%":
            out.append("%%")
        else:
            out.append(ch)
    return "".join(out)


def to_postgres(sql: str, tables: TableInfo) -> str:
    """One SQLite statement in PostgreSQL's dialect (see the module docstring)."""
    if sql.lstrip().upper().startswith("PRAGMA"):
        raise NotImplementedError(f"PRAGMA is SQLite-only: {sql.strip()[:60]}")
    if _BEGIN.match(sql):
        return "BEGIN"
    sql = _IS_NOT_PARAM.sub("IS DISTINCT FROM ?", sql)
    sql = _EMPTY_NOT_IN.sub("<> ALL('{}')", sql)
    sql = _EMPTY_IN.sub("= ANY('{}')", sql)
    body = sql.rstrip().rstrip(";")
    if m := _OR_IGNORE.match(body):
        body = "INSERT INTO " + body[m.end() :] + " ON CONFLICT DO NOTHING"
    elif m := _OR_REPLACE.match(body):
        table = m.group(1)
        if table not in tables:
            raise NotImplementedError(f"INSERT OR REPLACE into unknown table {table!r}")
        columns, key = tables[table]
        named = [c.strip() for c in m.group(3).split(",")] if m.group(3) else columns
        if not key:
            raise NotImplementedError(f"INSERT OR REPLACE into {table!r}, which has no key")
        rest = [f"{c} = EXCLUDED.{c}" for c in named if c not in key and c != "rowid"]
        if "rowid" in columns:
            # SQLite's REPLACE deletes and re-inserts: the row takes a new rowid.
            rest.append("rowid = DEFAULT")
        action = "DO UPDATE SET " + ", ".join(rest) if rest else "DO NOTHING"
        body = "INSERT INTO " + body[m.start(1) :] + f" ON CONFLICT ({', '.join(key)}) {action}"
    return _placeholders(body)


_CREATE_TABLE = re.compile(
    r"CREATE\s+TABLE\s+(IF\s+NOT\s+EXISTS\s+)?(\w+)\s*\((.*)\)\s*(WITHOUT\s+ROWID)?\s*$",
    re.IGNORECASE | re.DOTALL,
)


def _split_statements(script: str) -> Iterator[str]:
    for statement in script.split(";"):
        if statement.strip():
            yield statement.strip()


def ddl_to_postgres(script: str, tables: TableInfo) -> list[str]:
    """A migration step (``;``-separated SQLite statements) as PostgreSQL statements."""
    out: list[str] = []
    for statement in _split_statements(script):
        m = _CREATE_TABLE.match(statement)
        if m is None:
            out.append(to_postgres(statement, tables))
            continue
        body = m.group(3)
        has_alias = re.search(r"\bINTEGER\s+PRIMARY\s+KEY\b", body, re.IGNORECASE)
        body = re.sub(
            r"\bINTEGER\s+PRIMARY\s+KEY\b",
            "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
            body,
            flags=re.IGNORECASE,
        )
        body = re.sub(r"\bINTEGER\b", "BIGINT", body, flags=re.IGNORECASE)
        body = re.sub(r"\bBLOB\b", "BYTEA", body, flags=re.IGNORECASE)
        # SQLite's REAL is 8 bytes; PostgreSQL's is 4 (a Unix time to 128 s).
        body = re.sub(r"\bREAL\b", "DOUBLE PRECISION", body, flags=re.IGNORECASE)
        body = re.sub(r"\bTEXT\b", 'TEXT COLLATE "C"', body, flags=re.IGNORECASE)
        if m.group(4) is None and not has_alias:
            # SQLite's hidden rowid, made real: some queries page by it.
            body = body.rstrip() + ",\n    rowid BIGINT GENERATED BY DEFAULT AS IDENTITY UNIQUE"
        out.append(f"CREATE TABLE {m.group(1) or ''}{m.group(2)} ({body})")
    return out


class _Cursor:
    """What callers use of a ``sqlite3.Cursor``, over a psycopg cursor."""

    __slots__ = ("_cur",)

    def __init__(self, cur: Any):
        self._cur = cur

    @property
    def rowcount(self) -> int:
        return int(self._cur.rowcount)

    def fetchone(self) -> Any:
        return self._cur.fetchone() if self._cur.description is not None else None

    def fetchall(self) -> list[Any]:
        return list(self._cur.fetchall()) if self._cur.description is not None else []

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


def _params(params: Sequence[Any]) -> list[Any]:
    """Parameters as SQLite would take them: a bool is the integer it is (PostgreSQL
    would type it boolean), and a NUL in a string, which SQLite stores and PostgreSQL's
    text refuses (an error, so a peer's record with one could never be indexed here),
    becomes U+FFFD, in stored values and lookups alike."""
    out: list[Any] = []
    for p in params:
        if isinstance(p, bool):
            p = int(p)
        elif isinstance(p, str) and "\x00" in p:
            p = p.replace("\x00", "\ufffd")
        out.append(p)
    return out


class PgConnection:
    """A psycopg connection (autocommit: transactions are explicit, as on SQLite)
    that takes the SQLite-dialect statements the node's code passes to ``execute``."""

    dialect = "postgresql"

    def __init__(self, conn: Any, tables: TableInfo):
        self.raw = conn
        self.tables = tables
        self._cache: dict[str, str] = {}

    def _sql(self, sql: str) -> str:
        out = self._cache.get(sql)
        if out is None:
            out = to_postgres(sql, self.tables)
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[sql] = out
        return out

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Cursor:
        cur = self.raw.cursor()
        cur.execute(self._sql(sql), _params(params))
        return _Cursor(cur)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> _Cursor:
        cur = self.raw.cursor()
        batch = [_params(r) for r in rows]
        if batch:
            cur.executemany(self._sql(sql), batch)
        return _Cursor(cur)

    def close(self) -> None:
        self.raw.close()


def read_tables(conn: Any) -> TableInfo:
    """Columns and primary key of every table in the current schema."""
    tables: TableInfo = {}
    for name, column in conn.execute(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"
    ).fetchall():
        tables.setdefault(name, ([], []))[0].append(column)
    for name, column in conn.execute(
        "SELECT tc.table_name, k.column_name FROM information_schema.table_constraints tc"
        " JOIN information_schema.key_column_usage k ON k.constraint_name = tc.constraint_name"
        " AND k.table_schema = tc.table_schema"
        " WHERE tc.constraint_type = 'PRIMARY KEY' AND tc.table_schema = current_schema()"
        " ORDER BY tc.table_name, k.ordinal_position"
    ).fetchall():
        if name in tables:
            tables[name][1].append(column)
    return tables
