"""Read views as JSON bytes, rendered in the node's process or in a worker process.

A view (node/appview/views.py, notifications.py) is mostly Python: decoding records,
building dicts, encoding JSON. In the node's process every concurrent reader queues
on one interpreter, so under concurrency :class:`Renderer` sends a page to a worker
process (node/workers.py), which opens its own read-only connection to the same
SQLite file, runs the same page function, and hands back the encoded body; the node
only parses HTTP, authenticates and copies bytes.

When it offloads, and when not:

* **One read at a time stays inline.** A read when no other read of ours is in
  flight is served on the node's reader threads: no pipe, no pickling, and one
  client keeps its latency. A read that overlaps another goes to a worker, so under
  concurrency the node's interpreter is left to HTTP (an inline render would hold
  it, and every answer coming back from a worker would wait for it).
* **A cold pool never makes a request wait.** The first time reads overlap and the
  workers are not up (never started, stopped when idle, replaced after a crash), the
  renderer starts them in the background and serves inline until every worker has
  imported the views and opened its connection.
* **Same answers.** Views read only the database and the node's URL (passed in):
  blocks, mutes, takedowns, list and thread mutes, gates, read state are all tables,
  so a worker's answer equals the inline one. Labels a reader asks for
  (Accept-Labelers) are applied afterwards, in the node, to the bytes either way
  (``labels_middleware``, node/accounts/moderation.py). A worker's connection is in
  autocommit mode: every statement reads the newest committed state (WAL), never a
  snapshot held from an earlier request, so a client reads its own acknowledged
  writes.
* **Bounded.** The pool bounds processes and pending tasks; per-process state here
  is one connection and the views' own bounded record caches.

Refused: storage another process cannot open (PostgreSQL: ``shared_path`` is None)
is always read inline, as is everything when the node has no worker pool
(``workers = 0``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec

import orjson

from .views import _Read

if TYPE_CHECKING:
    from ..store.sqlite import SqliteStorage
    from ..workers import WorkerPool

__all__ = ["Renderer", "open_reader", "prepare", "render"]

log = logging.getLogger(__name__)

P = ParamSpec("P")
Page = Callable[Concatenate[_Read, P], Any]

# -- in the worker process ---------------------------------------------------------
#: This worker's read connection per database file (one: a node has one database).
#: Per-process state, made on first use, as node/workers.py asks.
_readers: dict[str, sqlite3.Connection] = {}


def open_reader(path: str) -> sqlite3.Connection:
    """This process's read-only connection to the database at ``path``."""
    conn = _readers.get(path)
    if conn is None:
        uri = Path(path).resolve().as_uri() + "?mode=ro"
        # Autocommit (isolation_level None): no transaction outlives a statement, so
        # each query sees every write committed before it.
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA query_only=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        _readers[path] = conn
    return conn


def prepare(path: str) -> None:
    """Import the views and open the connection (run once in each new worker)."""
    open_reader(path).execute("SELECT 1").fetchone()


def render(
    path: str,
    page: Callable[..., Any],
    viewer: str | None,
    base: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> bytes:
    """``page(read, *args, **kwargs)`` over this process's connection, as the JSON
    body to send."""
    return orjson.dumps(page(_Read(open_reader(path), viewer, base), *args, **kwargs))


# -- in the node's process -----------------------------------------------------------
class Renderer:
    """Renders pages as JSON bytes inline or in ``workers`` (see the module doc).

    ``inline_limit``: a read is served on the node's own reader threads only while
    fewer reads than this are in flight, inline or in workers (default 1: a read
    when no other is in flight stays inline; any overlap goes to the workers)."""

    def __init__(
        self,
        storage: SqliteStorage,
        workers: WorkerPool | None,
        base_url: Callable[[], str] = lambda: "",
        *,
        inline_limit: int = 1,
    ):
        self.storage = storage
        self.workers = workers
        self.base_url = base_url
        self.inline_limit = inline_limit
        #: Reads in flight now (inline or in workers).
        self.in_flight = 0
        #: Pages served inline and in workers (for tests and metrics).
        self.served_inline = 0
        self.served_by_workers = 0
        self._warming: asyncio.Task[bool] | None = None
        #: ``workers.starts`` when every worker had opened its connection.
        self._warm_start = -1

    async def json(
        self, page: Page[P], viewer: str | None, *args: P.args, **kwargs: P.kwargs
    ) -> bytes:
        """``page(read, *args)`` for ``viewer`` as JSON bytes."""
        base = self.base_url()
        path = self.storage.shared_path
        self.in_flight += 1
        try:
            if self.in_flight > self.inline_limit and path is not None and self._workers_ready():
                assert self.workers is not None
                self.served_by_workers += 1
                return await self.workers.run(render, path, page, viewer, base, args, kwargs)

            def run(conn: sqlite3.Connection) -> bytes:
                return orjson.dumps(page(_Read(conn, viewer, base), *args, **kwargs))

            self.served_inline += 1
            return await self.storage.read(run)
        finally:
            self.in_flight -= 1

    @property
    def ready(self) -> bool:
        """Whether reads may go to the workers now (every one has its connection)."""
        pool = self.workers
        return pool is not None and pool.running and self._warm_start == pool.starts

    def _workers_ready(self) -> bool:
        """:attr:`ready`; if not, start the workers in the background."""
        if self.ready:
            return True
        if self.workers is not None and (self._warming is None or self._warming.done()):
            self._warming = asyncio.create_task(self.warm())
        return False

    async def warm(self) -> bool:
        """Start every worker and open its connection; False if there are none (no
        pool, storage another process cannot read) or they would not start."""
        pool = self.workers
        path = self.storage.shared_path
        if pool is None or path is None:
            return False
        started = time.monotonic()
        try:
            await asyncio.gather(*(pool.run(prepare, path) for _ in range(pool.size)))
        except Exception:
            # Not fatal: reads stay inline, and the next overlap tries again.
            log.exception("render: the worker processes did not start")
            return False
        self._warm_start = pool.starts
        log.info(
            "render: %d worker processes ready in %.2f s", pool.size, time.monotonic() - started
        )
        return True

    async def close(self) -> None:
        """Stop a warm-up still running (before the pool closes)."""
        task, self._warming = self._warming, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
