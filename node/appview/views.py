"""Views: what a client shows, built from the node's own indexes.

Shapes follow the app.bsky lexicons (``feed/defs.json``, ``actor/defs.json``):
FeedViewPost, PostView, ThreadViewPost, NotFoundPost, BlockedPost, ProfileViewBasic,
ProfileView and ProfileViewDetailed, so a reader who knows Bluesky's API finds no
surprises. Each view is built in one read on a reader thread: the query, then one
batch each for records, authors, counts and the viewer's own likes and reposts.

Blocks are enforced here: if either of viewer and author blocks the other, the
author's posts are left out of feeds and shown as ``blockedPost`` in threads. Mutes
(the viewer's own, private to this node) and this node's takedowns (scope ``serve``,
node/accounts/moderation.py) leave accounts out the same way, shown as ``notFoundPost``.
Deleted records are gone from the indexes, so they are gone from every view.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from protocol.cid import CID
from protocol.encoding import decode
from protocol.errors import RemoteProtocolError, SkyfedError
from protocol.jsondata import to_json
from protocol.syntax import is_valid_did, is_valid_handle

from ..store.sqlite import SqliteStorage
from . import graph, media

__all__ = [
    "Views",
    "author_feed_page",
    "post_thread_page",
    "thread_page",
    "timeline_page",
]

POST_VIEW = "app.bsky.feed.defs#postView"
THREAD_VIEW = "app.bsky.feed.defs#threadViewPost"
NOT_FOUND = "app.bsky.feed.defs#notFoundPost"
BLOCKED = "app.bsky.feed.defs#blockedPost"
REASON_REPOST = "app.bsky.feed.defs#reasonRepost"


class ProfileNotFound(RemoteProtocolError):
    error = "ProfileNotFound"


def _cursor(value: str | None) -> tuple[str, str]:
    """(sort_at, uri) after which a page starts; the end of time when absent."""
    if not value:
        return "\uffff", ""
    sort_at, sep, uri = value.partition("::")
    if not sep or len(value) > 8192:
        raise RemoteProtocolError("malformed cursor")
    return sort_at, uri


def _marks(n: int) -> str:
    return ",".join("?" * n)


class _Read:
    """One view's worth of queries on one connection."""

    def __init__(self, conn: sqlite3.Connection, viewer: str | None, base: str = ""):
        self.conn = conn
        self.viewer = viewer
        #: This node's URL, for the media URLs in views (node/appview/media.py):
        #: every view class passes it (clients refuse a relative avatar URL).
        self.base = base
        self._hidden: set[str] | None = None
        self._blocked: set[str] | None = None
        # Per-view answers of node/appview/graph.py (a thread asks for its root's
        # gate once per level otherwise).
        self.memo: dict[tuple[str, str], Any] = {}

    # -- actors ------------------------------------------------------------------
    def resolve(self, actor: str) -> str:
        if actor.startswith("did:"):
            if not is_valid_did(actor):
                raise RemoteProtocolError(f"{actor!r} is not a valid DID")
            row = self.conn.execute(
                "SELECT 1 FROM identities WHERE did = ?"
                " UNION ALL SELECT 1 FROM atproto_accounts WHERE did = ?",
                (actor, actor),
            ).fetchone()
            if row is None:
                raise ProfileNotFound(f"profile not found: {actor}")
            return self._served(actor)
        if not is_valid_handle(actor):
            raise RemoteProtocolError(f"{actor!r} is not a valid handle or DID")
        # Confirmed handles only (node/accounts/handles.py): a log's claim is not enough.
        row = self.conn.execute(
            "SELECT did FROM handles WHERE handle = ?"
            " UNION ALL SELECT did FROM atproto_accounts WHERE handle = ?",
            (actor.lower(), actor.lower()),
        ).fetchone()
        if row is None:
            raise ProfileNotFound(f"profile not found: {actor}")
        return self._served(str(row[0]))

    def _served(self, did: str) -> str:
        row = self.conn.execute(
            "SELECT 1 FROM takedowns WHERE did = ? AND reversed_at IS NULL"
            " AND instr(scopes, 'serve') > 0",
            (did,),
        ).fetchone()
        if row is not None:
            raise RemoteProtocolError(
                f"account has been taken down on this node: {did}", error="AccountTakedown"
            )
        return did

    def blocked(self) -> set[str]:
        """Accounts the viewer blocks or is blocked by (directly or by list)."""
        if self._blocked is None:
            self._blocked = graph.blocked_either_way(self.conn, self.viewer)
        return self._blocked

    def hidden(self) -> set[str]:
        """Accounts left out of this view: blocked either way, muted by the viewer,
        or taken down (not served) on this node."""
        if self._hidden is None:
            self._hidden = set(self.blocked())
            # Bridged atproto accounts their host says are not active (takendown,
            # suspended, deactivated): hidden until an #account event says active.
            self._hidden.update(
                r[0]
                for r in self.conn.execute(
                    "SELECT did FROM atproto_accounts WHERE status != 'active'"
                )
            )
            self._hidden.update(
                r[0]
                for r in self.conn.execute(
                    "SELECT did FROM takedowns WHERE reversed_at IS NULL"
                    " AND instr(scopes, 'serve') > 0"
                )
            )
            self._hidden.update(graph.muted_by(self.conn, self.viewer))
        return self._hidden

    def basics(self, dids: Iterable[str]) -> dict[str, dict[str, Any]]:
        wanted = list(dict.fromkeys(dids))
        out: dict[str, dict[str, Any]] = {d: {"did": d, "handle": "handle.invalid"} for d in wanted}
        for i in range(0, len(wanted), 500):
            chunk = wanted[i : i + 500]
            for did, handle in self.conn.execute(
                f"SELECT did, handle FROM handles WHERE did IN ({_marks(len(chunk))})", chunk
            ):
                if handle:
                    out[did]["handle"] = handle
            # Bridged atproto accounts: a handle only once checked both ways.
            for did, handle in self.conn.execute(
                f"SELECT did, handle FROM atproto_accounts WHERE did IN ({_marks(len(chunk))})",
                chunk,
            ):
                if handle:
                    out[did]["handle"] = handle
            for did, name, desc in self.conn.execute(
                "SELECT did, display_name, description FROM profiles"
                f" WHERE did IN ({_marks(len(chunk))})",
                chunk,
            ):
                if name:
                    out[did]["displayName"] = name
                if desc:
                    out[did]["_description"] = desc
            # By uri (its index): an author's other blob refs are never scanned.
            for did, path, link in self.conn.execute(
                "SELECT did, path, link FROM blob_refs"
                f" WHERE uri IN ({_marks(len(chunk))})"
                " AND path IN ('avatar', 'banner') AND mime LIKE 'image/%'",
                [f"at://{d}/app.bsky.actor.profile/self" for d in chunk],
            ):
                url = media.blob_url(self.base, did, link)
                out[did]["avatar" if path == "avatar" else "_banner"] = url
        return out

    def profile_views(self, dids: Sequence[str], *, detailed: bool = False) -> list[dict[str, Any]]:
        basics = self.basics(dids)
        viewer_state = self.relationships(dids)
        stats: dict[str, tuple[int, int, int]] = {}
        if detailed and dids:
            for did, posts, follows, followers in self.conn.execute(
                "SELECT did, posts, follows, followers FROM actor_stats"
                f" WHERE did IN ({_marks(len(dids))})",
                list(dids),
            ):
                stats[did] = (posts, follows, followers)
        feedgens = _feedgen_counts(self.conn, dids) if detailed else {}
        out = []
        for did in dids:
            b = dict(basics[did])
            desc = b.pop("_description", None)
            if desc:
                b["description"] = desc
            banner = b.pop("_banner", None)
            if banner and detailed:
                b["banner"] = banner
            b["viewer"] = viewer_state.get(did, {})
            b["labels"] = []
            if detailed:
                posts, follows, followers = stats.get(did, (0, 0, 0))
                b.update(followersCount=followers, followsCount=follows, postsCount=posts)
                if feedgens.get(did):
                    # Bluesky's apps show a profile's Feeds tab when this is set.
                    b.setdefault("associated", {})["feedgens"] = feedgens[did]
            out.append(b)
        return out

    def relationships(self, dids: Sequence[str]) -> dict[str, dict[str, Any]]:
        if self.viewer is None or not dids:
            return {}
        v = self.viewer
        out: dict[str, dict[str, Any]] = {d: {} for d in dids}
        m = _marks(len(dids))
        for uri, subject in self.conn.execute(
            f"SELECT uri, subject FROM follows WHERE did = ? AND subject IN ({m})", [v, *dids]
        ):
            out[subject]["following"] = uri
        for uri, did in self.conn.execute(
            f"SELECT uri, did FROM follows WHERE subject = ? AND did IN ({m})", [v, *dids]
        ):
            out[did]["followedBy"] = uri
        for uri, subject in self.conn.execute(
            f"SELECT uri, subject FROM graph_blocks WHERE did = ? AND subject IN ({m})", [v, *dids]
        ):
            out[subject]["blocking"] = uri
        for (did,) in self.conn.execute(
            f"SELECT did FROM graph_blocks WHERE subject = ? AND did IN ({m})", [v, *dids]
        ):
            out[did]["blockedBy"] = True
        for (subject,) in self.conn.execute(
            f"SELECT subject FROM mutes WHERE did = ? AND subject IN ({m})", [v, *dids]
        ):
            out[subject]["muted"] = True
        graph.add_list_relationships(self, dids, out)
        return out

    # -- posts -------------------------------------------------------------------
    def post_views(self, uris: Sequence[str], *, embeds: bool = True) -> dict[str, dict[str, Any]]:
        """PostViews for the uris that are indexed (and not hidden from the viewer).
        ``embeds``: resolve quoted posts (one level only)."""
        wanted = list(dict.fromkeys(uris))
        if not wanted:
            return {}
        rows: list[Any] = []
        for i in range(0, len(wanted), 500):
            chunk = wanted[i : i + 500]
            rows += self.conn.execute(
                # A post is a skyfed block or a bridged atproto record (node/atproto/).
                "SELECT p.uri, p.did, p.cid, p.indexed_at, COALESCE(b.data, ar.data),"
                " COALESCE(s.replies, 0), COALESCE(s.reposts, 0), COALESCE(s.likes, 0),"
                " COALESCE(s.quotes, 0), aa.host"
                " FROM posts p LEFT JOIN blocks b ON b.cid = p.cid"
                " LEFT JOIN atproto_records ar ON ar.uri = p.uri AND b.cid IS NULL"
                " LEFT JOIN atproto_accounts aa ON aa.did = p.did AND b.cid IS NULL"
                " LEFT JOIN post_stats s ON s.uri = p.uri"
                f" WHERE p.uri IN ({_marks(len(chunk))})",
                chunk,
            ).fetchall()
        hidden = self.hidden()
        rows = [r for r in rows if r[1] not in hidden and r[4] is not None]
        authors = self.basics(r[1] for r in rows)
        likes: dict[str, str] = {}
        reposts: dict[str, str] = {}
        if self.viewer is not None and rows:
            found = [r[0] for r in rows]
            m = _marks(len(found))
            for uri, subject in self.conn.execute(
                f"SELECT uri, subject FROM likes WHERE did = ? AND subject IN ({m})",
                [self.viewer, *found],
            ):
                likes[subject] = uri
            for uri, subject in self.conn.execute(
                f"SELECT uri, subject FROM reposts WHERE did = ? AND subject IN ({m})",
                [self.viewer, *found],
            ):
                reposts[subject] = uri
        out: dict[str, dict[str, Any]] = {}
        for uri, did, cid, indexed_at, data, replies, n_reposts, n_likes, quotes, via in rows:
            if via is None:
                record = _record_json(cid, data)
                cid_text = _cid_text(cid) if record is not None else ""
            else:
                record = _atproto_record_json(cid, data)
                from protocol.atproto.cid import CID as AtprotoCID  # a bridged post

                cid_text = AtprotoCID.from_bytes(cid).to_str() if record is not None else ""
            if record is None:
                continue
            author = {k: v for k, v in authors[did].items() if not k.startswith("_")}
            author["labels"] = []
            viewer: dict[str, Any] = {}
            if uri in likes:
                viewer["like"] = likes[uri]
            if uri in reposts:
                viewer["repost"] = reposts[uri]
            view: dict[str, Any] = {
                "$type": POST_VIEW,
                "uri": uri,
                "cid": cid_text,
                "author": author,
                "record": record,
                "replyCount": replies,
                "repostCount": n_reposts,
                "likeCount": n_likes,
                "quoteCount": quotes,
                "indexedAt": indexed_at,
                "viewer": viewer,
                "labels": [],
            }
            shown = media.media_view(self.base, did, record.get("embed"))
            if shown is not None:
                view["embed"] = shown
            if via is not None:
                # Where a bridged post comes from (not a lexicon field; clients skip it).
                view["via"] = {"protocol": "atproto", "host": via}
            out[uri] = view
        if embeds:
            self._embed_quotes(out)
            graph.decorate_posts(self, out)
        return out

    def _embed_quotes(self, views: dict[str, dict[str, Any]]) -> None:
        quoted: dict[str, str] = {}
        for uri, view in views.items():
            embed = view["record"].get("embed")
            if isinstance(embed, dict) and embed.get("$type") == media.RECORD_WITH_MEDIA:
                embed = embed.get("record")  # the quote half; media below
            if isinstance(embed, dict) and embed.get("$type") == "app.bsky.embed.record":
                ref = embed.get("record")
                if isinstance(ref, dict) and isinstance(ref.get("uri"), str):
                    quoted[uri] = ref["uri"]
        if not quoted:
            return
        targets = self._quoted_records(list(quoted.values()))
        for uri, target in quoted.items():
            inner = targets.get(target) or {
                "$type": "app.bsky.embed.record#viewNotFound",
                "uri": target,
                "notFound": True,
            }
            shown = {"$type": "app.bsky.embed.record#view", "record": inner}
            view = views[uri]
            outer = view["record"].get("embed")
            if outer.get("$type") == media.RECORD_WITH_MEDIA:
                extra = media.media_view(self.base, view["author"]["did"], outer.get("media"))
                if extra is not None:
                    shown = {
                        "$type": media.RECORD_WITH_MEDIA + "#view",
                        "record": shown,
                        "media": extra,
                    }
            view["embed"] = shown

    def _quoted_records(self, uris: list[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for uri, view in self.post_views(uris, embeds=False).items():
            out[uri] = {
                "$type": "app.bsky.embed.record#viewRecord",
                "uri": uri,
                "cid": view["cid"],
                "author": view["author"],
                "value": view["record"],
                "indexedAt": view["indexedAt"],
                "labels": [],
            }
            if "embed" in view:
                out[uri]["embeds"] = [view["embed"]]
        return out

    def feed(self, items: list[tuple[str, str, str | None, str | None]]) -> list[dict[str, Any]]:
        """FeedViewPosts for (post uri, sort_at, reposted-by did, repost indexedAt)."""
        views = self.post_views([i[0] for i in items])
        for uri in graph.gated_out(self, views):
            del views[uri]  # a reply its thread's gate does not allow
        parents: list[str] = []
        for uri, *_ in items:
            view = views.get(uri)
            reply = view["record"].get("reply") if view else None
            if isinstance(reply, dict):
                for key in ("root", "parent"):
                    ref = reply.get(key)
                    if isinstance(ref, dict) and isinstance(ref.get("uri"), str):
                        parents.append(ref["uri"])
        context = self.post_views(parents)
        reposters = self.basics(i[2] for i in items if i[2])
        out = []
        for uri, _, by, by_at in items:
            view = views.get(uri)
            if view is None:
                continue
            entry: dict[str, Any] = {"post": view}
            reply = view["record"].get("reply")
            if isinstance(reply, dict):
                entry["reply"] = {
                    key: self._ref_view(reply.get(key), context) for key in ("root", "parent")
                }
            if by is not None:
                who = {k: v for k, v in reposters[by].items() if not k.startswith("_")}
                entry["reason"] = {"$type": REASON_REPOST, "by": who, "indexedAt": by_at}
            out.append(entry)
        return out

    def _ref_view(self, ref: Any, context: dict[str, dict[str, Any]]) -> dict[str, Any]:
        uri = ref.get("uri") if isinstance(ref, dict) else None
        if isinstance(uri, str) and uri in context:
            return context[uri]
        # A blocked parent is a blockedPost, as the ReplyRef union allows.
        return _missing(self, uri if isinstance(uri, str) else "")


class Views:
    """The read API of a node (every method runs one read on a reader thread)."""

    def __init__(self, storage: SqliteStorage):
        self.storage = storage
        #: This node's URL (set by the wiring once it is known), for media URLs.
        self.base_url: Callable[[], str] = lambda: ""

    async def _run(self, viewer: str | None, fn: Callable[[_Read], Any]) -> Any:
        base = self.base_url()

        def run(conn: sqlite3.Connection) -> Any:
            return fn(_Read(conn, viewer, base))

        return await self.storage.read(run)

    # -- feeds -------------------------------------------------------------------
    async def latest(self, viewer: str | None, limit: int, cursor: str | None) -> dict[str, Any]:
        """Every post this node holds, newest first (the network as it sees it)."""
        at, after = _cursor(cursor)

        def q(r: _Read) -> dict[str, Any]:
            rows = r.conn.execute(
                "SELECT uri, sort_at FROM posts WHERE (sort_at, uri) < (?, ?)"
                " ORDER BY sort_at DESC, uri DESC LIMIT ?",
                (at, after or "\uffff", limit),
            ).fetchall()
            return _page(r.feed([(u, s, None, None) for u, s in rows]), rows, limit)

        result: dict[str, Any] = await self._run(viewer, q)
        return result

    async def author_feed(
        self,
        actor: str,
        viewer: str | None,
        limit: int,
        cursor: str | None,
        filter_: str = "posts_with_replies",
    ) -> dict[str, Any]:
        """An author's posts and reposts; ``filter_`` is getAuthorFeed's ``filter``."""
        check_author_feed_filter(filter_)
        result: dict[str, Any] = await self._run(
            viewer, lambda r: author_feed_page(r, actor, limit, cursor, filter_)
        )
        return result

    async def timeline(self, viewer: str, limit: int, cursor: str | None) -> dict[str, Any]:
        """Posts and reposts by the accounts ``viewer`` follows (and its own)."""
        result: dict[str, Any] = await self._run(viewer, lambda r: timeline_page(r, limit, cursor))
        return result

    async def posts(self, uris: Sequence[str], viewer: str | None) -> dict[str, Any]:
        def q(r: _Read) -> dict[str, Any]:
            views = r.post_views(list(uris))
            return {"posts": [views[u] for u in uris if u in views]}

        result: dict[str, Any] = await self._run(viewer, q)
        return result

    async def thread(
        self, uri: str, viewer: str | None, depth: int = 6, parent_height: int = 80
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self._run(
            viewer, lambda r: thread_page(r, uri, depth, parent_height)
        )
        return result

    async def likes(
        self, uri: str, viewer: str | None, limit: int, cursor: str | None
    ) -> dict[str, Any]:
        def q(r: _Read) -> dict[str, Any]:
            rows = r.conn.execute(
                "SELECT did, created_at, indexed_at FROM likes WHERE subject = ?"
                " AND indexed_at < ? ORDER BY indexed_at DESC LIMIT ?",
                (uri, cursor or "\uffff", limit),
            ).fetchall()
            rows = [row for row in rows if row[0] not in r.hidden()]
            actors = {p["did"]: p for p in r.profile_views([row[0] for row in rows])}
            out: dict[str, Any] = {
                "uri": uri,
                "likes": [
                    {"indexedAt": ia, "createdAt": ca, "actor": actors[d]} for d, ca, ia in rows
                ],
            }
            if len(rows) == limit:
                out["cursor"] = rows[-1][2]
            return out

        result: dict[str, Any] = await self._run(viewer, q)
        return result

    async def reposted_by(
        self, uri: str, viewer: str | None, limit: int, cursor: str | None
    ) -> dict[str, Any]:
        def q(r: _Read) -> dict[str, Any]:
            rows = r.conn.execute(
                "SELECT did, indexed_at FROM reposts WHERE subject = ?"
                " AND indexed_at < ? ORDER BY indexed_at DESC LIMIT ?",
                (uri, cursor or "\uffff", limit),
            ).fetchall()
            dids = [d for d, _ in rows if d not in r.hidden()]
            out: dict[str, Any] = {"uri": uri, "repostedBy": r.profile_views(dids)}
            if len(rows) == limit:
                out["cursor"] = rows[-1][1]
            return out

        result: dict[str, Any] = await self._run(viewer, q)
        return result

    # -- actors ------------------------------------------------------------------
    async def profile(self, actor: str, viewer: str | None) -> dict[str, Any]:
        def q(r: _Read) -> dict[str, Any]:
            return r.profile_views([r.resolve(actor)], detailed=True)[0]

        result: dict[str, Any] = await self._run(viewer, q)
        return result

    async def profiles(self, actors: Sequence[str], viewer: str | None) -> dict[str, Any]:
        def q(r: _Read) -> dict[str, Any]:
            dids = []
            for a in actors:
                try:
                    dids.append(r.resolve(a))
                except ProfileNotFound:
                    continue
            return {"profiles": r.profile_views(dids, detailed=True)}

        result: dict[str, Any] = await self._run(viewer, q)
        return result

    async def profile_list(self, dids: Sequence[str], viewer: str | None) -> list[dict[str, Any]]:
        """ProfileViews of known accounts, in order (for lists such as mutes)."""

        def q(r: _Read) -> list[dict[str, Any]]:
            known = []
            for did in dids:
                try:
                    known.append(r.resolve(did))
                except RemoteProtocolError:
                    continue
            return r.profile_views(known)

        result: list[dict[str, Any]] = await self._run(viewer, q)
        return result

    async def follows(
        self, actor: str, viewer: str | None, limit: int, cursor: str | None, *, followers: bool
    ) -> dict[str, Any]:
        def q(r: _Read) -> dict[str, Any]:
            did = r.resolve(actor)
            if followers:
                sql = "SELECT did, uri FROM follows WHERE subject = ? AND uri < ?"
            else:
                sql = "SELECT subject, uri FROM follows WHERE did = ? AND uri < ?"
            rows = r.conn.execute(
                sql + " ORDER BY uri DESC LIMIT ?", (did, cursor or "\uffff", limit)
            ).fetchall()
            people = r.profile_views([d for d, _ in rows if d not in r.hidden()])
            out: dict[str, Any] = {"subject": r.profile_views([did])[0]}
            out["followers" if followers else "follows"] = people
            if len(rows) == limit:
                out["cursor"] = rows[-1][1]
            return out

        result: dict[str, Any] = await self._run(viewer, q)
        return result


# -- pages -------------------------------------------------------------------------
# The views an XRPC handler asks for most, as module-level functions of one read, so
# a worker process can run them too (node/appview/render.py): each takes the read
# (which carries the viewer) and plain values, and returns JSON-ready values.


def timeline_page(r: _Read, limit: int, cursor: str | None) -> dict[str, Any]:
    """getTimeline: posts and reposts by the accounts ``r.viewer`` follows (and its own)."""
    assert r.viewer is not None, "a timeline has a viewer"
    at, after = _cursor(cursor)
    # Written at index time (node/appview/index.py), so one range of one index.
    rows = r.conn.execute(
        "SELECT subject, sort_at, actor, reposted_at, source FROM feed_items"
        " WHERE viewer = ? AND (sort_at, source) < (?, ?)"
        " ORDER BY sort_at DESC, source DESC LIMIT ?",
        (r.viewer, at, after or "\uffff", limit),
    ).fetchall()
    hidden = r.hidden()
    items = [
        (subject, sort_at, actor if reposted_at is not None else None, reposted_at)
        for subject, sort_at, actor, reposted_at, _ in rows
        if actor not in hidden
    ]
    out: dict[str, Any] = {"feed": r.feed(items)}
    if len(rows) == limit:
        out["cursor"] = f"{rows[-1][1]}::{rows[-1][4]}"
    return out


def check_author_feed_filter(filter_: str) -> str:
    """The SQL condition of getAuthorFeed's ``filter``; a filter this node lacks is refused."""
    where = AUTHOR_FEED_FILTERS.get(filter_)
    if where is None:
        raise RemoteProtocolError(
            f"filter must be one of {', '.join(AUTHOR_FEED_FILTERS)} on this node"
        )
    return where


def author_feed_page(
    r: _Read, actor: str, limit: int, cursor: str | None, filter_: str
) -> dict[str, Any]:
    """getAuthorFeed: an author's posts and reposts (``filter_`` is its ``filter``)."""
    where = check_author_feed_filter(filter_)
    at, after = _cursor(cursor)
    did = r.resolve(actor)
    if did in r.hidden():
        return {"feed": []}
    rows = _posts_and_reposts(
        r.conn, [did], at, after, limit, where, reposts=filter_ != "posts_with_media"
    )
    return _page(r.feed(rows), rows, limit)


def thread_page(r: _Read, uri: str, depth: int, parent_height: int) -> dict[str, Any]:
    """A post with ``depth`` levels of replies below and ``parent_height`` parents above."""
    anchor = r.post_views([uri]).get(uri)
    if anchor is None:
        return {"thread": _missing(r, uri)}
    node = _thread_node(r, anchor, depth)
    # Walk up the parents, oldest at the top.
    child = node
    current = anchor
    for _ in range(parent_height):
        reply = current["record"].get("reply")
        parent_uri = reply.get("parent", {}).get("uri") if isinstance(reply, dict) else None
        if not isinstance(parent_uri, str):
            break
        parent = r.post_views([parent_uri]).get(parent_uri)
        if parent is None:
            child["parent"] = _missing(r, parent_uri)
            break
        up = {"$type": THREAD_VIEW, "post": parent}
        child["parent"] = up
        child, current = up, parent
    out: dict[str, Any] = {"thread": node}
    gate = graph.thread_gate(r, anchor)
    if gate is not None:
        out["threadgate"] = gate
    return out


def post_thread_page(r: _Read, uri: str, depth: int, parent_height: int) -> dict[str, Any]:
    """getPostThread: :func:`thread_page`, where a post not found (or hidden) is an
    XRPC ``NotFound`` error rather than a notFoundPost."""
    out = thread_page(r, uri, depth, parent_height)
    if out["thread"].get("notFound"):
        raise RemoteProtocolError(f"Post not found: {uri}", error="NotFound")
    return out


# getAuthorFeed's filters, as SQL conditions on the posts table. posts_with_video
# would need video, which this node does not take.
AUTHOR_FEED_FILTERS: dict[str, str] = {
    # Posts whose embed holds an image (node/store/blobs.py keeps where each ref sits);
    # the author's own posts only, no reposts, as Bluesky's AppView does.
    "posts_with_media": " AND EXISTS (SELECT 1 FROM blob_refs r WHERE r.uri = posts.uri"
    " AND r.path LIKE 'embed.%' AND r.mime LIKE 'image/%')",
    "posts_with_replies": "",
    "posts_no_replies": " AND reply_parent IS NULL",
    # Replies stay when the thread's root is the author's own post.
    "posts_and_author_threads": " AND (reply_root IS NULL"
    " OR substr(reply_root, 1, length(did) + 6) = 'at://' || did || '/')",
}


def _posts_and_reposts(
    conn: sqlite3.Connection,
    authors: list[str],
    at: str,
    after: str,
    limit: int,
    where: str = "",
    *,
    reposts: bool = True,
) -> list[tuple[str, str, str | None, str | None]]:
    """The newest posts and reposts by ``authors`` before the cursor, merged;
    ``where`` narrows the posts (one of :data:`AUTHOR_FEED_FILTERS`)."""
    if not authors:
        return []
    out: list[tuple[str, str, str | None, str | None]] = []
    for i in range(0, len(authors), 500):
        chunk = authors[i : i + 500]
        m = _marks(len(chunk))
        out += conn.execute(
            "SELECT uri, sort_at, NULL, NULL FROM posts"
            f" WHERE did IN ({m}) AND (sort_at, uri) < (?, ?){where}"
            " ORDER BY sort_at DESC, uri DESC LIMIT ?",
            [*chunk, at, after or "\uffff", limit],
        ).fetchall()
        if not reposts:
            continue
        out += conn.execute(
            "SELECT subject, sort_at, did, indexed_at FROM reposts"
            f" WHERE did IN ({m}) AND (sort_at, uri) < (?, ?)"
            " ORDER BY sort_at DESC, uri DESC LIMIT ?",
            [*chunk, at, after or "\uffff", limit],
        ).fetchall()
    out.sort(key=lambda row: (row[1], row[0]), reverse=True)
    return out[:limit]


def _feedgen_counts(conn: sqlite3.Connection, dids: Sequence[str]) -> dict[str, int]:
    """Feed generators each account declared (node/appview/feeds.py)."""
    if not dids:
        return {}
    return {
        did: n
        for did, n in conn.execute(
            f"SELECT did, COUNT(*) FROM feed_generators WHERE did IN ({_marks(len(dids))})"
            " GROUP BY did",
            list(dids),
        )
    }


def _page(feed: list[dict[str, Any]], rows: Sequence[Any], limit: int) -> dict[str, Any]:
    out: dict[str, Any] = {"feed": feed}
    if len(rows) == limit and rows:
        out["cursor"] = f"{rows[-1][1]}::{rows[-1][0]}"
    return out


def _missing(r: _Read, uri: str) -> dict[str, Any]:
    did = uri[len("at://") :].split("/", 1)[0] if uri.startswith("at://") else ""
    if did and did in r.blocked():
        viewer = r.relationships([did]).get(did, {})
        return {
            "$type": BLOCKED,
            "uri": uri,
            "blocked": True,
            "author": {"did": did, "viewer": viewer},
        }
    return {"$type": NOT_FOUND, "uri": uri, "notFound": True}


def _thread_node(r: _Read, post: dict[str, Any], depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"$type": THREAD_VIEW, "post": post}
    if depth <= 0:
        return node
    rows = r.conn.execute(
        "SELECT uri FROM posts WHERE reply_parent = ? ORDER BY sort_at ASC LIMIT 500",
        (post["uri"],),
    ).fetchall()
    # Replies the thread's gate does not allow are left out; a blocked author's reply
    # is a blockedPost (node/appview/graph.py).
    uris = graph.visible_replies(
        r, graph.thread_root(post["uri"], post["record"]), [row[0] for row in rows]
    )
    children = r.post_views(uris)
    blocked = r.blocked()
    node["replies"] = [
        _thread_node(r, children[uri], depth - 1) if uri in children else _missing(r, uri)
        for uri in uris
        if uri in children or uri[len("at://") :].split("/", 1)[0] in blocked
    ]
    return node


@functools.lru_cache(maxsize=50_000)
def _record_json(cid: bytes, data: bytes) -> dict[str, Any] | None:
    """A stored record as JSON-ready values. Cached by CID: content never changes
    under its CID. Callers must not mutate the result."""
    try:
        value = to_json(decode(data))
    except SkyfedError:
        return None
    return value if isinstance(value, dict) else None


@functools.lru_cache(maxsize=16_384)
def _cid_text(cid: bytes) -> str:
    """A post's CID as text, cached: base32 in pure Python was a sixth of a timeline
    page's CPU, and the same posts are shown over and over (~300 bytes an entry)."""
    return CID.from_bytes(cid).to_str()


@functools.lru_cache(maxsize=10_000)
def _atproto_record_json(cid: bytes, data: bytes) -> dict[str, Any] | None:
    """A bridged atproto record (DAG-CBOR) in its JSON form; cached like
    :func:`_record_json`."""
    from ..atproto.store import record_json  # loaded with the first bridged post

    return record_json(data)
