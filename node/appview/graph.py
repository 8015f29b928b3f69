"""The social graph beyond follows: blocks (direct and by list), mutes (direct, by
list, of threads), lists, threadgates and postgates, and labeler declarations.

Two halves. The index half (:func:`index_graph_record`, :func:`unindex_graph_record`)
runs inside the transaction that stores a commit, called from node/appview/index.py,
and fills the tables of :data:`GRAPH_SCHEMA` from these records:

* ``app.bsky.graph.list`` (purposes ``#modlist``, ``#curatelist``, ``#referencelist``)
  and ``app.bsky.graph.listitem``: an item counts only when its list is in the same
  repo (only a list's owner decides who is on it; an item naming someone else's list,
  or no list at all, is stored in the repo and ignored here);
* ``app.bsky.graph.listblock``: its author blocks every member of a moderation list;
* ``app.bsky.feed.threadgate`` / ``app.bsky.feed.postgate``: the gate's record key is
  its post's, in the same repo, as the lexicons require; anything else is ignored;
* ``app.bsky.labeler.service`` (record key ``self``): the account is a labeler.

The read half is what every view (and the notification and search rooms) asks, on
one reader connection: :func:`blocked_either_way`, :func:`muted_by`,
:func:`hidden_from`, :func:`muted_threads`, and the threadgate rules
(:func:`reply_allowed`, :func:`allowed_replies`). Private state (list mutes, thread
mutes) lives in tables no repo, peer or other account ever sees.

What it refuses to index: gates for another repo's post, list items for another
repo's list, names over the lexicon's 64 graphemes (counted in bytes here: 640),
more than 5 gate rules or 300 hidden replies or 50 detached quotes (the lexicons'
limits), labeler declarations whose key is not ``self``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from protocol.errors import RemoteProtocolError
from protocol.syntax import is_valid_did

if TYPE_CHECKING:
    from .views import _Read

__all__ = [
    "GRAPH_COLLECTIONS",
    "GRAPH_SCHEMA",
    "LIST_PURPOSES",
    "Gate",
    "QuoteNotAllowed",
    "ReplyNotAllowed",
    "allowed_replies",
    "blocked_either_way",
    "check_post",
    "check_posts",
    "hidden_from",
    "index_graph_record",
    "muted_by",
    "muted_threads",
    "reindex_graph",
    "reply_allowed",
    "reply_roots",
    "thread_root",
    "unindex_graph_record",
]

LIST: Final = "app.bsky.graph.list"
LIST_ITEM: Final = "app.bsky.graph.listitem"
LIST_BLOCK: Final = "app.bsky.graph.listblock"
THREADGATE: Final = "app.bsky.feed.threadgate"
POSTGATE: Final = "app.bsky.feed.postgate"
LABELER: Final = "app.bsky.labeler.service"
POST: Final = "app.bsky.feed.post"

GRAPH_COLLECTIONS: Final = frozenset({LIST, LIST_ITEM, LIST_BLOCK, THREADGATE, POSTGATE, LABELER})

MODLIST: Final = "app.bsky.graph.defs#modlist"
CURATELIST: Final = "app.bsky.graph.defs#curatelist"
REFERENCELIST: Final = "app.bsky.graph.defs#referencelist"
LIST_PURPOSES: Final = frozenset({MODLIST, CURATELIST, REFERENCELIST})

MENTION_RULE: Final = "app.bsky.feed.threadgate#mentionRule"
FOLLOWER_RULE: Final = "app.bsky.feed.threadgate#followerRule"
FOLLOWING_RULE: Final = "app.bsky.feed.threadgate#followingRule"
LIST_RULE: Final = "app.bsky.feed.threadgate#listRule"
DISABLE_RULE: Final = "app.bsky.feed.postgate#disableRule"

#: The lexicons' limits (threadgate ``allow`` 5, ``hiddenReplies`` 300; postgate
#: ``embeddingRules`` 5, ``detachedEmbeddingUris`` 50; list ``name`` 64 graphemes,
#: ``description`` 300 graphemes / 3000 bytes).
MAX_GATE_RULES: Final = 5
MAX_HIDDEN_REPLIES: Final = 300
MAX_DETACHED: Final = 50
MAX_NAME_BYTES: Final = 640
MAX_DESCRIPTION_BYTES: Final = 3000
_MAX_URI: Final = 8192

GRAPH_SCHEMA = """
CREATE TABLE IF NOT EXISTS lists (
    uri TEXT PRIMARY KEY,
    did TEXT NOT NULL,
    cid BLOB NOT NULL,
    name TEXT NOT NULL,
    purpose TEXT NOT NULL,
    created_at TEXT NOT NULL,
    indexed_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS lists_actor ON lists (did, uri);
CREATE TABLE IF NOT EXISTS list_items (
    uri TEXT PRIMARY KEY,
    did TEXT NOT NULL,
    list TEXT NOT NULL,
    subject TEXT NOT NULL,
    created_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS list_items_list ON list_items (list, uri);
CREATE INDEX IF NOT EXISTS list_items_subject ON list_items (subject, list);
CREATE TABLE IF NOT EXISTS list_blocks (
    uri TEXT PRIMARY KEY,
    did TEXT NOT NULL,
    list TEXT NOT NULL,
    created_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS list_blocks_actor ON list_blocks (did, list);
CREATE INDEX IF NOT EXISTS list_blocks_list ON list_blocks (list, did);
CREATE TABLE IF NOT EXISTS threadgates (
    post TEXT PRIMARY KEY,
    uri TEXT NOT NULL,
    did TEXT NOT NULL,
    cid BLOB NOT NULL,
    created_at TEXT NOT NULL,
    allow TEXT,
    hidden TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS postgates (
    post TEXT PRIMARY KEY,
    uri TEXT NOT NULL,
    did TEXT NOT NULL,
    cid BLOB NOT NULL,
    disabled INTEGER NOT NULL,
    detached TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS threadgates_uri ON threadgates (uri);
CREATE INDEX IF NOT EXISTS postgates_uri ON postgates (uri);
CREATE TABLE IF NOT EXISTS labeler_services (
    did TEXT PRIMARY KEY,
    uri TEXT NOT NULL,
    cid BLOB NOT NULL,
    indexed_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS labeler_services_uri ON labeler_services (uri);
CREATE TABLE IF NOT EXISTS list_mutes (
    did TEXT NOT NULL,
    list TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (did, list)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS thread_mutes (
    did TEXT NOT NULL,
    root TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (did, root)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS preferences (
    did TEXT PRIMARY KEY,
    data BLOB NOT NULL,
    updated_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reports (
    id INTEGER PRIMARY KEY,
    reported_by TEXT NOT NULL,
    reason_type TEXT NOT NULL,
    reason TEXT,
    subject BLOB NOT NULL,
    subject_did TEXT NOT NULL,
    labeler TEXT,
    created_at TEXT NOT NULL,
    resolved_at TEXT,
    resolution TEXT
);
CREATE INDEX IF NOT EXISTS reports_open ON reports (labeler, resolved_at, id);
CREATE INDEX IF NOT EXISTS reports_by ON reports (reported_by, resolved_at);
"""


class ReplyNotAllowed(RemoteProtocolError):
    """A hosted account's reply to a thread whose threadgate does not let it reply."""

    error = "ReplyNotAllowed"


class QuoteNotAllowed(RemoteProtocolError):
    """A hosted account's quote of a post whose postgate disables quotes."""

    error = "QuoteNotAllowed"


# -- index ---------------------------------------------------------------------------------


def _uri_in(value: Any, did: str | None, collection: str) -> str | None:
    """``value`` if it is an AT-URI of a record in ``collection`` (and in ``did``'s repo
    when ``did`` is given), else None."""
    if not isinstance(value, str) or len(value) > _MAX_URI or not value.startswith("at://"):
        return None
    authority, _, rest = value[len("at://") :].partition("/")
    coll, _, rkey = rest.partition("/")
    if coll != collection or not rkey or "/" in rkey or not authority.startswith("did:"):
        return None
    if did is not None and authority != did:
        return None
    return value


def _did_of(uri: str) -> str:
    return uri[len("at://") :].split("/", 1)[0] if uri.startswith("at://") else ""


def _rules(value: Any) -> list[str] | None:
    """A threadgate's ``allow`` as tokens: None (anyone may reply), [] (nobody), or
    ``mention``, ``follower``, ``following``, ``list:<uri>``. Unknown rules grant
    nothing (the open union may grow; a rule we do not know lets nobody extra in)."""
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > MAX_GATE_RULES:
        raise ValueError("allow")
    out: list[str] = []
    for rule in value:
        kind = rule.get("$type") if isinstance(rule, dict) else None
        if kind == MENTION_RULE:
            out.append("mention")
        elif kind == FOLLOWER_RULE:
            out.append("follower")
        elif kind == FOLLOWING_RULE:
            out.append("following")
        elif kind == LIST_RULE:
            assert isinstance(rule, dict)
            uri = _uri_in(rule.get("list"), None, LIST)
            if uri is not None:
                out.append("list:" + uri)
    return out


def _uri_list(value: Any, most: int) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > most:
        raise ValueError("list")
    return [v for v in value if isinstance(v, str) and v.startswith("at://") and len(v) < _MAX_URI]


def index_graph_record(
    conn: sqlite3.Connection,
    did: str,
    collection: str,
    rkey: str,
    value: dict[str, Any],
    cid: bytes,
    created: str,
    indexed_at: str,
) -> None:
    """Index one record of :data:`GRAPH_COLLECTIONS` (``created``: its normalized
    ``createdAt``, or ``indexed_at``)."""
    uri = f"at://{did}/{collection}/{rkey}"
    if collection == LIST:
        name, purpose = value.get("name"), value.get("purpose")
        if not isinstance(name, str) or not name or len(name.encode()) > MAX_NAME_BYTES:
            return
        if purpose not in LIST_PURPOSES:
            return
        conn.execute(
            "INSERT OR REPLACE INTO lists VALUES (?, ?, ?, ?, ?, ?, ?)",
            (uri, did, cid, name, purpose, created, indexed_at),
        )
    elif collection == LIST_ITEM:
        target = _uri_in(value.get("list"), did, LIST)
        subject = value.get("subject")
        if target is None or not isinstance(subject, str) or not is_valid_did(subject):
            return
        conn.execute(
            "INSERT OR REPLACE INTO list_items VALUES (?, ?, ?, ?, ?)",
            (uri, did, target, subject, created),
        )
    elif collection == LIST_BLOCK:
        target = _uri_in(value.get("subject"), None, LIST)
        if target is None:
            return
        conn.execute(
            "INSERT OR REPLACE INTO list_blocks VALUES (?, ?, ?, ?)", (uri, did, target, created)
        )
    elif collection in (THREADGATE, POSTGATE):
        post = f"at://{did}/{POST}/{rkey}"
        if value.get("post") != post:
            return
        try:
            if collection == THREADGATE:
                allow = _rules(value.get("allow"))
                hidden = _uri_list(value.get("hiddenReplies"), MAX_HIDDEN_REPLIES)
                conn.execute(
                    "INSERT OR REPLACE INTO threadgates VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        post,
                        uri,
                        did,
                        cid,
                        created,
                        None if allow is None else json.dumps(allow),
                        json.dumps(hidden),
                    ),
                )
            else:
                rules = value.get("embeddingRules")
                if rules is not None and (not isinstance(rules, list) or len(rules) > 5):
                    return
                disabled = any(
                    isinstance(r, dict) and r.get("$type") == DISABLE_RULE for r in rules or []
                )
                detached = _uri_list(value.get("detachedEmbeddingUris"), MAX_DETACHED)
                conn.execute(
                    "INSERT OR REPLACE INTO postgates VALUES (?, ?, ?, ?, ?, ?)",
                    (post, uri, did, cid, int(disabled), json.dumps(detached)),
                )
        except ValueError:
            return
    elif collection == LABELER and rkey == "self":
        if not isinstance(value.get("policies"), dict):
            return
        conn.execute(
            "INSERT OR REPLACE INTO labeler_services VALUES (?, ?, ?, ?)",
            (did, uri, cid, indexed_at),
        )


def unindex_graph_record(conn: sqlite3.Connection, did: str, collection: str, rkey: str) -> None:
    """Remove one record's rows (a delete, or before an update re-indexes it)."""
    uri = f"at://{did}/{collection}/{rkey}"
    if collection == LIST:
        conn.execute("DELETE FROM lists WHERE uri = ?", (uri,))
    elif collection == LIST_ITEM:
        conn.execute("DELETE FROM list_items WHERE uri = ?", (uri,))
    elif collection == LIST_BLOCK:
        conn.execute("DELETE FROM list_blocks WHERE uri = ?", (uri,))
    elif collection == THREADGATE:
        conn.execute("DELETE FROM threadgates WHERE uri = ?", (uri,))
    elif collection == POSTGATE:
        conn.execute("DELETE FROM postgates WHERE uri = ?", (uri,))
    elif collection == LABELER:
        conn.execute("DELETE FROM labeler_services WHERE uri = ?", (uri,))


def reindex_graph(conn: sqlite3.Connection, now: str) -> None:
    """Index the graph records a database held before these tables existed."""
    from .index import index_record  # index.py imports this module

    marks = ",".join("?" * len(GRAPH_COLLECTIONS))
    rows = conn.execute(
        "SELECT r.did, r.collection, r.rkey, r.cid, b.data FROM records r"
        f" JOIN blocks b ON b.cid = r.cid WHERE r.collection IN ({marks})",
        sorted(GRAPH_COLLECTIONS),
    ).fetchall()
    for did, collection, rkey, cid, data in rows:
        index_record(conn, did, collection, rkey, data, cid, now)


# -- who is hidden from whom -------------------------------------------------------------------


def blocked_either_way(conn: sqlite3.Connection, viewer: str | None) -> set[str]:
    """Accounts ``viewer`` blocks or is blocked by, directly or through a listblock of a
    moderation list. Blocks are public records: this is the same on every node."""
    if viewer is None:
        return set()
    rows = conn.execute(
        "SELECT subject FROM graph_blocks WHERE did = ?"
        " UNION SELECT did FROM graph_blocks WHERE subject = ?"
        " UNION SELECT li.subject FROM list_blocks lb"
        " JOIN lists l ON l.uri = lb.list AND l.purpose = ?"
        " JOIN list_items li ON li.list = lb.list WHERE lb.did = ?"
        " UNION SELECT lb.did FROM list_items li"
        " JOIN lists l ON l.uri = li.list AND l.purpose = ?"
        " JOIN list_blocks lb ON lb.list = li.list WHERE li.subject = ?",
        (viewer, viewer, MODLIST, viewer, MODLIST, viewer),
    ).fetchall()
    out = {r[0] for r in rows}
    out.discard(viewer)  # a list that names its own subscriber blocks nobody from itself
    return out


def muted_by(conn: sqlite3.Connection, viewer: str | None) -> set[str]:
    """Accounts ``viewer`` mutes, directly (muteActor) or through a muted list
    (muteActorList). Private to the viewer and this node."""
    if viewer is None:
        return set()
    rows = conn.execute(
        "SELECT subject FROM mutes WHERE did = ?"
        " UNION SELECT li.subject FROM list_mutes lm"
        " JOIN list_items li ON li.list = lm.list WHERE lm.did = ?",
        (viewer, viewer),
    ).fetchall()
    out = {r[0] for r in rows}
    out.discard(viewer)
    return out


def hidden_from(conn: sqlite3.Connection, viewer: str | None) -> set[str]:
    """Every account whose content ``viewer`` must not see on this node: blocked
    either way, muted (directly or by list), or taken down (scope ``serve``). The one
    call for rooms outside the views (notifications, search): filter authors by it."""
    out = blocked_either_way(conn, viewer) | muted_by(conn, viewer)
    out.update(
        r[0]
        for r in conn.execute(
            "SELECT did FROM takedowns WHERE reversed_at IS NULL AND instr(scopes, 'serve') > 0"
        )
    )
    return out


def muted_threads(conn: sqlite3.Connection, viewer: str | None, roots: Iterable[str]) -> set[str]:
    """Which of ``roots`` (thread root post URIs) ``viewer`` muted with muteThread.
    For notifications: a reply, like, repost or quote whose thread root is in here is
    not a notification for ``viewer``."""
    wanted = list(dict.fromkeys(roots))
    if viewer is None or not wanted:
        return set()
    out: set[str] = set()
    for i in range(0, len(wanted), 500):
        chunk = wanted[i : i + 500]
        out.update(
            r[0]
            for r in conn.execute(
                f"SELECT root FROM thread_mutes WHERE did = ? AND root IN ({_marks(len(chunk))})",
                [viewer, *chunk],
            )
        )
    return out


def _marks(n: int) -> str:
    return ",".join("?" * n)


# -- threadgates -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Gate:
    """A thread's reply rules as indexed. ``allow`` None: anyone may reply."""

    post: str
    uri: str
    owner: str
    cid: bytes
    created_at: str
    allow: tuple[str, ...] | None
    hidden: tuple[str, ...]


def gates(conn: sqlite3.Connection, posts: Sequence[str]) -> dict[str, Gate]:
    """The threadgates of ``posts`` (root post URIs) that exist."""
    out: dict[str, Gate] = {}
    wanted = list(dict.fromkeys(posts))
    for i in range(0, len(wanted), 500):
        chunk = wanted[i : i + 500]
        for post, uri, did, cid, created, allow, hidden in conn.execute(
            "SELECT post, uri, did, cid, created_at, allow, hidden FROM threadgates"
            f" WHERE post IN ({_marks(len(chunk))})",
            chunk,
        ):
            out[post] = Gate(
                post,
                uri,
                did,
                cid,
                created,
                None if allow is None else tuple(json.loads(allow)),
                tuple(json.loads(hidden)),
            )
    return out


def _any(r: _Read, table: str, did: str | None = None) -> bool:
    """Does ``table`` hold any row (of ``did``)? Asked once per view, so views on a
    node without gates or thread mutes pay one query for them, not one per post."""
    key = ("any", f"{table}:{did or ''}")
    if key not in r.memo:
        sql = f"SELECT 1 FROM {table}" + (" WHERE did = ?" if did else "") + " LIMIT 1"
        r.memo[key] = r.conn.execute(sql, (did,) if did else ()).fetchone() is not None
    return bool(r.memo[key])


def _memo_gates(r: _Read, roots: Iterable[str]) -> dict[str, Gate]:
    """:func:`gates`, remembered for the rest of one view (found or not)."""
    if not _any(r, "threadgates"):
        return {}
    wanted = set(roots)
    missing = [root for root in wanted if ("gate", root) not in r.memo]
    if missing:
        found = gates(r.conn, missing)
        for root in missing:
            r.memo["gate", root] = found.get(root)
    out: dict[str, Gate] = {}
    for root in wanted:
        gate = r.memo["gate", root]
        if gate is not None:
            out[root] = gate
    return out


def _memo_muted(r: _Read, roots: Iterable[str]) -> set[str]:
    if r.viewer is None or not _any(r, "thread_mutes", r.viewer):
        return set()
    wanted = set(roots)
    missing = [root for root in wanted if ("muted", root) not in r.memo]
    if missing:
        found = muted_threads(r.conn, r.viewer, missing)
        for root in missing:
            r.memo["muted", root] = root in found
    return {root for root in wanted if r.memo["muted", root]}


def thread_root(uri: str, record: dict[str, Any]) -> str:
    """The URI of the thread root a post belongs to (itself when it is no reply)."""
    reply = record.get("reply")
    root = reply.get("root") if isinstance(reply, dict) else None
    ref = root.get("uri") if isinstance(root, dict) else None
    return ref if isinstance(ref, str) and ref.startswith("at://") else uri


def _mentions(root_record: dict[str, Any] | None) -> set[str]:
    out: set[str] = set()
    facets = root_record.get("facets") if root_record else None
    for facet in facets if isinstance(facets, list) else []:
        features = facet.get("features") if isinstance(facet, dict) else None
        for feature in features if isinstance(features, list) else []:
            if isinstance(feature, dict) and feature.get("$type") == (
                "app.bsky.richtext.facet#mention"
            ):
                did = feature.get("did")
                if isinstance(did, str):
                    out.add(did)
    return out


def allowed_authors(
    conn: sqlite3.Connection,
    gate: Gate,
    authors: Iterable[str],
    root_record: dict[str, Any] | None,
) -> set[str]:
    """Which of ``authors`` the gate lets reply (the owner always may)."""
    wanted = set(authors)
    if gate.allow is None:
        return wanted
    out = {a for a in wanted if a == gate.owner}
    rest = list(wanted - out)
    if not rest or not gate.allow:
        return out
    if "mention" in gate.allow:
        out.update(set(rest) & _mentions(root_record))
    for i in range(0, len(rest), 500):
        chunk = rest[i : i + 500]
        m = _marks(len(chunk))
        if "following" in gate.allow:
            out.update(
                r[0]
                for r in conn.execute(
                    f"SELECT subject FROM follows WHERE did = ? AND subject IN ({m})",
                    [gate.owner, *chunk],
                )
            )
        if "follower" in gate.allow:
            out.update(
                r[0]
                for r in conn.execute(
                    f"SELECT did FROM follows WHERE subject = ? AND did IN ({m})",
                    [gate.owner, *chunk],
                )
            )
        lists = [rule[len("list:") :] for rule in gate.allow if rule.startswith("list:")]
        for uri in lists:
            out.update(
                r[0]
                for r in conn.execute(
                    f"SELECT subject FROM list_items WHERE list = ? AND subject IN ({m})",
                    [uri, *chunk],
                )
            )
    return out


def _root_record(conn: sqlite3.Connection, root: str) -> dict[str, Any] | None:
    from protocol.encoding import decode
    from protocol.errors import SkyfedError
    from protocol.jsondata import to_json

    row = conn.execute(
        "SELECT b.data FROM posts p JOIN blocks b ON b.cid = p.cid WHERE p.uri = ?", (root,)
    ).fetchone()
    if row is None:
        return None
    try:
        value = to_json(decode(row[0]))
    except SkyfedError:
        return None
    return value if isinstance(value, dict) else None


def reply_allowed(conn: sqlite3.Connection, root: str, author: str) -> bool:
    """May ``author`` reply in the thread rooted at ``root`` now?"""
    gate = gates(conn, [root]).get(root)
    if gate is None or gate.allow is None:
        return True
    return author in allowed_authors(conn, gate, [author], _root_record(conn, root))


def allowed_replies(conn: sqlite3.Connection, root: str, replies: Sequence[str]) -> list[str]:
    """``replies`` (post URIs in the thread rooted at ``root``) without those the
    root's threadgate does not allow, in order. A reply this node indexed before the
    gate's ``createdAt`` stays (the gate is not retroactive, as on Bluesky); the time
    compared is this node's own indexing time, which an author cannot backdate."""
    gate = gates(conn, [root]).get(root)
    if gate is None or gate.allow is None or not replies:
        return list(replies)
    info: dict[str, tuple[str, str]] = {}
    for i in range(0, len(replies), 500):
        chunk = list(replies[i : i + 500])
        for uri, did, indexed_at in conn.execute(
            f"SELECT uri, did, indexed_at FROM posts WHERE uri IN ({_marks(len(chunk))})", chunk
        ):
            info[uri] = (did, indexed_at)
    ok = allowed_authors(conn, gate, {d for d, _ in info.values()}, _root_record(conn, root))
    return [
        uri
        for uri in replies
        if uri in info and (info[uri][0] in ok or info[uri][1] < gate.created_at)
    ]


def visible_replies(r: _Read, root: str, replies: Sequence[str]) -> list[str]:
    """:func:`allowed_replies` for a view (the root's gate looked up once per view)."""
    gate = _memo_gates(r, [root]).get(root)
    if gate is None or gate.allow is None:
        return list(replies)
    return allowed_replies(r.conn, root, replies)


def _did_form(conn: sqlite3.Connection, uri: str) -> str:
    """``uri`` with a handle authority replaced by the DID it is confirmed for here."""
    authority, sep, path = uri[len("at://") :].partition("/")
    if authority.startswith("did:"):
        return uri
    row = conn.execute("SELECT did FROM handles WHERE handle = ?", (authority.lower(),)).fetchone()
    return uri if row is None else f"at://{row[0]}{sep}{path}"


def reply_roots(conn: sqlite3.Connection, record: dict[str, Any]) -> list[str]:
    """The thread roots whose gates bind a reply: the root it names and the root of
    the post it answers, as indexed here (a reply that names a false root is still
    in its parent's thread), each in DID form. Empty for a post that is no reply."""
    reply = record.get("reply")
    if not isinstance(reply, dict):
        return []
    refs = {}
    for key in ("root", "parent"):
        ref = reply.get(key)
        uri = ref.get("uri") if isinstance(ref, dict) else None
        if isinstance(uri, str) and uri.startswith("at://") and len(uri) < _MAX_URI:
            refs[key] = _did_form(conn, uri)
    out = [refs["root"]] if "root" in refs else []
    parent = refs.get("parent")
    if parent is not None:
        row = conn.execute("SELECT reply_root FROM posts WHERE uri = ?", (parent,)).fetchone()
        if row is not None:
            out.append(_did_form(conn, row[0]) if row[0] else parent)
    return list(dict.fromkeys(out))


def gated_out(r: _Read, views: dict[str, dict[str, Any]]) -> set[str]:
    """The replies among ``views`` that their thread's gate does not allow (the
    viewer's own excepted): feeds leave them out, as threads do."""
    if not _any(r, "threadgates"):
        return set()
    by_root: dict[str, list[str]] = {}
    for uri, view in views.items():
        if _did_of(uri) == r.viewer:
            continue
        for root in reply_roots(r.conn, view["record"]):
            if root != uri:
                by_root.setdefault(root, []).append(uri)
    out: set[str] = set()
    for root, gate in _memo_gates(r, by_root).items():
        if gate.allow is not None:
            kept = set(allowed_replies(r.conn, root, by_root[root]))
            out.update(u for u in by_root[root] if u not in kept)
    return out


def check_post(conn: sqlite3.Connection, author: str, record: dict[str, Any]) -> None:
    """Refuse a post that a hosted ``author`` may not make: a reply in a thread whose
    gate does not let it in, or a quote of a post whose postgate disables quotes."""
    for root_uri in reply_roots(conn, record):
        if not reply_allowed(conn, root_uri, author):
            raise ReplyNotAllowed(
                f"the author of {root_uri} limits who may reply (threadgate), "
                "and this account is not among them"
            )
    quoted = _quoted_uri(record.get("embed"))
    if quoted is not None and quoted.startswith("at://") and len(quoted) < _MAX_URI:
        quoted = _did_form(conn, quoted)
    if quoted is not None and _did_of(quoted) != author:
        row = conn.execute("SELECT disabled FROM postgates WHERE post = ?", (quoted,)).fetchone()
        if row is not None and row[0]:
            raise QuoteNotAllowed(f"the author of {quoted} has disabled quotes (postgate)")


def check_posts(conn: sqlite3.Connection, author: str, records: Sequence[dict[str, Any]]) -> None:
    """:func:`check_post` for each of ``records`` (one write's posts)."""
    for record in records:
        check_post(conn, author, record)


def _quoted_uri(embed: Any) -> str | None:
    if not isinstance(embed, dict):
        return None
    inner = embed.get("record")
    if isinstance(inner, dict) and isinstance(inner.get("record"), dict):
        inner = inner["record"]  # recordWithMedia
    uri = inner.get("uri") if isinstance(inner, dict) else None
    return uri if isinstance(uri, str) else None


def quote_states(conn: sqlite3.Connection, pairs: Sequence[tuple[str, str]]) -> set[str]:
    """For (quoting post, quoted post) pairs: the quoting posts whose embed the quoted
    post's author detached (listed in detachedEmbeddingUris, or quotes disabled for
    everyone else)."""
    targets = list({q for _, q in pairs})
    found: dict[str, tuple[int, set[str]]] = {}
    for i in range(0, len(targets), 500):
        chunk = targets[i : i + 500]
        for post, disabled, detached in conn.execute(
            f"SELECT post, disabled, detached FROM postgates WHERE post IN ({_marks(len(chunk))})",
            chunk,
        ):
            found[post] = (disabled, set(json.loads(detached)))
    out: set[str] = set()
    for quoting, quoted in pairs:
        gate = found.get(quoted)
        if gate is None:
            continue
        disabled, detached = gate
        if quoting in detached or (disabled and _did_of(quoting) != _did_of(quoted)):
            out.add(quoting)
    return out


# -- view decoration (called from node/appview/views.py) --------------------------------------


def list_basics(r: _Read, uris: Sequence[str]) -> dict[str, dict[str, Any]]:
    """ListViewBasic for the indexed lists among ``uris``."""
    from protocol.cid import CID

    wanted = list(dict.fromkeys(uris))
    out: dict[str, dict[str, Any]] = {}
    for i in range(0, len(wanted), 500):
        chunk = wanted[i : i + 500]
        rows = r.conn.execute(
            "SELECT l.uri, l.did, l.cid, l.name, l.purpose, l.indexed_at,"
            " (SELECT COUNT(*) FROM list_items li WHERE li.list = l.uri)"
            f" FROM lists l WHERE l.uri IN ({_marks(len(chunk))})",
            chunk,
        ).fetchall()
        states = list_viewer(r, [row[0] for row in rows])
        for uri, _did, cid, name, purpose, indexed_at, count in rows:
            out[uri] = {
                "$type": "app.bsky.graph.defs#listViewBasic",
                "uri": uri,
                "cid": str(CID.from_bytes(cid)),
                "name": name,
                "purpose": purpose,
                "listItemCount": count,
                "indexedAt": indexed_at,
                "labels": [],
                "viewer": states[uri],
            }
    return out


def list_viewer(r: _Read, uris: Sequence[str]) -> dict[str, dict[str, Any]]:
    """ListViewerState: ``muted`` (muteActorList) and ``blocked`` (a listblock's URI)."""
    out: dict[str, dict[str, Any]] = {u: {} for u in uris}
    if r.viewer is None or not uris:
        return out
    m = _marks(len(uris))
    for (uri,) in r.conn.execute(
        f"SELECT list FROM list_mutes WHERE did = ? AND list IN ({m})", [r.viewer, *uris]
    ):
        out[uri]["muted"] = True
    for block, uri in r.conn.execute(
        f"SELECT uri, list FROM list_blocks WHERE did = ? AND list IN ({m})", [r.viewer, *uris]
    ):
        out[uri]["blocked"] = block
    return out


def add_list_relationships(r: _Read, dids: Sequence[str], out: dict[str, dict[str, Any]]) -> None:
    """ProfileViewerState by list: ``blockingByList`` / ``blockedBy`` through
    listblocks, ``muted`` / ``mutedByList`` through list mutes."""
    if r.viewer is None or not dids:
        return
    v = r.viewer
    m = _marks(len(dids))
    blocking: dict[str, str] = {}
    for subject, lst in r.conn.execute(
        "SELECT li.subject, lb.list FROM list_blocks lb JOIN list_items li ON li.list = lb.list"
        f" JOIN lists l ON l.uri = lb.list AND l.purpose = ?"
        f" WHERE lb.did = ? AND li.subject IN ({m})",
        [MODLIST, v, *dids],
    ):
        blocking.setdefault(subject, lst)
    for (did,) in r.conn.execute(
        "SELECT lb.did FROM list_items li JOIN list_blocks lb ON lb.list = li.list"
        " JOIN lists l ON l.uri = li.list AND l.purpose = ?"
        f" WHERE li.subject = ? AND lb.did IN ({m})",
        [MODLIST, v, *dids],
    ):
        out.setdefault(did, {})["blockedBy"] = True
    muting: dict[str, str] = {}
    for subject, lst in r.conn.execute(
        "SELECT li.subject, lm.list FROM list_mutes lm JOIN list_items li ON li.list = lm.list"
        f" WHERE lm.did = ? AND li.subject IN ({m})",
        [v, *dids],
    ):
        muting.setdefault(subject, lst)
    basics = list_basics(r, list({*blocking.values(), *muting.values()}))
    for subject, lst in blocking.items():
        if subject != v and lst in basics:
            out.setdefault(subject, {})["blockingByList"] = basics[lst]
    for subject, lst in muting.items():
        if subject != v and lst in basics:
            state = out.setdefault(subject, {})
            state["muted"] = True
            state["mutedByList"] = basics[lst]


EMBED_RECORD_VIEW: Final = "app.bsky.embed.record#view"
EMBED_NOT_FOUND: Final = "app.bsky.embed.record#viewNotFound"
EMBED_BLOCKED: Final = "app.bsky.embed.record#viewBlocked"
EMBED_DETACHED: Final = "app.bsky.embed.record#viewDetached"


def decorate_posts(r: _Read, views: dict[str, dict[str, Any]]) -> None:
    """What gates, thread mutes and blocks add to PostViews, in place: ``threadgate``
    on a gated root, ``viewer.replyDisabled`` / ``threadMuted`` /
    ``embeddingDisabled``, and a quote embed that is ``viewDetached`` (the quoted
    author detached it) or ``viewBlocked`` (a block either way)."""
    if not views:
        return
    threads = _any(r, "threadgates") or (r.viewer is not None and _any(r, "thread_mutes", r.viewer))
    roots = {uri: thread_root(uri, v["record"]) for uri, v in views.items()} if threads else {}
    found = _memo_gates(r, roots.values())
    list_uris = [
        rule[len("list:") :]
        for g in found.values()
        for rule in g.allow or ()
        if rule[:5] == "list:"
    ]
    lists = list_basics(r, list_uris) if list_uris else {}
    muted = _memo_muted(r, roots.values())
    disabled: set[str] = set()
    if _any(r, "postgates"):
        disabled = {
            row[0]
            for row in r.conn.execute(
                f"SELECT post FROM postgates WHERE disabled = 1 AND post IN ({_marks(len(views))})",
                list(views),
            )
        }
    # Whether the viewer may reply, once per gated thread (not once per post in it).
    may_reply: dict[str, bool] = {}
    if r.viewer is not None:
        for root, rules in found.items():
            if ("may-reply", root) in r.memo:
                may_reply[root] = r.memo["may-reply", root]
            elif rules.allow is not None:
                record = views[root]["record"] if root in views else _root_record(r.conn, root)
                may_reply[root] = r.viewer in allowed_authors(r.conn, rules, [r.viewer], record)
                r.memo["may-reply", root] = may_reply[root]
    for uri, view in views.items():
        root = roots.get(uri, uri)
        gate = found.get(root)
        if gate is not None and root == uri:
            view["threadgate"] = gate_view(r, gate, lists)
        viewer = view["viewer"]
        if root in muted:
            viewer["threadMuted"] = True
        if root in may_reply:
            viewer["replyDisabled"] = not may_reply[root]
        if uri in disabled:
            viewer["embeddingDisabled"] = True
    _fix_quote_embeds(r, views)


def gate_view(r: _Read, gate: Gate, lists: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """ThreadgateView: the gate record and the lists its rules name."""
    from protocol.cid import CID

    from .views import _record_json

    row = r.conn.execute("SELECT data FROM blocks WHERE cid = ?", (gate.cid,)).fetchone()
    record = _record_json(gate.cid, row[0]) if row is not None else None
    named = [rule[len("list:") :] for rule in gate.allow or () if rule.startswith("list:")]
    out: dict[str, Any] = {
        "$type": "app.bsky.feed.defs#threadgateView",
        "uri": gate.uri,
        "cid": str(CID.from_bytes(gate.cid)),
        "lists": [lists[u] for u in named if u in lists],
    }
    if record is not None:
        out["record"] = record
    return out


def _fix_quote_embeds(r: _Read, views: dict[str, dict[str, Any]]) -> None:
    pairs: list[tuple[str, str]] = []
    for uri, view in views.items():
        embed = view.get("embed")
        if isinstance(embed, dict) and embed.get("$type") == EMBED_RECORD_VIEW:
            inner = embed.get("record")
            target = inner.get("uri") if isinstance(inner, dict) else None
            if isinstance(target, str):
                pairs.append((uri, target))
    if not pairs:
        return
    detached = quote_states(r.conn, pairs) if _any(r, "postgates") else set()
    blocked = r.blocked()
    for uri, target in pairs:
        if uri in detached:
            views[uri]["embed"] = {
                "$type": EMBED_RECORD_VIEW,
                "record": {"$type": EMBED_DETACHED, "uri": target, "detached": True},
            }
        elif views[uri]["embed"]["record"].get("$type") == EMBED_NOT_FOUND:
            author = _did_of(target)
            if author in blocked:
                views[uri]["embed"] = {
                    "$type": EMBED_RECORD_VIEW,
                    "record": {
                        "$type": EMBED_BLOCKED,
                        "uri": target,
                        "blocked": True,
                        "author": {
                            "did": author,
                            "viewer": r.relationships([author]).get(author, {}),
                        },
                    },
                }


def thread_gate(r: _Read, anchor: dict[str, Any]) -> dict[str, Any] | None:
    """getPostThread's top-level ``threadgate``: the gate of the anchor's thread root."""
    root = thread_root(anchor["uri"], anchor["record"])
    gate = gates(r.conn, [root]).get(root)
    if gate is None:
        return None
    named = [rule[len("list:") :] for rule in gate.allow or () if rule.startswith("list:")]
    return gate_view(r, gate, list_basics(r, named) if named else {})
