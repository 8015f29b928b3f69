"""Full-text search over everything the node holds: posts and actors, with SQLite FTS5.

Posts: :func:`index_post` runs inside the transaction that indexes a post
(node/appview/index.py) and writes one row of ``post_search`` (the post's words,
author, languages, mentioned DIDs and linked domains), and :func:`unindex_post`
removes it in the transaction that deletes or edits the post. The FTS5 index
``post_fts`` (external content: ``post_search``) follows in the same transaction:
the writer's connection queues each new row and indexes a write group's rows once,
before its COMMIT (node/store/sqlite.py ``_POST_FTS_QUEUE``: FTS5 writes a segment
at every savepoint, and each write of a group runs in one). The row id is the
post's ``sort_at`` in milliseconds shifted left 16 bits (plus a hash of the URI in
the low bits), so "latest" is FTS5's own rowid order and ``since``/``until`` and the
cursor are rowid ranges: a page never sorts every match.

Actors: ``actor_search`` holds each DID's confirmed handle (node/accounts/handles.py)
and profile display name and description, kept by triggers on the ``handles`` and
``profiles`` tables, so whatever changes those changes the index in the same
transaction.

What a client types is never FTS5 syntax: :func:`parse_post_query` keeps only runs of
letters and digits (as FTS5's unicode61 tokenizer would), each quoted as a string, so
``"``, ``*``, ``NEAR(``, ``col:`` or ``AND`` are searched for as words or dropped, never
interpreted. Operators are ours: ``from:`` ``mentions:`` ``lang:`` ``since:`` ``until:``
``domain:``, ``"exact phrase"`` and ``-word``. Bounds: at most :data:`MAX_TERMS` words,
each at most :data:`MAX_TERM_CHARS`; "top" ranks at most :data:`TOP_WINDOW` newest
matches; actor searches look at :data:`ACTOR_WINDOW` matches at most.
"""

from __future__ import annotations

import datetime
import hashlib
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from protocol.errors import RemoteProtocolError

if TYPE_CHECKING:
    from ..store.sqlite import SqliteStorage

# index.py (imported by the storage layer) calls index_post() and unindex_post(); the
# read side needs views.py, which needs the storage layer, so it imports it when used.

__all__ = [
    "SEARCH_SCHEMA",
    "BadQueryString",
    "PostQuery",
    "Search",
    "SearchUnavailable",
    "actor_match",
    "index_post",
    "parse_post_query",
    "post_match",
    "rebuild_search",
    "time_rowid",
    "unindex_post",
]

#: Characters of a search query at most (Bluesky's own search takes a few hundred).
MAX_SEARCH_CHARS = 1000
#: Words (and phrases) in one query at most; more are refused.
MAX_TERMS = 16
#: Characters of one word at most (a longer one cannot be in a post's 3,000 bytes anyway).
MAX_TERM_CHARS = 100
#: Newest matches that "top" ranks by engagement (and pages through).
TOP_WINDOW = 500
#: Matches an actor search ranks (and pages through) at most.
ACTOR_WINDOW = 1000
#: Mentions and linked domains indexed per post at most.
MAX_FACETS = 32

SEARCH_SCHEMA = """
CREATE TABLE IF NOT EXISTS post_search (
    id INTEGER PRIMARY KEY,
    uri TEXT NOT NULL UNIQUE,
    did TEXT NOT NULL,
    text TEXT NOT NULL,
    author TEXT NOT NULL,
    lang TEXT NOT NULL,
    mentions TEXT NOT NULL,
    domains TEXT NOT NULL
);
CREATE VIRTUAL TABLE IF NOT EXISTS post_fts USING fts5(
    text, author, lang, mentions, domains,
    content='post_search', content_rowid='id',
    tokenize='unicode61 remove_diacritics 2'
);
CREATE TRIGGER IF NOT EXISTS post_search_ai AFTER INSERT ON post_search BEGIN
    INSERT INTO post_fts (rowid, text, author, lang, mentions, domains)
    VALUES (new.id, new.text, new.author, new.lang, new.mentions, new.domains);
END;
CREATE TRIGGER IF NOT EXISTS post_search_ad AFTER DELETE ON post_search BEGIN
    INSERT INTO post_fts (post_fts, rowid, text, author, lang, mentions, domains)
    VALUES ('delete', old.id, old.text, old.author, old.lang, old.mentions, old.domains);
END;
CREATE TABLE IF NOT EXISTS actor_search (
    id INTEGER PRIMARY KEY,
    did TEXT NOT NULL UNIQUE,
    handle TEXT,
    name TEXT,
    description TEXT
);
CREATE VIRTUAL TABLE IF NOT EXISTS actor_fts USING fts5(
    handle, name, description,
    content='actor_search', content_rowid='id',
    tokenize='unicode61 remove_diacritics 2', prefix='2 3'
);
CREATE TRIGGER IF NOT EXISTS actor_search_ai AFTER INSERT ON actor_search BEGIN
    INSERT INTO actor_fts (rowid, handle, name, description)
    VALUES (new.id, new.handle, new.name, new.description);
END;
CREATE TRIGGER IF NOT EXISTS actor_search_ad AFTER DELETE ON actor_search BEGIN
    INSERT INTO actor_fts (actor_fts, rowid, handle, name, description)
    VALUES ('delete', old.id, old.handle, old.name, old.description);
END;
CREATE TRIGGER IF NOT EXISTS actor_search_au AFTER UPDATE ON actor_search BEGIN
    INSERT INTO actor_fts (actor_fts, rowid, handle, name, description)
    VALUES ('delete', old.id, old.handle, old.name, old.description);
    INSERT INTO actor_fts (rowid, handle, name, description)
    VALUES (new.id, new.handle, new.name, new.description);
END;
CREATE TRIGGER IF NOT EXISTS handles_search_ai AFTER INSERT ON handles BEGIN
    INSERT INTO actor_search (did, handle) VALUES (new.did, new.handle)
    ON CONFLICT (did) DO UPDATE SET handle = excluded.handle;
END;
CREATE TRIGGER IF NOT EXISTS handles_search_ad AFTER DELETE ON handles BEGIN
    UPDATE actor_search SET handle = NULL WHERE did = old.did AND handle = old.handle;
END;
CREATE TRIGGER IF NOT EXISTS profiles_search_ai AFTER INSERT ON profiles BEGIN
    INSERT INTO actor_search (did, name, description)
    VALUES (new.did, new.display_name, new.description)
    ON CONFLICT (did) DO UPDATE SET name = excluded.name, description = excluded.description;
END;
CREATE TRIGGER IF NOT EXISTS profiles_search_ad AFTER DELETE ON profiles BEGIN
    UPDATE actor_search SET name = NULL, description = NULL WHERE did = old.did;
END;
"""


class BadQueryString(RemoteProtocolError):
    """searchPosts' own error for a query it cannot run."""

    error = "BadQueryString"


class SearchUnavailable(RemoteProtocolError):
    """This node's storage has no full-text search (PostgreSQL: FTS5 is SQLite's)."""

    error = "MethodNotImplemented"
    status = 501

    def __init__(self) -> None:
        super().__init__("search needs the SQLite backend on this node")


# -- indexing ------------------------------------------------------------------------

_WORD = re.compile(r"[^\W_]+")


def _words(text: str) -> list[str]:
    """Runs of letters and digits: what unicode61 would make tokens of."""
    return _WORD.findall(text)


def did_token(did: str) -> str:
    """One FTS5 token standing for ``did`` in the author and mentions columns. A DID
    tokenized as text ("did", "plc", ...) shares its first tokens with every post, so
    ``from:`` would walk the whole index; a hash is one rare token."""
    return "d" + hashlib.blake2b(did.encode(), digest_size=10).hexdigest()


def time_rowid(sort_at: str) -> int:
    """The first row id of ``sort_at``'s millisecond (0 before 1970)."""
    try:
        t = datetime.datetime.fromisoformat(sort_at.replace("Z", "+00:00"))
    except ValueError:
        return 0
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.UTC)
    ms = int(t.timestamp() * 1000)
    return max(0, min(ms, (1 << 47) - 1)) << 16


def _strings(value: Any, most: int) -> list[str]:
    if not isinstance(value, list):
        return []
    return [v for v in value[:most] if isinstance(v, str) and len(v) <= 128]


def _facet_targets(value: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(mentioned DIDs, linked hostnames) from facets and an external embed."""
    mentions: list[str] = []
    links: list[str] = []
    facets = value.get("facets")
    if isinstance(facets, list):
        for facet in facets[:MAX_FACETS]:
            features = facet.get("features") if isinstance(facet, dict) else None
            if not isinstance(features, list):
                continue
            for feature in features[:MAX_FACETS]:
                if not isinstance(feature, dict):
                    continue
                kind = feature.get("$type")
                if kind == "app.bsky.richtext.facet#mention":
                    did = feature.get("did")
                    if isinstance(did, str) and did.startswith("did:") and len(did) <= 2048:
                        mentions.append(did)
                elif kind == "app.bsky.richtext.facet#link":
                    uri = feature.get("uri")
                    if isinstance(uri, str):
                        links.append(uri)
    embed = value.get("embed")
    if isinstance(embed, dict):
        media = embed.get("media") if isinstance(embed.get("media"), dict) else embed
        external = media.get("external") if isinstance(media, dict) else None
        if isinstance(external, dict) and isinstance(external.get("uri"), str):
            links.append(external["uri"])
    hosts = []
    for link in links[:MAX_FACETS]:
        if len(link) > 8192:
            continue
        try:
            host = urlsplit(link).hostname
        except ValueError:
            continue
        if host:
            hosts.append(host)
    return mentions[:MAX_FACETS], list(dict.fromkeys(hosts))


def mentioned_dids(value: dict[str, Any]) -> list[str]:
    """The DIDs a post's facets mention (at most :data:`MAX_FACETS`)."""
    return list(dict.fromkeys(_facet_targets(value)[0]))


def _searchable_text(value: dict[str, Any]) -> str:
    parts = [value["text"]]
    embed = value.get("embed")
    if isinstance(embed, dict):
        media = embed.get("media") if isinstance(embed.get("media"), dict) else embed
        if isinstance(media, dict):
            for image in (
                (media.get("images") or [])[:8] if isinstance(media.get("images"), list) else []
            ):
                if isinstance(image, dict) and isinstance(image.get("alt"), str):
                    parts.append(image["alt"])
            external = media.get("external")
            if isinstance(external, dict):
                for key in ("title", "description"):
                    if isinstance(external.get(key), str):
                        parts.append(external[key])
    tags = _strings(value.get("tags"), 8)
    parts.extend(tags)
    return "\n".join(p[:10_000] for p in parts)


def _taken(conn: sqlite3.Connection, rowid: int) -> bool:
    return conn.execute("SELECT 1 FROM post_search WHERE id = ?", (rowid,)).fetchone() is not None


def _free_rowid(conn: sqlite3.Connection, base: int, uri: str) -> int:
    """A free row id in (or just after) the millisecond starting at ``base``, in at
    most four look-ups: anyone can date posts to one millisecond, so a crowded one
    spills into the next (a millisecond late in "latest") instead of costing a probe
    per post already there."""
    low = int.from_bytes(hashlib.blake2b(uri.encode(), digest_size=2).digest(), "big")
    if not _taken(conn, base | low):
        return base | low
    row = conn.execute(
        "SELECT max(id) FROM post_search WHERE id >= ? AND id < ?", (base, base + (1 << 16))
    ).fetchone()
    candidate = int(row[0]) + 1
    if not _taken(conn, candidate):
        return candidate
    row = conn.execute("SELECT max(id) FROM post_search").fetchone()
    return int(row[0]) + 1


def _no_search(conn: sqlite3.Connection) -> bool:
    """A PostgreSQL connection (node/store/dialect.py): no search tables there."""
    return getattr(conn, "dialect", "sqlite") == "postgresql"


def index_post(
    conn: sqlite3.Connection, uri: str, did: str, value: dict[str, Any], sort_at: str
) -> None:
    """Make a stored post searchable (in the indexing transaction)."""
    if _no_search(conn):
        return
    mentions, hosts = _facet_targets(value)
    rowid = _free_rowid(conn, time_rowid(sort_at), uri)
    conn.execute(
        "INSERT INTO post_search VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            rowid,
            uri,
            did,
            _searchable_text(value),
            did_token(did),
            " ".join(_strings(value.get("langs"), 3)),
            " ".join(did_token(m) for m in dict.fromkeys(mentions)),
            " ".join(hosts),
        ),
    )


def unindex_post(conn: sqlite3.Connection, uri: str) -> None:
    """Take a post out of search (its delete trigger updates the FTS index)."""
    if _no_search(conn):
        return
    conn.execute("DELETE FROM post_search WHERE uri = ?", (uri,))


def rebuild_search(conn: sqlite3.Connection) -> None:
    """Fill the search tables from the indexes (a database from before them)."""
    from protocol.encoding import decode
    from protocol.errors import SkyfedError

    conn.execute("DELETE FROM post_search")
    conn.execute("DELETE FROM actor_search")
    rows = conn.execute(
        "SELECT p.uri, p.did, p.sort_at, b.data FROM posts p JOIN blocks b ON b.cid = p.cid"
    )
    for uri, did, sort_at, data in rows:
        try:
            value = decode(data)
        except SkyfedError:
            continue
        if isinstance(value, dict) and isinstance(value.get("text"), str):
            index_post(conn, uri, did, value, sort_at)
    conn.execute("INSERT INTO actor_search (did, handle) SELECT did, handle FROM handles")
    conn.execute(
        "INSERT INTO actor_search (did, name, description)"
        " SELECT did, display_name, description FROM profiles WHERE true"
        " ON CONFLICT (did) DO UPDATE SET name = excluded.name,"
        " description = excluded.description"
    )


# -- queries -------------------------------------------------------------------------


@dataclass
class PostQuery:
    """A searchPosts query as this node understands it."""

    phrases: list[list[str]] = field(default_factory=list)
    negated: list[list[str]] = field(default_factory=list)
    author: str | None = None  # a handle or DID, resolved by the caller
    mentions: str | None = None
    lang: str | None = None
    since: str | None = None
    until: str | None = None
    domain: str | None = None


_TOKEN = re.compile(r'(-?)(?:"([^"]*)"?|(\S+))')
_OPERATORS = ("from", "mentions", "lang", "since", "until", "domain")


def parse_post_query(q: str) -> PostQuery:
    """Words, ``"phrases"``, ``-words`` and ``op:value`` filters of a query string."""
    out = PostQuery()
    for m in _TOKEN.finditer(q):
        negate, quoted, bare = m.group(1), m.group(2), m.group(3)
        if bare is not None:
            op, sep, arg = bare.partition(":")
            if sep and op.lower() in _OPERATORS and arg and not negate:
                key = "author" if op.lower() == "from" else op.lower()
                setattr(out, key, arg.lstrip("@"))
                continue
        words = _words(quoted if quoted is not None else bare or "")
        if not words:
            continue
        if any(len(w) > MAX_TERM_CHARS for w in words):
            raise BadQueryString(f"a word is longer than {MAX_TERM_CHARS} characters")
        # "foo-bar" is one word to the client and two tokens to FTS5: a phrase, as
        # a quoted "exact phrase" is.
        (out.negated if negate else out.phrases).append(words)
        if len(out.phrases) + len(out.negated) > MAX_TERMS:
            raise BadQueryString(f"at most {MAX_TERMS} words or phrases in one query")
    return out


def _phrase(words: list[str]) -> str:
    # Only letters and digits reach here: nothing to escape, nothing FTS5 could parse
    # as an operator.
    return '"' + " ".join(words) + '"'


def post_match(query: PostQuery, *, author: str | None, mentions: str | None) -> str:
    """The FTS5 MATCH expression for ``query`` (author and mentions already DIDs)."""
    parts = [f"text : {_phrase(p)}" for p in query.phrases]
    if author is not None:
        parts.append(f"author : {_phrase([did_token(author)])}")
    if mentions is not None:
        parts.append(f"mentions : {_phrase([did_token(mentions)])}")
    if query.lang:
        words = _words(query.lang)[:2]
        if not words:
            raise BadQueryString("lang is not a language tag")
        parts.append(f"lang : {_phrase(words)}")
    if query.domain:
        words = _words(query.domain)[:MAX_TERMS]
        if not words:
            raise BadQueryString("domain is not a hostname")
        parts.append(f"domains : {_phrase(words)}")
    if not parts:
        raise BadQueryString("the query has no words or filters to search for")
    expr = " AND ".join(parts)
    if query.negated:
        expr = f"({expr}) NOT text : ({' OR '.join(_phrase(n) for n in query.negated)})"
    return expr


def actor_match(q: str) -> str | None:
    """Every word of ``q`` as a prefix, in any column; None if ``q`` has no words."""
    words = _words(q)[:MAX_TERMS]
    words = [w for w in words if len(w) <= MAX_TERM_CHARS]
    if not words:
        return None
    return " AND ".join(f"{_phrase([w])}*" for w in words)


def parse_time_bound(value: str, name: str) -> str:
    """A ``since``/``until`` value (a datetime, or a date) as a sort_at string."""
    from .index import normalize_time

    if len(value) > 64:
        raise BadQueryString(f"{name} is not a date or datetime")
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        value += "T00:00:00Z"
    elif "T" in value and value[-1].isdigit() and not re.search(r"[+-]\d\d:\d\d$", value):
        value += "Z"
    t = normalize_time(value)
    if t is None:
        raise BadQueryString(f"{name} is not a date or datetime: {value[:64]!r}")
    return t


# -- reading -------------------------------------------------------------------------

_ROWID_MAX = (1 << 63) - 1
_SORTS = ("latest", "top")


def _offset(cursor: str | None, most: int) -> int:
    if not cursor:
        return 0
    if not cursor.isascii() or not cursor.isdigit() or len(cursor) > 19:
        raise RemoteProtocolError("malformed cursor")
    return min(int(cursor), most)


class Search:
    """searchPosts, searchActors and searchActorsTypeahead (one read each)."""

    def __init__(self, storage: SqliteStorage):
        self.storage = storage
        #: This node's URL (set by the wiring once it is known), for media URLs.
        self.base_url: Callable[[], str] = lambda: ""

    async def posts(
        self,
        q: str,
        viewer: str | None,
        *,
        limit: int,
        cursor: str | None = None,
        sort: str = "latest",
        author: str | None = None,
        mentions: str | None = None,
        lang: str | None = None,
        since: str | None = None,
        until: str | None = None,
        domain: str | None = None,
    ) -> dict[str, Any]:
        from .views import ProfileNotFound, _Read

        if not self.storage.full_text_search:
            raise SearchUnavailable()
        if sort not in _SORTS:
            raise BadQueryString(f"sort must be one of {', '.join(_SORTS)}")
        query = parse_post_query(q)
        # Parameters win over the same operator typed in q.
        query.author = author or query.author
        query.mentions = mentions or query.mentions
        query.lang = lang or query.lang
        query.domain = domain or query.domain
        lo = (
            time_rowid(parse_time_bound(since or query.since or "", "since"))
            if (since or query.since)
            else 0
        )
        hi = (
            time_rowid(parse_time_bound(until or query.until or "", "until"))
            if (until or query.until)
            else _ROWID_MAX
        )
        if sort == "latest" and cursor:
            if not cursor.isascii() or not cursor.isdigit() or len(cursor) > 19:
                raise RemoteProtocolError("malformed cursor")
            hi = min(hi, int(cursor))
        offset = _offset(cursor, TOP_WINDOW) if sort == "top" else 0

        def run(conn: sqlite3.Connection) -> dict[str, Any]:
            base = self.base_url()
            r = _Read(conn, viewer, base)
            try:
                author_did = r.resolve(query.author) if query.author else None
                mention_did = r.resolve(query.mentions) if query.mentions else None
            except (ProfileNotFound, RemoteProtocolError):
                return {"posts": []}  # nobody by that name here: nothing they wrote
            match = post_match(query, author=author_did, mentions=mention_did)
            matches = (
                "SELECT rowid FROM post_fts WHERE post_fts MATCH ?"
                " AND rowid >= ? AND rowid < ? ORDER BY rowid DESC LIMIT ?"
            )
            try:
                if sort == "latest":
                    rows = conn.execute(
                        f"SELECT s.id, s.uri, s.did FROM ({matches}) f"
                        " JOIN post_search s ON s.id = f.rowid ORDER BY s.id DESC",
                        (match, lo, hi, limit),
                    ).fetchall()
                    total = len(rows)
                else:
                    # The newest TOP_WINDOW matches, by engagement (a repost counts
                    # twice), then newest first.
                    rows = conn.execute(
                        f"SELECT s.id, s.uri, s.did, count(*) OVER () FROM ({matches}) f"
                        " JOIN post_search s ON s.id = f.rowid"
                        " LEFT JOIN post_stats st ON st.uri = s.uri"
                        " ORDER BY coalesce(st.likes + 2 * st.reposts + st.replies + st.quotes, 0)"
                        " DESC, s.id DESC LIMIT ? OFFSET ?",
                        (match, lo, hi, TOP_WINDOW, limit, offset),
                    ).fetchall()
                    total = int(rows[0][3]) if rows else 0
            except sqlite3.OperationalError as e:  # never expected: the query is ours
                raise BadQueryString(f"query could not be run: {e}") from None
            hidden = r.hidden()
            uris = [row[1] for row in rows if row[2] not in hidden]
            views = r.post_views(uris)
            out: dict[str, Any] = {"posts": [views[u] for u in uris if u in views]}
            if sort == "latest" and total == limit:
                out["cursor"] = str(rows[-1][0])
            elif sort == "top" and offset + limit < total:
                out["cursor"] = str(offset + limit)
            return out

        result: dict[str, Any] = await self.storage.read(run)
        return result

    async def actors(
        self,
        q: str,
        viewer: str | None,
        *,
        limit: int,
        cursor: str | None = None,
        typeahead: bool = False,
    ) -> dict[str, Any]:
        from .views import _marks, _Read

        if not self.storage.full_text_search:
            raise SearchUnavailable()
        match = actor_match(q)
        offset = 0 if typeahead else _offset(cursor, ACTOR_WINDOW)
        if match is None:
            return {"actors": []}
        needle = q.strip().lstrip("@").lower()

        def run(conn: sqlite3.Connection) -> dict[str, Any]:
            base = self.base_url()
            r = _Read(conn, viewer, base)
            try:
                ranked = conn.execute(
                    "SELECT rowid, bm25(actor_fts, 10.0, 5.0, 1.0) FROM actor_fts"
                    " WHERE actor_fts MATCH ? LIMIT ?",
                    (match, ACTOR_WINDOW),
                ).fetchall()
            except sqlite3.OperationalError as e:  # never expected: the query is ours
                raise BadQueryString(f"query could not be run: {e}") from None
            rank = dict(ranked)
            rows: list[tuple[int, str, str | None]] = []
            ids = list(rank)
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                rows += conn.execute(
                    f"SELECT id, did, handle FROM actor_search WHERE id IN ({_marks(len(chunk))})",
                    chunk,
                ).fetchall()
            hidden = r.hidden()
            rows = [row for row in rows if row[1] not in hidden]
            # A handle that starts with what was typed first, then FTS5's bm25 (lower is
            # better), then a stable order.
            rows.sort(key=lambda row: (not (row[2] or "").startswith(needle), rank[row[0]], row[1]))
            page = rows[offset : offset + limit]
            views = r.profile_views([row[1] for row in page])
            if typeahead:
                for v in views:
                    v.pop("description", None)
            out: dict[str, Any] = {"actors": views}
            if not typeahead and offset + limit < len(rows):
                out["cursor"] = str(offset + limit)
            return out

        result: dict[str, Any] = await self.storage.read(run)
        return result
