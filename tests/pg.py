"""A throwaway PostgreSQL server for the tests, from the machine's packages.

``initdb`` in a temporary directory, the server listening on a Unix socket in that
directory only (``listen_addresses = ''``: no TCP port), ``fsync = on`` (the crash
test depends on it), trust authentication for the one local user. Stopped and
removed when the session ends. scripts/ensure-postgresql.sh installs the server
binaries where they are missing.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

__all__ = ["PgServer", "find_bindir", "start_server"]


def find_bindir() -> Path:
    """The directory with initdb and pg_ctl (PG_BINDIR, pg_config, or Debian's path)."""
    if env := os.environ.get("PG_BINDIR"):
        return Path(env)
    if shutil.which("initdb"):
        return Path(str(shutil.which("initdb"))).parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)
    if not candidates:
        raise RuntimeError("no PostgreSQL server binaries: run scripts/ensure-postgresql.sh")
    return candidates[0].parent


@dataclass
class PgServer:
    socket_dir: Path
    user: str
    #: What restarts it: the server binaries, its data dir, the runuser prefix.
    bindir: Path = Path()
    data: Path = Path()
    run_as: list[str] = field(default_factory=list)
    _made: set[str] = field(default_factory=set)

    def _pg_ctl(self, *args: str) -> list[str]:
        return [*self.run_as, str(self.bindir / "pg_ctl"), "-D", str(self.data), *args]

    def start(self) -> None:
        options = (
            f"-k {self.socket_dir} -c listen_addresses='' -c fsync=on"
            " -c synchronous_commit=on -c max_connections=300 -c shared_buffers=32MB"
        )
        log = str(self.socket_dir / "log")
        subprocess.run(
            self._pg_ctl("-o", options, "-l", log, "-w", "-t", "60", "start"),
            check=True,
            capture_output=True,
            timeout=90,
        )

    def stop(self) -> None:
        subprocess.run(
            self._pg_ctl("-m", "immediate", "-w", "stop"), capture_output=True, timeout=60
        )

    def kill_9(self) -> None:
        """SIGKILL the postmaster and every server process: a power cut, as far as
        the server can tell (what it acknowledged must be in its fsynced WAL)."""
        import psutil

        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        psutil.wait_procs(procs, timeout=30)

    def url(self, dbname: str) -> str:
        return f"postgresql:///{dbname}?host={self.socket_dir}&user={self.user}"

    def database_for(self, key: str) -> str:
        """The URL of a database of its own for ``key`` (made empty the first time)."""
        name = "t_" + hashlib.sha256(key.encode()).hexdigest()[:20]
        if name not in self._made:
            with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
                conn.execute(f'CREATE DATABASE "{name}"')
            self._made.add(name)
        return self.url(name)


@contextlib.contextmanager
def start_server() -> Iterator[PgServer]:
    bindir = find_bindir()
    # Short: a Unix socket path must fit in 107 bytes.
    base = Path(tempfile.mkdtemp(prefix="skyfed-pg-"))
    data = base / "data"
    user = getpass.getuser()
    run_as: list[str] = []
    if os.geteuid() == 0:
        # The server refuses to run as root: hand it to Debian's postgres user.
        import pwd

        owner = pwd.getpwnam("postgres")
        os.chown(base, owner.pw_uid, owner.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
        user = "postgres"
    try:
        subprocess.run(
            [
                *run_as,
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                user,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",  # initdb's own files only; the server below fsyncs
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        server = PgServer(base, user, bindir, data, run_as)
        server.start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


class RawDb:
    """Schema surgery on a node's database, whichever backend holds it (the migration
    tests turn a database back into an older version this way)."""

    def __init__(self, sqlite_path: Path | None = None, url: str | None = None):
        self.sqlite_path = sqlite_path
        self.url = url

    def _run(self, sql: str) -> list[tuple[object, ...]]:
        if self.url is not None:
            with psycopg.connect(self.url, autocommit=True) as conn:
                cur = conn.execute(sql)
                return list(cur.fetchall()) if cur.description is not None else []
        import sqlite3

        assert self.sqlite_path is not None
        with contextlib.closing(sqlite3.connect(self.sqlite_path)) as conn:
            rows = conn.execute(sql).fetchall()
            conn.commit()
            return rows

    def tables(self) -> set[str]:
        if self.url is not None:
            sql = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            return {str(r[0]) for r in self._run(sql)} - {"skyfed_schema"}
        return {str(r[0]) for r in self._run("SELECT name FROM sqlite_master WHERE type='table'")}

    def drop(self, table: str) -> None:
        # IF EXISTS: dropping an SQLite FTS5 table drops its shadow tables with it.
        self._run(f"DROP TABLE IF EXISTS {table}")

    def version(self) -> int:
        if self.url is not None:
            return int(str(self._run("SELECT version FROM skyfed_schema")[0][0]))
        return int(str(self._run("PRAGMA user_version")[0][0]))

    def set_version(self, version: int) -> None:
        if self.url is not None:
            self._run(f"UPDATE skyfed_schema SET version = {int(version)}")
        else:
            self._run(f"PRAGMA user_version = {int(version)}")


@contextlib.contextmanager
def bench_storage(kind: str) -> Iterator[str]:
    """A node's ``storage`` setting for a benchmark's ``--storage``: ``sqlite``, a
    ``postgresql://`` URL as given, or ``postgresql``: a throwaway server for the run."""
    if kind == "postgresql":
        with start_server() as server:
            yield server.database_for("bench")
    elif kind == "sqlite" or kind.startswith(("postgresql://", "postgres://")):
        yield kind
    else:
        raise ValueError(f"--storage: sqlite, postgresql or a postgresql:// URL, not {kind!r}")
