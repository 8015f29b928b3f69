"""More views: an actor's likes, a post's quotes, suggested accounts, and feeds.

Shapes follow the app.bsky lexicons: ``getActorLikes`` and ``getFeed`` answer
FeedViewPosts, ``getQuotes`` PostViews, ``getSuggestions`` and
``getSuggestedFollowsByActor`` ProfileViews, ``getFeedGenerator(s)`` GeneratorViews
(``app.bsky.feed.defs#generatorView``). Every view is built with the same reader as
node/appview/views.py, so blocks (either way), the viewer's mutes and this node's
takedowns hide here exactly as they do in timelines; labels are applied to the
answer by the same middleware (node/accounts/moderation.py, VIEW_METHODS).

Refused: ``getActorLikes`` of anyone but the viewer (Bluesky shows likes only to
the account that made them), cursors that are not what this node handed out, and
pages past :data:`MAX_SUGGESTION_OFFSET` suggestions.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from protocol.cid import CID
from protocol.errors import RemoteProtocolError
from protocol.feedgen import Skeleton

from ..store.sqlite import SqliteStorage
from . import media
from .views import ProfileNotFound, _cursor, _marks, _Read, _record_json

__all__ = ["GENERATOR_VIEW", "MAX_SUGGESTION_OFFSET", "FeedViews", "UnknownFeed"]

GENERATOR_VIEW: Final = "app.bsky.feed.defs#generatorView"
REASON_PIN: Final = "app.bsky.feed.defs#reasonPin"
#: Deepest page of suggestions, counted in accounts.
MAX_SUGGESTION_OFFSET: Final = 500
#: Active accounts kept for suggestions (after the ones from the reader's circle),
#: and how long that list is reused, in seconds.
ACTIVE_KEEP: Final = 2000
ACTIVE_TTL: Final = 300.0
#: Accounts whose follows count as votes for a suggestion, at most, and the follows
#: of each that count.
_SUGGEST_FROM: Final = 100
_VOTES_EACH: Final = 200


class UnknownFeed(RemoteProtocolError):
    error = "UnknownFeed"


def _offset(cursor: str | None) -> int:
    if not cursor:
        return 0
    if not cursor.isdigit() or len(cursor) > 4:
        raise RemoteProtocolError("malformed cursor")
    return int(cursor)


class FeedViews:
    """The views of this module (each runs one read on a reader thread)."""

    def __init__(self, storage: SqliteStorage):
        self.storage = storage
        #: This node's URL (set by the wiring once it is known), for media URLs.
        self.base_url: Callable[[], str] = lambda: ""
        self._active: tuple[float, list[str]] | None = None

    async def _run(self, viewer: str | None, fn: Callable[[_Read], Any]) -> Any:
        base = self.base_url()
        return await self.storage.read(lambda conn: fn(_Read(conn, viewer, base)))

    # -- likes and quotes ----------------------------------------------------------
    async def actor_likes(
        self, actor: str, viewer: str, limit: int, cursor: str | None
    ) -> dict[str, Any]:
        at, after = _cursor(cursor)

        def q(r: _Read) -> dict[str, Any]:
            did = r.resolve(actor)
            if did != viewer:
                # As Bluesky's AppView: likes are the liker's own business.
                raise RemoteProtocolError("Profile not found")
            rows = r.conn.execute(
                "SELECT subject, indexed_at, uri FROM likes WHERE did = ?"
                " AND (indexed_at, uri) < (?, ?) ORDER BY indexed_at DESC, uri DESC LIMIT ?",
                (did, at, after or "\uffff", limit),
            ).fetchall()
            out: dict[str, Any] = {"feed": r.feed([(s, ia, None, None) for s, ia, _ in rows])}
            if len(rows) == limit:
                out["cursor"] = f"{rows[-1][1]}::{rows[-1][2]}"
            return out

        result: dict[str, Any] = await self._run(viewer, q)
        return result

    async def quotes(
        self,
        uri: str,
        cid: str | None,
        viewer: str | None,
        limit: int,
        cursor: str | None,
        sort: str = "latest",
    ) -> dict[str, Any]:
        """getQuotes: ``sort`` ``latest`` (newest first, the default) or ``top`` (most
        liked first, paged by offset up to :data:`MAX_SUGGESTION_OFFSET`)."""
        if sort not in ("latest", "top"):
            raise RemoteProtocolError("sort must be latest or top")
        top = sort == "top"
        offset = _offset(cursor) if top else 0
        at, after = ("\uffff", "") if top else _cursor(cursor)

        def q(r: _Read) -> dict[str, Any]:
            if top:
                want = max(0, min(limit, MAX_SUGGESTION_OFFSET - offset))
                rows = r.conn.execute(
                    "SELECT p.uri, p.sort_at FROM posts p LEFT JOIN post_stats s ON s.uri = p.uri"
                    " WHERE p.quote = ? ORDER BY COALESCE(s.likes, 0) DESC, p.sort_at DESC,"
                    " p.uri DESC LIMIT ? OFFSET ?",
                    (uri, want, offset),
                ).fetchall()
            else:
                want = limit
                rows = r.conn.execute(
                    "SELECT uri, sort_at FROM posts WHERE quote = ? AND (sort_at, uri) < (?, ?)"
                    " ORDER BY sort_at DESC, uri DESC LIMIT ?",
                    (uri, at, after or "\uffff", limit),
                ).fetchall()
            views = r.post_views([u for u, _ in rows])
            posts = [views[u] for u, _ in rows if u in views]
            if cid is not None:
                posts = [p for p in posts if _quoted_cid(p["record"]) == cid]
            out: dict[str, Any] = {"uri": uri, "posts": posts}
            if cid is not None:
                out["cid"] = cid
            if rows and len(rows) == want:
                if not top:
                    out["cursor"] = f"{rows[-1][1]}::{rows[-1][0]}"
                elif offset + want < MAX_SUGGESTION_OFFSET:
                    out["cursor"] = str(offset + want)
            return out

        result: dict[str, Any] = await self._run(viewer, q)
        return result

    # -- suggestions ---------------------------------------------------------------
    async def suggestions(
        self, viewer: str | None, limit: int, cursor: str | None
    ) -> dict[str, Any]:
        """Accounts followed by the people the viewer follows (most such follows
        first), then the most active accounts; never the viewer, anyone it follows,
        blocks either way, mutes or takedowns."""
        offset = _offset(cursor)
        active = await self._active_accounts()

        def q(r: _Read) -> dict[str, Any]:
            if offset >= MAX_SUGGESTION_OFFSET:
                return {"actors": []}
            want = min(offset + limit, MAX_SUGGESTION_OFFSET)
            ranked = _suggest(r, viewer, None, want, active=active)
            page = ranked[offset:want]
            out: dict[str, Any] = {"actors": r.profile_views(page)}
            if len(page) == limit and want < MAX_SUGGESTION_OFFSET:
                out["cursor"] = str(want)
            return out

        result: dict[str, Any] = await self._run(viewer, q)
        return result

    async def _active_accounts(self) -> list[str]:
        """The accounts with the most posts (the most followed first among equals),
        worked out at most every :data:`ACTIVE_TTL` seconds: a sort of every account
        is not a per-request cost."""
        now = time.monotonic()
        if self._active is not None and self._active[0] > now:
            return self._active[1]

        def q(conn: sqlite3.Connection) -> list[str]:
            return [
                row[0]
                for row in conn.execute(
                    "SELECT s.did FROM actor_stats s JOIN identities i ON i.did = s.did"
                    " WHERE s.posts > 0 ORDER BY s.posts DESC, s.followers DESC, s.did LIMIT ?",
                    (ACTIVE_KEEP,),
                )
            ]

        found: list[str] = await self.storage.read(q)
        self._active = (now + ACTIVE_TTL, found)
        return found

    async def suggested_follows(self, actor: str, viewer: str | None) -> dict[str, Any]:
        """Accounts like ``actor``: followed by ``actor`` and by its followers."""

        def q(r: _Read) -> dict[str, Any]:
            did = r.resolve(actor)
            if did in r.hidden():
                return {"suggestions": [], "isFallback": False}
            ranked = _suggest(r, viewer, did, 25)
            return {"suggestions": r.profile_views(ranked), "isFallback": False}

        result: dict[str, Any] = await self._run(viewer, q)
        return result

    # -- feed generators -----------------------------------------------------------
    async def generators(self, uris: Sequence[str], viewer: str | None) -> list[dict[str, Any]]:
        """GeneratorViews of the declarations held, in the order asked (the unknown
        and hidden left out)."""

        def q(r: _Read) -> list[dict[str, Any]]:
            return _generator_views(r, list(uris))

        result: list[dict[str, Any]] = await self._run(viewer, q)
        return result

    async def actor_feeds(
        self, actor: str, viewer: str | None, limit: int, cursor: str | None
    ) -> dict[str, Any]:
        """getActorFeeds: the feeds ``actor`` declared, newest first."""
        at, after = _cursor(cursor)

        def q(r: _Read) -> dict[str, Any]:
            did = r.resolve(actor)
            if did in r.hidden():
                return {"feeds": []}
            rows = r.conn.execute(
                "SELECT uri, indexed_at FROM feed_generators WHERE did = ?"
                " AND (indexed_at, uri) < (?, ?) ORDER BY indexed_at DESC, uri DESC LIMIT ?",
                (did, at, after or "\uffff", limit),
            ).fetchall()
            out: dict[str, Any] = {"feeds": _generator_views(r, [u for u, _ in rows])}
            if len(rows) == limit:
                out["cursor"] = f"{rows[-1][1]}::{rows[-1][0]}"
            return out

        result: dict[str, Any] = await self._run(viewer, q)
        return result

    async def suggested_feeds(
        self, viewer: str | None, limit: int, cursor: str | None
    ) -> dict[str, Any]:
        """getSuggestedFeeds: the feeds this node knows, most liked first (then the
        newest), paged by offset up to :data:`MAX_SUGGESTION_OFFSET`."""
        offset = _offset(cursor)

        def q(r: _Read) -> dict[str, Any]:
            if offset >= MAX_SUGGESTION_OFFSET:
                return {"feeds": []}
            want = min(limit, MAX_SUGGESTION_OFFSET - offset)
            rows = r.conn.execute(
                "SELECT g.uri FROM feed_generators g LEFT JOIN post_stats s ON s.uri = g.uri"
                " ORDER BY COALESCE(s.likes, 0) DESC, g.indexed_at DESC, g.uri LIMIT ? OFFSET ?",
                (want, offset),
            ).fetchall()
            out: dict[str, Any] = {"feeds": _generator_views(r, [u for (u,) in rows])}
            if len(rows) == want and offset + want < MAX_SUGGESTION_OFFSET:
                out["cursor"] = str(offset + want)
            return out

        result: dict[str, Any] = await self._run(viewer, q)
        return result

    async def generator_service(self, uri: str) -> tuple[str, str] | None:
        """(service DID, record key) of the feed declared at ``uri``, if held."""

        def q(conn: sqlite3.Connection) -> tuple[str, str] | None:
            row = conn.execute(
                "SELECT service, rkey FROM feed_generators WHERE uri = ?", (uri,)
            ).fetchone()
            return None if row is None else (str(row[0]), str(row[1]))

        result: tuple[str, str] | None = await self.storage.read(q)
        return result

    async def served_feeds(self, service: str, names: Sequence[str], limit: int) -> list[str]:
        """AT-URIs of the declarations naming ``service`` whose record key is one of
        ``names`` (the feeds this node answers for), oldest first."""
        wanted = list(names)

        def q(conn: sqlite3.Connection) -> list[str]:
            if not wanted:
                return []
            return [
                r[0]
                for r in conn.execute(
                    "SELECT uri FROM feed_generators WHERE service = ?"
                    f" AND rkey IN ({_marks(len(wanted))}) ORDER BY indexed_at LIMIT ?",
                    [service, *wanted, limit],
                )
            ]

        result: list[str] = await self.storage.read(q)
        return result

    async def hydrate(self, skeleton: Skeleton, viewer: str | None) -> dict[str, Any]:
        """A skeleton as FeedViewPosts, in its order; posts this node does not hold
        or that are hidden from the viewer are left out."""

        def q(r: _Read) -> dict[str, Any]:
            reposts: dict[str, tuple[str, str, str]] = {}
            wanted = [i.repost for i in skeleton.items if i.repost is not None]
            if wanted:
                for uri, did, subject, at in r.conn.execute(
                    "SELECT uri, did, subject, indexed_at FROM reposts"
                    f" WHERE uri IN ({_marks(len(wanted))})",
                    wanted,
                ):
                    reposts[uri] = (did, at, subject)
            items: list[tuple[str, str, str | None, str | None]] = []
            for item in skeleton.items:
                by = at = None
                rep = reposts.get(item.repost) if item.repost else None
                if rep is not None and rep[2] == item.post:
                    by, at = rep[0], rep[1]
                    if by in r.hidden():
                        continue
                items.append((item.post, "", by, at))
            entries = {e["post"]["uri"]: e for e in r.feed(items)}
            feed = []
            for item in skeleton.items:
                entry = entries.get(item.post)
                if entry is None:
                    continue
                if item.pinned and "reason" not in entry:
                    entry["reason"] = {"$type": REASON_PIN}
                if item.feed_context is not None:
                    entry["feedContext"] = item.feed_context
                feed.append(entry)
            out: dict[str, Any] = {"feed": feed}
            if skeleton.cursor is not None:
                out["cursor"] = skeleton.cursor
            return out

        result: dict[str, Any] = await self._run(viewer, q)
        return result


def _quoted_cid(record: dict[str, Any]) -> str | None:
    embed = record.get("embed")
    if not isinstance(embed, dict):
        return None
    ref = embed.get("record")
    if isinstance(ref, dict) and isinstance(ref.get("record"), dict):
        ref = ref["record"]  # recordWithMedia
    cid = ref.get("cid") if isinstance(ref, dict) else None
    return cid if isinstance(cid, str) else None


def _suggest(
    r: _Read,
    viewer: str | None,
    around: str | None,
    want: int,
    *,
    active: Sequence[str] = (),
) -> list[str]:
    """Up to ``want`` DIDs, best first (see :meth:`FeedViews.suggestions`).
    ``around``: suggest accounts like this one instead of the viewer's circle."""
    hidden = r.hidden()
    excluded: set[str] = set(hidden)
    if viewer is not None:
        excluded.add(viewer)
        excluded.update(
            row[0] for row in r.conn.execute("SELECT subject FROM follows WHERE did = ?", (viewer,))
        )
    if around is not None:
        excluded.add(around)
    # The accounts whose follows count as votes.
    if around is not None:
        voters = [around] + [
            row[0]
            for row in r.conn.execute(
                "SELECT did FROM follows WHERE subject = ? LIMIT ?", (around, _SUGGEST_FROM)
            )
        ]
    elif viewer is not None:
        voters = [
            row[0]
            for row in r.conn.execute(
                "SELECT subject FROM follows WHERE did = ? LIMIT ?", (viewer, _SUGGEST_FROM)
            )
        ]
    else:
        voters = []
    voters = [v for v in dict.fromkeys(voters) if v not in hidden]
    votes: dict[str, int] = {}
    for voter in voters:
        # Each voter's follows, at most _VOTES_EACH of them: the work is bounded by
        # _SUGGEST_FROM x _VOTES_EACH rows however many accounts they follow.
        for (subject,) in r.conn.execute(
            "SELECT DISTINCT subject FROM follows WHERE did = ? LIMIT ?", (voter, _VOTES_EACH)
        ):
            if subject not in excluded:
                votes[subject] = votes.get(subject, 0) + 1
    ranked = [d for d, _ in sorted(votes.items(), key=lambda kv: (-kv[1], kv[0]))]
    if len(ranked) < want:
        # Then the active accounts (most posts first), as the caller found them.
        seen = set(ranked) | excluded
        for did in active:
            if did not in seen:
                ranked.append(did)
                seen.add(did)
            if len(ranked) >= want:
                break
    served: list[str] = []
    for did in ranked[:want]:
        try:
            served.append(r.resolve(did))
        except (ProfileNotFound, RemoteProtocolError):
            continue
    return served


def _generator_views(r: _Read, uris: list[str]) -> list[dict[str, Any]]:
    wanted = list(dict.fromkeys(uris))
    if not wanted:
        return []
    rows = r.conn.execute(
        "SELECT g.uri, g.did, g.cid, g.indexed_at, b.data, COALESCE(s.likes, 0)"
        " FROM feed_generators g JOIN blocks b ON b.cid = g.cid"
        " LEFT JOIN post_stats s ON s.uri = g.uri"
        f" WHERE g.uri IN ({_marks(len(wanted))})",
        wanted,
    ).fetchall()
    hidden = r.hidden()
    rows = [row for row in rows if row[1] not in hidden]
    creators = {p["did"]: p for p in r.profile_views(list({row[1] for row in rows}))}
    likes: dict[str, str] = {}
    if r.viewer is not None and rows:
        found = [row[0] for row in rows]
        for like, subject in r.conn.execute(
            f"SELECT uri, subject FROM likes WHERE did = ? AND subject IN ({_marks(len(found))})",
            [r.viewer, *found],
        ):
            likes[subject] = like
    views: dict[str, dict[str, Any]] = {}
    for uri, did, cid, indexed_at, data, like_count in rows:
        record = _record_json(cid, data)
        if record is None:
            continue
        view: dict[str, Any] = {
            "$type": GENERATOR_VIEW,
            "uri": uri,
            "cid": str(CID.from_bytes(cid)),
            "did": record.get("did"),
            "creator": creators[did],
            "displayName": record.get("displayName"),
            "likeCount": like_count,
            "viewer": {"like": likes[uri]} if uri in likes else {},
            "labels": [],
            "indexedAt": indexed_at,
        }
        desc = record.get("description")
        if isinstance(desc, str):
            view["description"] = desc
        avatar = _blob_cid(record.get("avatar"))
        if avatar is not None:
            view["avatar"] = media.blob_url(r.base, did, avatar)
        views[uri] = view
    return [views[u] for u in wanted if u in views]


def _blob_cid(blob: Any) -> str | None:
    """The CID of a blob ref as JSON (``{"$type": "blob", "ref": {"$link": ...}}``)."""
    if not isinstance(blob, dict):
        return None
    ref = blob.get("ref")
    link = ref.get("$link") if isinstance(ref, dict) else None
    return link if isinstance(link, str) and len(link) < 200 else None
