"""Views of the graph beyond follows, and a reader's private graph settings.

Views (lexicon shapes from ``app.bsky.graph.defs`` and ``app.bsky.labeler.defs``):
getBlocks, getList, getLists, getListFeed, getListMutes, getListBlocks and
labeler getServices, each one read on a reader thread through the same
:class:`~node.appview.views._Read` as every other view, so blocks, mutes and
takedowns hide the same way. Private settings: list mutes (muteActorList) and thread
mutes (muteThread), kept on this node only and never in a repo.

getListFeed reads the posts of at most :data:`MAX_LIST_FEED_MEMBERS` members of a
list (those added last), one bounded index range each.

What it refuses: a page over 100, a cursor that is not one it gave, muting a list
that is not an indexed moderation list, and more than :data:`MAX_LIST_MUTES` list
mutes or :data:`MAX_THREAD_MUTES` thread mutes per account.
"""

from __future__ import annotations

import heapq
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar

from protocol.cid import CID
from protocol.errors import RemoteProtocolError
from protocol.syntax import is_valid_did

from ..store.repos import iso_now
from ..store.sqlite import SqliteStorage
from . import graph
from .views import _cursor, _marks, _Read, _record_json

__all__ = ["MAX_LIST_FEED_MEMBERS", "MAX_LIST_MUTES", "MAX_THREAD_MUTES", "GraphViews"]

T = TypeVar("T")

#: Members of a list whose posts getListFeed reads (the most recently added).
MAX_LIST_FEED_MEMBERS: Final = 1_000
#: Lists one account may mute, and threads (per account, this node only).
MAX_LIST_MUTES: Final = 1_000
MAX_THREAD_MUTES: Final = 10_000

_PURPOSE_NAMES: Final = {
    "modlist": graph.MODLIST,
    "curatelist": graph.CURATELIST,
    "referencelist": graph.REFERENCELIST,
}


class ListNotFound(RemoteProtocolError):
    error = "InvalidRequest"


def _list_views(r: _Read, uris: Sequence[str]) -> dict[str, dict[str, Any]]:
    """ListView (with its creator's ProfileView) for the indexed lists among ``uris``."""
    basics = graph.list_basics(r, uris)
    if not basics:
        return {}
    rows = r.conn.execute(
        "SELECT l.uri, l.did, l.cid, b.data FROM lists l JOIN blocks b ON b.cid = l.cid"
        f" WHERE l.uri IN ({_marks(len(basics))})",
        list(basics),
    ).fetchall()
    creators = {p["did"]: p for p in r.profile_views(list({row[1] for row in rows}))}
    out: dict[str, dict[str, Any]] = {}
    for uri, did, cid, data in rows:
        view = dict(basics[uri])
        view["$type"] = "app.bsky.graph.defs#listView"
        view["creator"] = creators[did]
        record = _record_json(cid, data) or {}
        desc = record.get("description")
        if isinstance(desc, str) and len(desc.encode()) <= graph.MAX_DESCRIPTION_BYTES:
            view["description"] = desc
            facets = record.get("descriptionFacets")
            if isinstance(facets, list):
                view["descriptionFacets"] = facets
        out[uri] = view
    return out


class GraphViews:
    """getBlocks, lists, list feeds, list and thread mutes, labeler services."""

    def __init__(self, storage: SqliteStorage):
        self.storage = storage
        #: This node's URL (set by the wiring once it is known), for media URLs.
        self.base_url: Callable[[], str] = lambda: ""

    async def _run(self, viewer: str | None, fn: Callable[[_Read], T]) -> T:
        base = self.base_url()
        return await self.storage.read(lambda conn: fn(_Read(conn, viewer, base)))

    # -- blocks ---------------------------------------------------------------------
    async def blocks(self, viewer: str, limit: int, cursor: str | None) -> dict[str, Any]:
        """app.bsky.graph.getBlocks: the accounts ``viewer`` blocks with block records."""

        def q(r: _Read) -> dict[str, Any]:
            rows = r.conn.execute(
                "SELECT subject, uri FROM graph_blocks WHERE did = ? AND uri < ?"
                " ORDER BY uri DESC LIMIT ?",
                (viewer, cursor or "\uffff", limit),
            ).fetchall()
            # Not asked with no rows: PostgreSQL refuses an empty "IN ()".
            known = (
                {
                    row[0]
                    for row in r.conn.execute(
                        f"SELECT did FROM identities WHERE did IN ({_marks(len(rows))})",
                        [s for s, _ in rows],
                    )
                }
                if rows
                else set()
            )
            out: dict[str, Any] = {"blocks": r.profile_views([s for s, _ in rows if s in known])}
            if len(rows) == limit:
                out["cursor"] = rows[-1][1]
            return out

        return await self._run(viewer, q)

    # -- lists ----------------------------------------------------------------------
    async def get_list(
        self, uri: str, viewer: str | None, limit: int, cursor: str | None
    ) -> dict[str, Any]:
        """app.bsky.graph.getList: the list and a page of its items, newest first."""

        def q(r: _Read) -> dict[str, Any]:
            r._served(graph._did_of(uri))
            view = _list_views(r, [uri]).get(uri)
            if view is None:
                raise ListNotFound(f"List not found: {uri}")
            rows = r.conn.execute(
                "SELECT li.uri, li.subject FROM list_items li"
                " JOIN identities i ON i.did = li.subject"
                " WHERE li.list = ? AND li.uri < ? ORDER BY li.uri DESC LIMIT ?",
                (uri, cursor or "\uffff", limit),
            ).fetchall()
            takedowns = {
                row[0]
                for row in r.conn.execute(
                    "SELECT did FROM takedowns WHERE reversed_at IS NULL"
                    " AND instr(scopes, 'serve') > 0"
                )
            }
            shown = [(u, s) for u, s in rows if s not in takedowns]
            profiles = {p["did"]: p for p in r.profile_views(list({s for _, s in shown}))}
            out: dict[str, Any] = {
                "list": view,
                "items": [
                    {"$type": "app.bsky.graph.defs#listItemView", "uri": u, "subject": profiles[s]}
                    for u, s in shown
                ],
            }
            if len(rows) == limit:
                out["cursor"] = rows[-1][0]
            return out

        return await self._run(viewer, q)

    async def get_lists(
        self,
        actor: str,
        viewer: str | None,
        limit: int,
        cursor: str | None,
        purposes: Sequence[str] = (),
    ) -> dict[str, Any]:
        """app.bsky.graph.getLists: an actor's lists (moderation and curation lists
        unless ``purposes`` names others), newest first."""
        wanted = [_PURPOSE_NAMES.get(p) for p in purposes] if purposes else None
        kinds = [p for p in wanted if p] if wanted else [graph.MODLIST, graph.CURATELIST]

        def q(r: _Read) -> dict[str, Any]:
            did = r.resolve(actor)
            if not kinds:
                return {"lists": []}
            rows = r.conn.execute(
                "SELECT uri FROM lists WHERE did = ? AND uri < ?"
                f" AND purpose IN ({_marks(len(kinds))}) ORDER BY uri DESC LIMIT ?",
                [did, cursor or "\uffff", *kinds, limit],
            ).fetchall()
            views = _list_views(r, [row[0] for row in rows])
            out: dict[str, Any] = {"lists": [views[row[0]] for row in rows if row[0] in views]}
            if len(rows) == limit:
                out["cursor"] = rows[-1][0]
            return out

        return await self._run(viewer, q)

    async def list_feed(
        self, uri: str, viewer: str | None, limit: int, cursor: str | None
    ) -> dict[str, Any]:
        """app.bsky.feed.getListFeed: posts by the list's members, newest first."""
        at, after = _cursor(cursor)

        def q(r: _Read) -> dict[str, Any]:
            r._served(graph._did_of(uri))
            if r.conn.execute("SELECT 1 FROM lists WHERE uri = ?", (uri,)).fetchone() is None:
                raise ListNotFound(f"List not found: {uri}")
            members = r.conn.execute(
                "SELECT subject FROM list_items WHERE list = ?"
                " GROUP BY subject ORDER BY MAX(uri) DESC LIMIT ?",
                (uri, MAX_LIST_FEED_MEMBERS),
            ).fetchall()
            # One index range per member, each at most a page long, then the newest
            # page of them all: the work is bounded by members x page, not by how
            # much the members ever posted.
            found: list[tuple[str, str]] = []
            for (member,) in members:
                found += r.conn.execute(
                    "SELECT uri, sort_at FROM posts WHERE did = ? AND (sort_at, uri) < (?, ?)"
                    " ORDER BY sort_at DESC, uri DESC LIMIT ?",
                    (member, at, after or "\uffff", limit),
                ).fetchall()
            rows = heapq.nlargest(limit, found, key=lambda row: (row[1], row[0]))
            out: dict[str, Any] = {"feed": r.feed([(u, s, None, None) for u, s in rows])}
            if len(rows) == limit:
                out["cursor"] = f"{rows[-1][1]}::{rows[-1][0]}"
            return out

        return await self._run(viewer, q)

    async def _subscribed(
        self, viewer: str, table: str, limit: int, cursor: str | None
    ) -> dict[str, Any]:
        def q(r: _Read) -> dict[str, Any]:
            rows = r.conn.execute(
                f"SELECT list FROM {table} WHERE did = ? AND list < ? ORDER BY list DESC LIMIT ?",
                (viewer, cursor or "\uffff", limit),
            ).fetchall()
            views = _list_views(r, [row[0] for row in rows])
            out: dict[str, Any] = {"lists": [views[row[0]] for row in rows if row[0] in views]}
            if len(rows) == limit:
                out["cursor"] = rows[-1][0]
            return out

        return await self._run(viewer, q)

    async def list_mutes(self, viewer: str, limit: int, cursor: str | None) -> dict[str, Any]:
        """app.bsky.graph.getListMutes: the lists ``viewer`` muted."""
        return await self._subscribed(viewer, "list_mutes", limit, cursor)

    async def list_blocks(self, viewer: str, limit: int, cursor: str | None) -> dict[str, Any]:
        """app.bsky.graph.getListBlocks: the lists ``viewer`` blocks with listblocks."""
        return await self._subscribed(viewer, "list_blocks", limit, cursor)

    # -- private settings -----------------------------------------------------------------
    async def mute_list(self, viewer: str, uri: str) -> None:
        def w(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT purpose FROM lists WHERE uri = ?", (uri,)).fetchone()
            if row is None:
                raise ListNotFound(f"List not found: {uri}")
            if row[0] != graph.MODLIST:
                raise RemoteProtocolError("only moderation lists can be muted")
            count = conn.execute(
                "SELECT COUNT(*) FROM list_mutes WHERE did = ?", (viewer,)
            ).fetchone()[0]
            if count >= MAX_LIST_MUTES:
                raise RemoteProtocolError(f"at most {MAX_LIST_MUTES} muted lists")
            conn.execute(
                "INSERT OR IGNORE INTO list_mutes VALUES (?, ?, ?)", (viewer, uri, iso_now())
            )

        await self.storage.write(w)

    async def unmute_list(self, viewer: str, uri: str) -> None:
        await self.storage.write(
            lambda conn: conn.execute(
                "DELETE FROM list_mutes WHERE did = ? AND list = ?", (viewer, uri)
            )
        )

    async def mute_thread(self, viewer: str, root: str) -> None:
        def w(conn: sqlite3.Connection) -> None:
            count = conn.execute(
                "SELECT COUNT(*) FROM thread_mutes WHERE did = ?", (viewer,)
            ).fetchone()[0]
            if count >= MAX_THREAD_MUTES:
                raise RemoteProtocolError(f"at most {MAX_THREAD_MUTES} muted threads")
            conn.execute(
                "INSERT OR IGNORE INTO thread_mutes VALUES (?, ?, ?)", (viewer, root, iso_now())
            )

        await self.storage.write(w)

    async def unmute_thread(self, viewer: str, root: str) -> None:
        await self.storage.write(
            lambda conn: conn.execute(
                "DELETE FROM thread_mutes WHERE did = ? AND root = ?", (viewer, root)
            )
        )

    # -- labelers -------------------------------------------------------------------------
    async def labelers(
        self, dids: Sequence[str], viewer: str | None, detailed: bool
    ) -> dict[str, Any]:
        """app.bsky.labeler.getServices: views of the labelers among ``dids`` that
        declared themselves with an app.bsky.labeler.service record."""
        wanted = [d for d in dict.fromkeys(dids) if is_valid_did(d)]

        def q(r: _Read) -> dict[str, Any]:
            if not wanted:
                return {"views": []}
            rows = r.conn.execute(
                "SELECT s.did, s.uri, s.cid, s.indexed_at, b.data FROM labeler_services s"
                f" JOIN blocks b ON b.cid = s.cid WHERE s.did IN ({_marks(len(wanted))})",
                wanted,
            ).fetchall()
            # A labeler one mutes or blocks is still a labeler one may look up (to
            # unsubscribe, say); one taken down here is not served.
            gone = {
                row[0]
                for row in r.conn.execute(
                    "SELECT did FROM takedowns WHERE reversed_at IS NULL"
                    " AND instr(scopes, 'serve') > 0"
                )
            }
            rows = [row for row in rows if row[0] not in gone]
            creators = {p["did"]: p for p in r.profile_views([row[0] for row in rows])}
            uris = [row[1] for row in rows]
            likes: dict[str, int] = {}
            mine: dict[str, str] = {}
            if uris:
                m = _marks(len(uris))
                likes = dict(
                    r.conn.execute(
                        f"SELECT subject, COUNT(*) FROM likes WHERE subject IN ({m})"
                        " GROUP BY subject",
                        uris,
                    ).fetchall()
                )
                if r.viewer is not None:
                    for like, subject in r.conn.execute(
                        f"SELECT uri, subject FROM likes WHERE did = ? AND subject IN ({m})",
                        [r.viewer, *uris],
                    ):
                        mine[subject] = like
            by_did = {row[0]: row for row in rows}
            views: list[dict[str, Any]] = []
            for did in wanted:
                if did not in by_did:
                    continue
                _, uri, cid, indexed_at, data = by_did[did]
                view: dict[str, Any] = {
                    "$type": "app.bsky.labeler.defs#labelerView",
                    "uri": uri,
                    "cid": str(CID.from_bytes(cid)),
                    "creator": creators[did],
                    "likeCount": likes.get(uri, 0),
                    "viewer": {"like": mine[uri]} if uri in mine else {},
                    "indexedAt": indexed_at,
                    "labels": [],
                }
                if detailed:
                    record = _record_json(cid, data) or {}
                    view["$type"] = "app.bsky.labeler.defs#labelerViewDetailed"
                    view["policies"] = _policies(record.get("policies"))
                    for key in ("reasonTypes", "subjectTypes", "subjectCollections"):
                        value = record.get(key)
                        if isinstance(value, list) and all(isinstance(v, str) for v in value):
                            view[key] = value
                views.append(view)
            return {"views": views}

        return await self._run(viewer, q)

    async def is_labeler(self, did: str) -> bool:
        """Has ``did`` declared itself a labeler (a service record this node holds)?"""
        row = await self.storage.read(
            lambda conn: conn.execute(
                "SELECT 1 FROM labeler_services WHERE did = ?", (did,)
            ).fetchone()
        )
        return row is not None


def _policies(value: Any) -> dict[str, Any]:
    """LabelerPolicies as the declaration gave them, with ``labelValues`` kept to
    strings (the one required field)."""
    policies = dict(value) if isinstance(value, dict) else {}
    values = policies.get("labelValues")
    policies["labelValues"] = (
        [v for v in values if isinstance(v, str)] if isinstance(values, list) else []
    )
    defs = policies.get("labelValueDefinitions")
    if defs is not None and not isinstance(defs, list):
        del policies["labelValueDefinitions"]
    return policies
