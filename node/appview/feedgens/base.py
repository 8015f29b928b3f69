"""What a feed generator is, and the narrow read-only view of the node it reads through.

A node can host feed generators (docs/feed-generators.md). Each one is an object
with a ``name`` (the record key of the feed's ``app.bsky.feed.generator`` record),
a ``display_name`` and ``description``, and one coroutine::

    async def skeleton(self, ctx: FeedContext, viewer: str | None,
                       limit: int, cursor: str | None) -> Skeleton

that answers which posts the feed shows, newest page first, as a
:class:`protocol.feedgen.Skeleton` (post AT-URIs and a cursor). The generator never
sees the database: :class:`FeedContext` is all it reads, every method bounded in
rows (:data:`MAX_ROWS`) and run on a storage reader thread; one skeleton call may
read :data:`MAX_READS_PER_CALL` times, :data:`MAX_PARALLEL_READS` at once. It cannot
write, and it never sees private data (sessions, passwords, mutes of other accounts).
"""

from __future__ import annotations

import asyncio
import datetime
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from protocol.feedgen import Skeleton, SkeletonError

from ..views import _record_json

__all__ = [
    "MAX_AUTHORS",
    "MAX_PARALLEL_READS",
    "MAX_READS_PER_CALL",
    "MAX_ROWS",
    "FeedContext",
    "FeedGenerator",
    "PostRef",
]

#: Most rows one FeedContext call answers.
MAX_ROWS: Final = 1000
#: Most authors one FeedContext call takes (more are ignored, in the order given).
MAX_AUTHORS: Final = 5000
#: Reads one skeleton call may make, and how many may wait on reader threads at once.
MAX_READS_PER_CALL: Final = 64
MAX_PARALLEL_READS: Final = 2

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PostRef:
    """A post as a generator sees it: where it is and when, not what it says."""

    uri: str
    author: str
    sort_at: str
    reply_parent: str | None
    reply_root: str | None

    @property
    def is_reply(self) -> bool:
        return self.reply_parent is not None


class FeedGenerator(ABC):
    """A feed this node answers ``getFeedSkeleton`` for. Subclass it (or match its
    shape: the host checks ``name``, ``display_name`` and ``skeleton``)."""

    #: The feed's record key: 1 to 15 of a-z, 0-9 and '-'.
    name: str
    display_name: str
    description: str = ""

    @abstractmethod
    async def skeleton(
        self, ctx: FeedContext, viewer: str | None, limit: int, cursor: str | None
    ) -> Skeleton:
        """Up to ``limit`` posts after ``cursor`` (None: from the newest)."""


Reader = Callable[[Callable[[sqlite3.Connection], Any]], Any]


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _bound(limit: int) -> int:
    return max(0, min(int(limit), MAX_ROWS))


def _authors(dids: Sequence[str]) -> list[str]:
    return [d for d in list(dict.fromkeys(dids))[:MAX_AUTHORS] if isinstance(d, str)]


class FeedContext:
    """The read-only interface a generator reads the node through.

    Times are atproto datetimes in UTC with milliseconds (``2026-01-02T03:04:05.678Z``),
    so they compare as strings; ``before``/``since`` bound ``sort_at`` (when a post
    was made, or indexed if it claims a later time)."""

    def __init__(
        self,
        read: Reader,
        clock: Callable[[], float],
        *,
        max_reads: int | None = None,
        parallel: int = MAX_PARALLEL_READS,
    ):
        self._read = read
        self._clock = clock
        self._max_reads = max_reads
        self._reads = 0
        self._parallel = parallel
        self._gate: asyncio.Semaphore | None = None

    def for_call(self, max_reads: int = MAX_READS_PER_CALL) -> FeedContext:
        """A context for one skeleton call: at most ``max_reads`` reads, and at most
        :data:`MAX_PARALLEL_READS` of them at once, so one call (however it gathers)
        cannot occupy the node's reader threads."""
        return FeedContext(self._read, self._clock, max_reads=max_reads, parallel=self._parallel)

    def now(self) -> str:
        """The node's current time, as a datetime string."""
        t = datetime.datetime.fromtimestamp(self._clock(), datetime.UTC)
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"

    def ago(self, seconds: float) -> str:
        """The time ``seconds`` before now, as a datetime string."""
        t = datetime.datetime.fromtimestamp(self._clock() - seconds, datetime.UTC)
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"

    async def _q(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._max_reads is not None:
            self._reads += 1
            if self._reads > self._max_reads:
                raise SkeletonError(f"a feed may read at most {self._max_reads} times per call")
        if self._gate is None:
            # Made on first use, in the loop the call runs on (a plugin has its own).
            self._gate = asyncio.Semaphore(self._parallel)
        async with self._gate:
            result: T = await self._read(fn)
        return result

    async def follows(self, did: str, limit: int = MAX_ROWS) -> list[str]:
        """Accounts ``did`` follows."""
        n = _bound(limit)
        return await self._q(
            lambda c: [
                r[0]
                for r in c.execute(
                    "SELECT DISTINCT subject FROM follows WHERE did = ? LIMIT ?", (did, n)
                )
            ]
        )

    async def followers(self, did: str, limit: int = MAX_ROWS) -> list[str]:
        """Accounts that follow ``did``."""
        n = _bound(limit)
        return await self._q(
            lambda c: [
                r[0]
                for r in c.execute(
                    "SELECT DISTINCT did FROM follows WHERE subject = ? LIMIT ?", (did, n)
                )
            ]
        )

    async def recent_posts(
        self,
        authors: Sequence[str] | None,
        *,
        limit: int,
        before: str | None = None,
        since: str | None = None,
        replies: bool = True,
    ) -> list[PostRef]:
        """Posts by ``authors`` (None: anyone), newest first, with ``sort_at`` before
        ``before`` and not before ``since``."""
        n = _bound(limit)
        hi = before or "\uffff"
        lo = since or ""
        extra = "" if replies else " AND reply_parent IS NULL"
        cols = "SELECT uri, did, sort_at, reply_parent, reply_root FROM posts"

        def q(c: sqlite3.Connection) -> list[PostRef]:
            if authors is None:
                rows = c.execute(
                    f"{cols} WHERE sort_at < ? AND sort_at >= ?{extra}"
                    " ORDER BY sort_at DESC LIMIT ?",
                    (hi, lo, n),
                ).fetchall()
            else:
                rows = []
                chosen = _authors(authors)
                for i in range(0, len(chosen), 500):
                    chunk = chosen[i : i + 500]
                    rows += c.execute(
                        f"{cols} WHERE did IN ({_marks(len(chunk))})"
                        f" AND sort_at < ? AND sort_at >= ?{extra}"
                        " ORDER BY sort_at DESC LIMIT ?",
                        [*chunk, hi, lo, n],
                    ).fetchall()
                rows.sort(key=lambda r: (r[2], r[0]), reverse=True)
                rows = rows[:n]
            return [PostRef(*r) for r in rows]

        return await self._q(q)

    async def post_counts(self, authors: Sequence[str], since: str | None = None) -> dict[str, int]:
        """How many posts each of ``authors`` made since ``since`` (absent: 0)."""
        lo = since or ""

        def q(c: sqlite3.Connection) -> dict[str, int]:
            out = dict.fromkeys(_authors(authors), 0)
            chosen = list(out)
            for i in range(0, len(chosen), 500):
                chunk = chosen[i : i + 500]
                for did, count in c.execute(
                    f"SELECT did, COUNT(*) FROM posts WHERE did IN ({_marks(len(chunk))})"
                    " AND sort_at >= ? GROUP BY did",
                    [*chunk, lo],
                ):
                    out[did] = count
            return out

        return await self._q(q)

    async def like_counts(self, uris: Sequence[str]) -> dict[str, int]:
        """Likes of each post (every like this node holds)."""
        wanted = list(dict.fromkeys(uris))[:MAX_ROWS]

        def q(c: sqlite3.Connection) -> dict[str, int]:
            out = dict.fromkeys(wanted, 0)
            if wanted:
                for uri, likes in c.execute(
                    f"SELECT uri, likes FROM post_stats WHERE uri IN ({_marks(len(wanted))})",
                    wanted,
                ):
                    out[uri] = likes
            return out

        return await self._q(q)

    async def texts(self, uris: Sequence[str]) -> dict[str, str]:
        """The text of each post held (at most :data:`MAX_ROWS` of them)."""
        wanted = list(dict.fromkeys(uris))[:MAX_ROWS]

        def q(c: sqlite3.Connection) -> dict[str, str]:
            out: dict[str, str] = {}
            for i in range(0, len(wanted), 500):
                chunk = wanted[i : i + 500]
                for uri, cid, data in c.execute(
                    "SELECT p.uri, p.cid, b.data FROM posts p JOIN blocks b ON b.cid = p.cid"
                    f" WHERE p.uri IN ({_marks(len(chunk))})",
                    chunk,
                ):
                    record = _record_json(cid, data)
                    text = record.get("text") if record is not None else None
                    if isinstance(text, str):
                        out[uri] = text
            return out

        return await self._q(q)

    async def liked_by(
        self,
        dids: Sequence[str],
        *,
        since: str | None = None,
        limit: int = MAX_ROWS,
        per_account: int = 20,
    ) -> list[tuple[str, int]]:
        """Posts liked by any of ``dids`` since ``since`` (by when the like was
        indexed), with how many of them liked it, most liked first. Only each
        account's newest ``per_account`` likes (at most 100) count, so the work is
        bounded by the accounts asked about, not by how much they like."""
        n = _bound(limit)
        lo = since or ""
        each = max(1, min(int(per_account), 100))

        def q(c: sqlite3.Connection) -> list[tuple[str, int]]:
            counts: dict[str, int] = {}
            for did in _authors(dids):
                liked = {
                    r[0]
                    for r in c.execute(
                        "SELECT subject FROM likes WHERE did = ? AND indexed_at >= ?"
                        " ORDER BY indexed_at DESC LIMIT ?",
                        (did, lo, each),
                    )
                }
                for subject in liked:
                    counts[subject] = counts.get(subject, 0) + 1
            ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
            return [(uri, count) for uri, count in ranked if "/app.bsky.feed.post/" in uri][:n]

        return await self._q(q)
