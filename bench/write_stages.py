"""Where a durable write's CPU goes, without HTTP: the node's write path in-process.

    python bench/write_stages.py [--writes 2560] [--clients 32] [--rounds 3]

Builds a :class:`RepoManager` over a :class:`SqliteStorage` in a temporary directory,
makes ``--clients`` accounts, and has each loop one-post writes
(``RepoManager.write``: tree, sign, then the group-committing writer), all
concurrent. Each round prints, per write, the CPU of each thread by name (from
``/proc/self/task``, so SQLite's C code and the fsync syscall count in the writer's
figure), the writer's COMMIT time (wall and CPU, per group), the average group size,
and the WAL pages written per group (the autocheckpoint is held off for this; the
WAL grows by the run's size). With ``--statements`` it also counts the SQL statements
per commit (SQLite's trace hook, which costs time: CPU figures of that run are not
comparable). With ``--pages`` it attributes the round's WAL frames to the table or
index each page belongs to.

This is the part of ``bench/node_writes.py``'s "node CPU per write" that is not
HTTP: the loop's share here is scheduling only. Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node.store.repos import RepoManager
from node.store.sqlite import SqliteStorage
from protocol.keys import SigningKey
from protocol.repo import Write

POST = "app.bsky.feed.post"


def wal_size(db: Path) -> int:
    return Path(f"{db}-wal").stat().st_size


def wal_pages_by_table(db: Path, start: int) -> collections.Counter[str]:
    """Pages the WAL frames after byte ``start`` carry, by the table or index each
    page belongs to (SQLite's dbstat), counted once per frame."""
    raw = Path(f"{db}-wal").read_bytes()
    page = int.from_bytes(raw[8:12], "big")
    pages: list[int] = []
    for off in range(max(start, 32), len(raw) - 24 - page + 1, 24 + page):
        pages.append(int.from_bytes(raw[off : off + 4], "big"))
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    owner = dict(conn.execute("SELECT pageno, name FROM dbstat"))
    conn.close()
    return collections.Counter(owner.get(p, "(free or new)") for p in pages)


def thread_ticks() -> collections.Counter[str]:
    """CPU ticks (user + system) of this process's threads, summed by name without
    the pool's number suffix."""
    out: collections.Counter[str] = collections.Counter()
    for t in threading.enumerate():
        try:
            stat = Path(f"/proc/self/task/{t.native_id}/stat").read_text()
        except (OSError, TypeError):
            continue
        fields = stat.rsplit(")", 1)[1].split()
        out[t.name.rstrip("0123456789").rstrip("_")] += int(fields[11]) + int(fields[12])
    return out


def _shape(sql: str) -> str:
    """A traced statement without its values (the trace expands parameters)."""
    return re.sub(r"'[^']*'|\b\d+\b", "?", sql.split(" VALUES")[0])[:70]


class _TimedConnection:
    """The writer's connection, timing each COMMIT (wall, thread CPU)."""

    def __init__(self, conn: sqlite3.Connection, commits: list[tuple[float, float]]):
        self._conn = conn
        self._commits = commits

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql != "COMMIT":
            return self._conn.execute(sql, *args)
        t, c = time.perf_counter(), time.thread_time()
        cur = self._conn.execute(sql, *args)
        self._commits.append((time.perf_counter() - t, time.thread_time() - c))
        return cur

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


async def run(args: argparse.Namespace) -> None:
    commits: list[tuple[float, float]] = []
    statements: collections.Counter[str] = collections.Counter()
    connect = SqliteStorage._connect_writer

    def connect_writer(self: SqliteStorage) -> sqlite3.Connection:
        conn = connect(self)
        conn.execute("PRAGMA wal_autocheckpoint=0")  # so the WAL's size counts pages
        if args.statements:
            conn.set_trace_callback(lambda s: statements.update([_shape(s)]))
        return _TimedConnection(conn, commits)  # type: ignore[return-value]

    SqliteStorage._connect_writer = connect_writer  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory(prefix="skyfed-stages-") as tmp:
        db = Path(tmp) / "node.sqlite3"
        storage = SqliteStorage(db)
        await storage.open()
        repos = RepoManager(storage, clock_id=1)
        accounts = []
        for i in range(args.clients):
            key = SigningKey.from_seed(bytes([i % 256]) * 32)
            did, _ = await repos.create_account(
                handle=f"stage{i}.skyfed.test",
                email=None,
                password_hash="-",
                signing_key=key,
                rotation_key=key,
                user_rotation_key=None,
                endpoint="http://127.0.0.1",
            )
            accounts.append((did, key))
        per = max(1, args.writes // args.clients)

        async def loop(did: str, key: SigningKey) -> None:
            for j in range(per):
                record = {
                    "$type": POST,
                    "text": f"stage post {j}: the quick brown fox jumps over the dog",
                    "createdAt": "2026-12-02T10:00:00.000Z",
                }
                rkey = repos._next_rev(None)
                await repos.write(did, [Write("create", POST, rkey, record)], key)

        await asyncio.gather(*(loop(did, key) for did, key in accounts))  # warm-up
        tck = os.sysconf("SC_CLK_TCK")
        print(f"{args.clients} accounts, {per * args.clients} one-post writes per round")
        for r in range(args.rounds):
            commits.clear()
            statements.clear()
            groups0 = len(storage.group_sizes)
            wal0 = wal_size(db)
            a, t0 = thread_ticks(), time.perf_counter()
            await asyncio.gather(*(loop(did, key) for did, key in accounts))
            elapsed, b = time.perf_counter() - t0, thread_ticks()
            n = per * args.clients
            groups = storage.group_sizes[groups0:]
            wal_pages = (wal_size(db) - wal0) / (4096 + 24)
            print(f"-- round {r + 1}: {n / elapsed:,.0f} writes/s (load {os.getloadavg()[0]:.1f})")
            total = 0.0
            for name in sorted(b, key=lambda k: a[k] - b[k]):
                cpu = (b[name] - a[name]) / tck
                total += cpu
                if cpu:
                    print(f"   CPU {name:16s} {1e6 * cpu / n:7.0f} µs/write")
            print(f"   CPU {'total':16s} {1e6 * total / n:7.0f} µs/write")
            if groups and commits:
                wall = [w for w, _ in commits]
                cpu_c = [c for _, c in commits]
                size = statistics.mean(groups)
                print(
                    f"   groups: {len(groups)}, {size:.1f} writes each;"
                    f" {wal_pages / len(groups):.0f} WAL pages per group"
                    f" ({wal_pages / n:.1f} per write)"
                )
                print(
                    f"   COMMIT per group: wall p50 {1e3 * statistics.median(wall):.2f} ms,"
                    f" CPU mean {1e3 * statistics.mean(cpu_c):.2f} ms"
                    f" ({1e6 * statistics.mean(cpu_c) / size:.0f} µs/write)"
                )
            if args.pages:
                by_table = wal_pages_by_table(db, wal0)
                print("   WAL pages per write, by table or index:")
                for name, count in by_table.most_common(args.pages):
                    print(f"     {count / n:5.2f}  {name}")
            if statements:
                print(f"   SQL statements per commit: {sum(statements.values()) / n:.1f}")
                for text, count in statements.most_common(args.statements):
                    print(f"     {count / n:5.2f}  {text}")
        await storage.close()
    SqliteStorage._connect_writer = connect  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=2560, help="writes per round")
    parser.add_argument("--clients", type=int, default=32, help="accounts writing at once")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds")
    parser.add_argument(
        "--statements", type=int, default=0, help="count SQL statements; show the top N"
    )
    parser.add_argument(
        "--pages", type=int, default=0, help="WAL pages per write by table; show the top N"
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
