"""Notifications for the accounts this node hosts, written when a record is indexed.

A like, repost, follow, reply, mention or quote that arrives from anywhere on the
network (a local write, gossip, a repo sync) is indexed by node/appview/index.py in
the transaction that stores it; :func:`notify` runs there and writes one row per
hosted recipient into ``notifications``. :func:`forget` removes them in the
transaction that deletes the record. Reading a page is then one range of one index
(``recipient, sort_at``) instead of a union over every post the recipient ever made
(bench/RESULTS.md compares the two).

Who gets what (Bluesky's rules, simplified): the subject's author for a like or
repost, the followed account for a follow, the parent's and the root's authors for a
reply, the quoted post's author for a quote, and every mentioned DID (at most
:data:`~node.appview.search.MAX_FACETS`) not already notified of the post. Nobody is
notified of their own records. Authors the reader blocks, is blocked by or mutes,
and accounts taken down here, are left out when the page is read (so an unblock
shows them again). ``sort_at`` is the record's own time or when it was indexed,
whichever is earlier, so a backfilled old like does not show up as new.

A thread the reader muted (``muteThread``, node/appview/graph.py) is left out of
listNotifications: replies and mentions in it, likes, reposts and quotes of its posts.
getUnreadCount does not look at thread mutes (it counts in SQL only), so it can count
a few more than the list shows.

The read state is one ``seenAt`` per account (``updateSeen``), clamped to the node's
clock so a client cannot mark the future as read. ``getUnreadCount`` counts at most
:data:`MAX_UNREAD_COUNT`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from protocol.cid import CID
from protocol.errors import RemoteProtocolError

from .search import mentioned_dids

if TYPE_CHECKING:
    from ..store.sqlite import SqliteStorage
    from .views import _Read

# index.py (imported by the storage layer) calls notify() and forget(); the read side
# needs views.py, which needs the storage layer, so it is imported when first used.

__all__ = [
    "MAX_UNREAD_COUNT",
    "NOTIFICATIONS_SCHEMA",
    "REASONS",
    "Notifications",
    "forget",
    "notifications_page",
    "notify",
    "rebuild_notifications",
]

#: The reasons this node writes (listNotifications' ``reasons`` filter takes these).
REASONS = ("like", "repost", "follow", "reply", "mention", "quote")
#: getUnreadCount stops counting here (a client shows "many" past a few dozen anyway).
MAX_UNREAD_COUNT = 10_000

NOTIFICATIONS_SCHEMA = """
CREATE TABLE IF NOT EXISTS notifications (
    recipient TEXT NOT NULL,
    sort_at TEXT NOT NULL,
    uri TEXT NOT NULL,
    reason TEXT NOT NULL,
    reason_subject TEXT,
    author TEXT NOT NULL,
    cid BLOB NOT NULL,
    cid_text TEXT NOT NULL,
    PRIMARY KEY (recipient, sort_at, uri)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS notifications_reason ON notifications (recipient, reason, sort_at);
CREATE INDEX IF NOT EXISTS notifications_uri ON notifications (uri);
CREATE TABLE IF NOT EXISTS notification_seen (
    did TEXT PRIMARY KEY,
    seen_at TEXT NOT NULL
) WITHOUT ROWID;
"""


def _did_of(uri: str | None) -> str | None:
    if not uri or not uri.startswith("at://"):
        return None
    return uri[5:].split("/", 1)[0]


def _hosted(conn: sqlite3.Connection, did: str) -> bool:
    return conn.execute("SELECT 1 FROM accounts WHERE did = ?", (did,)).fetchone() is not None


def notify(
    conn: sqlite3.Connection,
    *,
    did: str,
    collection: str,
    uri: str,
    cid: bytes,
    sort_at: str,
    value: dict[str, Any],
    subject: str | None = None,
    parent: str | None = None,
    root: str | None = None,
    quote: str | None = None,
) -> None:
    """Write the notifications a just-indexed record gives hosted accounts.
    ``subject`` is a like's or repost's post URI or a follow's DID."""
    wanted: list[tuple[str, str, str | None]] = []  # (recipient, reason, reason subject)
    if collection == "app.bsky.feed.like":
        wanted.append((_did_of(subject) or "", "like", subject))
    elif collection == "app.bsky.feed.repost":
        wanted.append((_did_of(subject) or "", "repost", subject))
    elif collection == "app.bsky.graph.follow" and subject is not None:
        wanted.append((subject, "follow", None))
    elif collection == "app.bsky.feed.post":
        if parent is not None:
            wanted.append((_did_of(parent) or "", "reply", parent))
        if root is not None and root != parent:
            wanted.append((_did_of(root) or "", "reply", root))
        if quote is not None:
            wanted.append((_did_of(quote) or "", "quote", quote))
        wanted.extend((m, "mention", None) for m in mentioned_dids(value))
    done: set[str] = set()
    text = ""
    for recipient, reason, reason_subject in wanted:
        if not recipient or recipient == did or recipient in done:
            continue
        done.add(recipient)
        if not _hosted(conn, recipient):
            continue
        # Its text once, here: base32 in Python costs more than the rest of a page.
        text = text or CID.from_bytes(cid).to_str()
        conn.execute(
            "INSERT OR IGNORE INTO notifications VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (recipient, sort_at, uri, reason, reason_subject, did, cid, text),
        )


def forget(conn: sqlite3.Connection, uri: str) -> None:
    """Remove what a deleted (or about to be re-indexed) record notified."""
    conn.execute("DELETE FROM notifications WHERE uri = ?", (uri,))


def rebuild_notifications(conn: sqlite3.Connection) -> None:
    """Fill ``notifications`` from the indexes (a database from before it)."""
    from protocol.encoding import decode
    from protocol.errors import SkyfedError

    conn.execute("DELETE FROM notifications")

    def cid_of(uri: str) -> bytes | None:
        did, collection, rkey = uri[len("at://") :].split("/", 2)
        row = conn.execute(
            "SELECT cid FROM records WHERE did = ? AND collection = ? AND rkey = ?",
            (did, collection, rkey),
        ).fetchone()
        return None if row is None else bytes(row[0])

    posts = conn.execute(
        "SELECT p.uri, p.did, p.cid, p.sort_at, p.reply_parent, p.reply_root, p.quote, b.data"
        " FROM posts p JOIN blocks b ON b.cid = p.cid"
    ).fetchall()
    for uri, did, cid, sort_at, parent, root, quote, data in posts:
        try:
            value = decode(data)
        except SkyfedError:
            continue
        if isinstance(value, dict):
            notify(
                conn,
                did=did,
                collection="app.bsky.feed.post",
                uri=uri,
                cid=cid,
                sort_at=sort_at,
                value=value,
                parent=parent,
                root=root,
                quote=quote,
            )
    for collection, table in (("app.bsky.feed.like", "likes"), ("app.bsky.feed.repost", "reposts")):
        rows = conn.execute(
            f"SELECT uri, did, subject, min(created_at, indexed_at) FROM {table}"
        ).fetchall()
        for uri, did, subject, sort_at in rows:
            cid = cid_of(uri)
            if cid is not None:
                notify(
                    conn,
                    did=did,
                    collection=collection,
                    uri=uri,
                    cid=cid,
                    sort_at=sort_at,
                    value={},
                    subject=subject,
                )
    for uri, did, subject, sort_at in conn.execute(
        "SELECT uri, did, subject, created_at FROM follows"
    ).fetchall():
        cid = cid_of(uri)
        if cid is not None:
            notify(
                conn,
                did=did,
                collection="app.bsky.graph.follow",
                uri=uri,
                cid=cid,
                sort_at=sort_at,
                value={},
                subject=subject,
            )


def _cursor(value: str | None) -> tuple[str, str]:
    if not value:
        return "\uffff", "\uffff"
    sort_at, sep, uri = value.partition("::")
    if not sep or len(value) > 8192:
        raise RemoteProtocolError("malformed cursor")
    return sort_at, uri


class Notifications:
    """listNotifications, getUnreadCount and updateSeen for hosted accounts."""

    def __init__(self, storage: SqliteStorage):
        self.storage = storage
        #: This node's URL (set by the wiring once it is known), for media URLs.
        self.base_url: Callable[[], str] = lambda: ""

    async def list(
        self,
        viewer: str,
        limit: int,
        cursor: str | None,
        reasons: Sequence[str] = (),
        *,
        public: bool = False,
    ) -> dict[str, Any]:
        """A page of ``viewer``'s notifications. ``public``: as anyone may see them
        (the web page): no read state, and hidden only what this node hides from
        everyone, since applying the account's own mutes would show whom it mutes."""
        from .views import _Read

        base = self.base_url()

        def q(conn: sqlite3.Connection) -> dict[str, Any]:
            r = _Read(conn, None if public else viewer, base)
            return notifications_page(r, viewer, limit, cursor, tuple(reasons))

        result: dict[str, Any] = await self.storage.read(q)
        return result

    async def unread_count(self, viewer: str, seen_at: str | None = None) -> int:
        from .views import _marks, _Read

        def q(conn: sqlite3.Connection) -> int:
            seen = seen_at or _seen_at(conn, viewer) or ""
            hidden = sorted(_Read(conn, viewer).hidden())
            # The hidden set is small (blocks, mutes, takedowns); counted in SQL.
            # The subquery named and no empty "NOT IN ()": PostgreSQL takes neither.
            unhidden = f" WHERE author NOT IN ({_marks(len(hidden))})" if hidden else ""
            row = conn.execute(
                "SELECT count(*) FROM (SELECT author FROM notifications"
                " WHERE recipient = ? AND sort_at > ? ORDER BY sort_at DESC LIMIT ?) AS recent"
                + unhidden,
                (viewer, seen, MAX_UNREAD_COUNT, *hidden),
            ).fetchone()
            return int(row[0])

        return await self.storage.read(q)

    async def update_seen(self, viewer: str, seen_at: str) -> None:
        def w(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO notification_seen VALUES (?, ?)"
                " ON CONFLICT (did) DO UPDATE SET seen_at = excluded.seen_at",
                (viewer, seen_at),
            )

        await self.storage.write(w)


def notifications_page(
    r: _Read, recipient: str, limit: int, cursor: str | None, reasons: Sequence[str] = ()
) -> dict[str, Any]:
    """listNotifications: a page of ``recipient``'s notifications, as ``r.viewer`` may
    see them: the recipient itself (read state, its own mutes), or no one (``r.viewer``
    None: the public web page, hidden only what this node hides from everyone).
    A module-level function of one read, so a worker process can run it too
    (node/appview/render.py)."""
    from .views import _marks, _record_json

    conn = r.conn
    public = r.viewer is None
    at, after = _cursor(cursor)
    wanted = [reason for reason in REASONS if reason in reasons]
    if reasons and not wanted:
        # Only reasons this node never writes (starterpack-joined, verified, ...).
        return {"notifications": []}
    cols = "sort_at, uri, reason, reason_subject, author, cid, cid_text"
    if not wanted:
        rows = conn.execute(
            f"SELECT {cols} FROM notifications WHERE recipient = ?"
            " AND (sort_at, uri) < (?, ?) ORDER BY sort_at DESC, uri DESC LIMIT ?",
            (recipient, at, after, limit),
        ).fetchall()
    else:
        # One range of (recipient, reason, sort_at) per reason, merged.
        rows = []
        for reason in wanted:
            rows += conn.execute(
                f"SELECT {cols} FROM notifications WHERE recipient = ? AND reason = ?"
                " AND (sort_at, uri) < (?, ?) ORDER BY sort_at DESC, uri DESC LIMIT ?",
                (recipient, reason, at, after, limit),
            ).fetchall()
        rows.sort(key=lambda row: (row[0], row[1]), reverse=True)
        rows = rows[:limit]
    seen = None if public else _seen_at(conn, recipient)
    hidden = r.hidden()
    shown = [row for row in rows if row[4] not in hidden]
    records: dict[bytes, bytes] = {}
    cids = list({row[5] for row in shown})
    for i in range(0, len(cids), 500):
        chunk = cids[i : i + 500]
        records.update(
            conn.execute(
                f"SELECT cid, data FROM blocks WHERE cid IN ({_marks(len(chunk))})", chunk
            ).fetchall()
        )
    authors = {p["did"]: p for p in r.profile_views([row[4] for row in shown])}
    out_list = []
    muted = set() if public else _in_muted_threads(conn, recipient, shown, records)
    for sort_at, uri, reason, reason_subject, author, cid, cid_text in shown:
        data = records.get(cid)
        record = _record_json(cid, data) if data is not None else None
        if record is None or uri in muted:
            continue
        item: dict[str, Any] = {
            "uri": uri,
            "cid": cid_text,
            "author": authors[author],
            "reason": reason,
            "record": record,
            "isRead": seen is not None and sort_at <= seen,
            "indexedAt": sort_at,
            "labels": [],
        }
        if public:
            del item["isRead"]
        if reason_subject is not None:
            item["reasonSubject"] = reason_subject
        out_list.append(item)
    out: dict[str, Any] = {"notifications": out_list}
    if len(rows) == limit:
        out["cursor"] = f"{rows[-1][0]}::{rows[-1][1]}"
    if seen is not None:
        out["seenAt"] = seen
    return out


def _in_muted_threads(
    conn: sqlite3.Connection,
    viewer: str,
    rows: list[Any],
    records: dict[bytes, bytes],
) -> set[str]:
    """The notifications (by URI) about threads ``viewer`` muted (muteThread,
    node/appview/graph.py): a reply or mention in one, or a like, repost or quote of a
    post in one."""
    from .graph import muted_threads, thread_root
    from .views import _marks, _record_json

    if not conn.execute("SELECT 1 FROM thread_mutes WHERE did = ? LIMIT 1", (viewer,)).fetchone():
        return set()
    subjects = [row[3] for row in rows if row[2] in ("like", "repost", "quote") and row[3]]
    subject_root: dict[str, str] = {}
    for i in range(0, len(subjects), 500):
        chunk = subjects[i : i + 500]
        for uri, root in conn.execute(
            f"SELECT uri, reply_root FROM posts WHERE uri IN ({_marks(len(chunk))})", chunk
        ):
            subject_root[uri] = root or uri
    root_of: dict[str, str] = {}
    for _, uri, reason, subject, _, cid, _ in rows:
        if reason in ("like", "repost", "quote") and subject:
            root_of[uri] = subject_root.get(subject, subject)
        elif reason in ("reply", "mention"):
            data = records.get(cid)
            record = _record_json(cid, data) if data is not None else None
            root_of[uri] = thread_root(uri, record or {})
    muted = muted_threads(conn, viewer, root_of.values())
    return {uri for uri, root in root_of.items() if root in muted}


def _seen_at(conn: sqlite3.Connection, did: str) -> str | None:
    row = conn.execute("SELECT seen_at FROM notification_seen WHERE did = ?", (did,)).fetchone()
    return None if row is None else str(row[0])
