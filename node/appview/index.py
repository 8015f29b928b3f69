"""The node's indexes of app.bsky records, kept in step with its repos.

Every node plays the part atproto gives an AppView: it indexes the records it holds
(local or gossiped) so that views (timelines, threads, profiles) come from its own
tables. Indexing happens inside the transaction that stores the commit, so an index
is never ahead of, or behind, the repos it describes. Records that do not parse as
the lexicon says are stored in the repo but not indexed (a relay does not judge).
"""

from __future__ import annotations

import datetime
import sqlite3
from typing import Any

from protocol.encoding import decode
from protocol.errors import SkyfedError
from protocol.feedgen import GENERATOR, GeneratorDecl

from .graph import GRAPH_COLLECTIONS, index_graph_record, unindex_graph_record
from .notifications import forget, notify
from .search import index_post, unindex_post

__all__ = [
    "FEEDGEN_SCHEMA",
    "FEED_SCHEMA",
    "INDEX_SCHEMA",
    "index_record",
    "index_value",
    "normalize_time",
    "rebuild_feeds",
    "unindex_record",
]

INDEX_SCHEMA = """
CREATE TABLE posts (
    uri TEXT PRIMARY KEY,
    did TEXT NOT NULL,
    cid BLOB NOT NULL,
    created_at TEXT NOT NULL,
    indexed_at TEXT NOT NULL,
    sort_at TEXT NOT NULL,
    reply_root TEXT,
    reply_parent TEXT,
    quote TEXT
) WITHOUT ROWID;
CREATE INDEX posts_author ON posts (did, sort_at);
CREATE INDEX posts_sort ON posts (sort_at);
CREATE INDEX posts_parent ON posts (reply_parent);
CREATE INDEX posts_quote ON posts (quote);
CREATE TABLE likes (
    uri TEXT PRIMARY KEY,
    did TEXT NOT NULL,
    subject TEXT NOT NULL,
    created_at TEXT NOT NULL,
    indexed_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX likes_subject ON likes (subject, indexed_at);
CREATE INDEX likes_actor ON likes (did, subject);
CREATE TABLE reposts (
    uri TEXT PRIMARY KEY,
    did TEXT NOT NULL,
    subject TEXT NOT NULL,
    created_at TEXT NOT NULL,
    indexed_at TEXT NOT NULL,
    sort_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX reposts_subject ON reposts (subject, indexed_at);
CREATE INDEX reposts_actor ON reposts (did, sort_at);
CREATE TABLE follows (
    uri TEXT PRIMARY KEY,
    did TEXT NOT NULL,
    subject TEXT NOT NULL,
    created_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX follows_actor ON follows (did, subject);
CREATE INDEX follows_subject ON follows (subject, did);
CREATE TABLE graph_blocks (
    uri TEXT PRIMARY KEY,
    did TEXT NOT NULL,
    subject TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX graph_blocks_actor ON graph_blocks (did, subject);
CREATE INDEX graph_blocks_subject ON graph_blocks (subject, did);
CREATE TABLE profiles (
    did TEXT PRIMARY KEY,
    display_name TEXT,
    description TEXT,
    indexed_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE post_stats (
    uri TEXT PRIMARY KEY,
    replies INTEGER NOT NULL DEFAULT 0,
    likes INTEGER NOT NULL DEFAULT 0,
    reposts INTEGER NOT NULL DEFAULT 0,
    quotes INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE actor_stats (
    did TEXT PRIMARY KEY,
    posts INTEGER NOT NULL DEFAULT 0,
    follows INTEGER NOT NULL DEFAULT 0,
    followers INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
"""


# Timelines are written at index time (fan-out on write) for the accounts hosted
# here: reading one is then a single index range, not a sort over every post of
# every followed account. ``source`` is the record that put the item there (the post
# itself, or a repost of it); ``actor`` is who made that record.
FEED_SCHEMA = """
CREATE TABLE feed_items (
    viewer TEXT NOT NULL,
    sort_at TEXT NOT NULL,
    source TEXT NOT NULL,
    subject TEXT NOT NULL,
    actor TEXT NOT NULL,
    reposted_at TEXT,
    PRIMARY KEY (viewer, sort_at, source)
) WITHOUT ROWID;
CREATE INDEX feed_items_source ON feed_items (source);
CREATE INDEX feed_items_actor ON feed_items (viewer, actor);
"""

# Feed generator declarations (node/appview/feeds.py): one row per record, keyed by
# its AT-URI; ``service`` is the DID of the service that answers for the feed. Likes
# of a generator land in post_stats under its URI like those of a post. An account's
# likes newest first (getActorLikes) read likes_actor_time.
FEEDGEN_SCHEMA = """
CREATE TABLE IF NOT EXISTS feed_generators (
    uri TEXT PRIMARY KEY,
    did TEXT NOT NULL,
    rkey TEXT NOT NULL,
    cid BLOB NOT NULL,
    service TEXT NOT NULL,
    indexed_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS feed_generators_creator ON feed_generators (did, rkey);
CREATE INDEX IF NOT EXISTS feed_generators_service ON feed_generators (service, rkey);
CREATE INDEX IF NOT EXISTS likes_actor_time ON likes (did, indexed_at, subject);
"""

#: Posts and reposts copied into a timeline when its owner follows someone.
BACKFILL = 100


def _fan_out(
    conn: sqlite3.Connection,
    actor: str,
    sort_at: str,
    source: str,
    subject: str,
    reposted_at: str | None,
) -> None:
    """Put an item in the timeline of every hosted account that follows ``actor``
    (and in the actor's own, if hosted here)."""
    conn.execute(
        "INSERT OR IGNORE INTO feed_items"
        " SELECT f.did, ?, ?, ?, ?, ? FROM follows f JOIN accounts a ON a.did = f.did"
        " WHERE f.subject = ?"
        " UNION SELECT did, ?, ?, ?, ?, ? FROM accounts WHERE did = ?",
        (
            sort_at,
            source,
            subject,
            actor,
            reposted_at,
            actor,
            sort_at,
            source,
            subject,
            actor,
            reposted_at,
            actor,
        ),
    )


def _backfill(conn: sqlite3.Connection, viewer: str, actor: str) -> None:
    """``viewer`` (hosted here) now follows ``actor``: copy actor's recent items in."""
    if conn.execute("SELECT 1 FROM accounts WHERE did = ?", (viewer,)).fetchone() is None:
        return
    conn.execute(
        "INSERT OR IGNORE INTO feed_items SELECT ?, sort_at, uri, uri, did, NULL FROM"
        " (SELECT sort_at, uri, did FROM posts WHERE did = ? ORDER BY sort_at DESC LIMIT ?) AS p",
        (viewer, actor, BACKFILL),
    )
    conn.execute(
        "INSERT OR IGNORE INTO feed_items SELECT ?, sort_at, uri, subject, did, indexed_at FROM"
        " (SELECT sort_at, uri, subject, did, indexed_at FROM reposts WHERE did = ?"
        " ORDER BY sort_at DESC LIMIT ?) AS r",
        (viewer, actor, BACKFILL),
    )


def rebuild_feeds(conn: sqlite3.Connection) -> None:
    """Build every hosted account's timeline from the indexes (after an upgrade)."""
    conn.execute("DELETE FROM feed_items")
    viewers = [r[0] for r in conn.execute("SELECT did FROM accounts").fetchall()]
    for viewer in viewers:
        _backfill(conn, viewer, viewer)
        follows = conn.execute("SELECT subject FROM follows WHERE did = ?", (viewer,))
        for (subject,) in follows.fetchall():
            _backfill(conn, viewer, subject)


def normalize_time(value: Any) -> str | None:
    """An atproto datetime as UTC with milliseconds and a Z, so strings sort in time
    order; None if it does not parse."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        t = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    if t.tzinfo is None:
        return None
    t = t.astimezone(datetime.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _bump(conn: sqlite3.Connection, table: str, key_col: str, key: str, col: str, by: int) -> None:
    if by > 0:  # one statement: a count never goes below 0 by adding
        conn.execute(
            f"INSERT INTO {table} ({key_col}, {col}) VALUES (?, ?)"
            f" ON CONFLICT ({key_col}) DO UPDATE SET {col} = {table}.{col} + excluded.{col}",
            (key, by),
        )
        return
    conn.execute(f"INSERT OR IGNORE INTO {table} ({key_col}) VALUES (?)", (key,))
    conn.execute(f"UPDATE {table} SET {col} = MAX(0, {col} + ?) WHERE {key_col} = ?", (by, key))


def _ref_uri(value: Any) -> str | None:
    if isinstance(value, dict):
        uri = value.get("uri")
        if isinstance(uri, str) and uri.startswith("at://") and len(uri) < 8192:
            return uri
    return None


def unindex_record(conn: sqlite3.Connection, did: str, collection: str, rkey: str) -> None:
    """Remove a record's index rows (delete, or before an update re-indexes it)."""
    uri = f"at://{did}/{collection}/{rkey}"
    # Notifications and search leave with the record, in this transaction.
    forget(conn, uri)
    if collection == "app.bsky.feed.post":
        unindex_post(conn, uri)
        row = conn.execute("SELECT reply_parent, quote FROM posts WHERE uri = ?", (uri,)).fetchone()
        if row is not None:
            conn.execute("DELETE FROM posts WHERE uri = ?", (uri,))
            conn.execute("DELETE FROM feed_items WHERE source = ?", (uri,))
            _bump(conn, "actor_stats", "did", did, "posts", -1)
            if row[0]:
                _bump(conn, "post_stats", "uri", row[0], "replies", -1)
            if row[1]:
                _bump(conn, "post_stats", "uri", row[1], "quotes", -1)
    elif collection == "app.bsky.feed.like":
        row = conn.execute("SELECT subject FROM likes WHERE uri = ?", (uri,)).fetchone()
        if row is not None:
            conn.execute("DELETE FROM likes WHERE uri = ?", (uri,))
            _bump(conn, "post_stats", "uri", row[0], "likes", -1)
    elif collection == "app.bsky.feed.repost":
        row = conn.execute("SELECT subject FROM reposts WHERE uri = ?", (uri,)).fetchone()
        if row is not None:
            conn.execute("DELETE FROM reposts WHERE uri = ?", (uri,))
            conn.execute("DELETE FROM feed_items WHERE source = ?", (uri,))
            _bump(conn, "post_stats", "uri", row[0], "reposts", -1)
    elif collection == "app.bsky.graph.follow":
        row = conn.execute("SELECT subject FROM follows WHERE uri = ?", (uri,)).fetchone()
        if row is not None:
            conn.execute("DELETE FROM follows WHERE uri = ?", (uri,))
            conn.execute("DELETE FROM feed_items WHERE viewer = ? AND actor = ?", (did, row[0]))
            _bump(conn, "actor_stats", "did", did, "follows", -1)
            _bump(conn, "actor_stats", "did", row[0], "followers", -1)
    elif collection == "app.bsky.graph.block":
        conn.execute("DELETE FROM graph_blocks WHERE uri = ?", (uri,))
    elif collection == "app.bsky.actor.profile" and rkey == "self":
        conn.execute("DELETE FROM profiles WHERE did = ?", (did,))
    elif collection == GENERATOR:
        conn.execute("DELETE FROM feed_generators WHERE uri = ?", (uri,))
    elif collection in GRAPH_COLLECTIONS:
        unindex_graph_record(conn, did, collection, rkey)


def index_record(
    conn: sqlite3.Connection,
    did: str,
    collection: str,
    rkey: str,
    block: bytes,
    cid: bytes,
    indexed_at: str,
) -> None:
    """Index one stored record (after :func:`unindex_record` for an update)."""
    try:
        value = decode(block)
    except SkyfedError:
        return
    index_value(conn, did, collection, rkey, value, cid, indexed_at)


def index_value(
    conn: sqlite3.Connection,
    did: str,
    collection: str,
    rkey: str,
    value: Any,
    cid: bytes,
    indexed_at: str,
) -> None:
    """Index one decoded record: a map whose text fields (``text``, ``createdAt``,
    ``subject``, strong refs' ``uri``) are ``str``; links and bytes are not read, so
    skyfed's msgpack values and the JSON form of atproto's DAG-CBOR both do."""
    if not isinstance(value, dict):
        return
    uri = f"at://{did}/{collection}/{rkey}"
    created = normalize_time(value.get("createdAt")) or indexed_at
    sort_at = min(created, indexed_at)  # a backdated record sorts when it was made
    if collection == "app.bsky.feed.post":
        if not isinstance(value.get("text"), str):
            return
        reply = value.get("reply")
        root = _ref_uri(reply.get("root")) if isinstance(reply, dict) else None
        parent = _ref_uri(reply.get("parent")) if isinstance(reply, dict) else None
        embed = value.get("embed")
        quote = None
        if isinstance(embed, dict):
            inner = embed.get("record")
            # recordWithMedia nests the strong ref one level deeper
            quote = _ref_uri(inner) or (
                _ref_uri(inner.get("record")) if isinstance(inner, dict) else None
            )
        conn.execute(
            "INSERT OR REPLACE INTO posts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (uri, did, cid, created, indexed_at, sort_at, root, parent, quote),
        )
        _bump(conn, "actor_stats", "did", did, "posts", 1)
        _fan_out(conn, did, sort_at, uri, uri, None)
        index_post(conn, uri, did, value, sort_at)
        notify(
            conn,
            did=did,
            collection=collection,
            uri=uri,
            cid=cid,
            sort_at=sort_at,
            value=value,
            parent=parent,
            root=root,
            quote=quote,
        )
        if parent:
            _bump(conn, "post_stats", "uri", parent, "replies", 1)
        if quote:
            _bump(conn, "post_stats", "uri", quote, "quotes", 1)
    elif collection in ("app.bsky.feed.like", "app.bsky.feed.repost"):
        subject = _ref_uri(value.get("subject"))
        if subject is None:
            return
        if collection == "app.bsky.feed.like":
            conn.execute(
                "INSERT OR REPLACE INTO likes VALUES (?, ?, ?, ?, ?)",
                (uri, did, subject, created, indexed_at),
            )
            _bump(conn, "post_stats", "uri", subject, "likes", 1)
        else:
            conn.execute(
                "INSERT OR REPLACE INTO reposts VALUES (?, ?, ?, ?, ?, ?)",
                (uri, did, subject, created, indexed_at, sort_at),
            )
            _bump(conn, "post_stats", "uri", subject, "reposts", 1)
            _fan_out(conn, did, sort_at, uri, subject, indexed_at)
        notify(
            conn,
            did=did,
            collection=collection,
            uri=uri,
            cid=cid,
            sort_at=sort_at,
            value=value,
            subject=subject,
        )
    elif collection in ("app.bsky.graph.follow", "app.bsky.graph.block"):
        target = value.get("subject")
        if not isinstance(target, str) or not target.startswith("did:") or len(target) > 2048:
            return
        if collection == "app.bsky.graph.follow":
            conn.execute(
                "INSERT OR REPLACE INTO follows VALUES (?, ?, ?, ?)", (uri, did, target, created)
            )
            _bump(conn, "actor_stats", "did", did, "follows", 1)
            _bump(conn, "actor_stats", "did", target, "followers", 1)
            _backfill(conn, did, target)
            notify(
                conn,
                did=did,
                collection=collection,
                uri=uri,
                cid=cid,
                sort_at=sort_at,
                value=value,
                subject=target,
            )
        else:
            conn.execute("INSERT OR REPLACE INTO graph_blocks VALUES (?, ?, ?)", (uri, did, target))
    elif collection == "app.bsky.actor.profile" and rkey == "self":
        name = value.get("displayName")
        desc = value.get("description")
        conn.execute(
            "INSERT OR REPLACE INTO profiles VALUES (?, ?, ?, ?)",
            (
                did,
                name if isinstance(name, str) else None,
                desc if isinstance(desc, str) else None,
                indexed_at,
            ),
        )
    elif collection == GENERATOR:
        decl = GeneratorDecl.from_record(value)
        if decl is not None:
            conn.execute(
                "INSERT OR REPLACE INTO feed_generators VALUES (?, ?, ?, ?, ?, ?)",
                (uri, did, rkey, cid, decl.did, indexed_at),
            )
    elif collection in GRAPH_COLLECTIONS:
        # lists, list items, listblocks, gates, labeler declarations: node/appview/graph.py
        index_graph_record(conn, did, collection, rkey, value, cid, created, indexed_at)
