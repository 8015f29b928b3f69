"""A node's moderation: labels in views, node policy (takedowns), per-reader mutes.

Three parties act here, each within its own reach (docs/moderation.md):

* **Readers** choose labelers with the ``atproto-accept-labelers`` header on view
  requests; :func:`labels_middleware` attaches the current labels from exactly those
  labelers to every post and profile in the answer (``labels`` arrays, as atproto's
  views carry them) and answers ``atproto-content-labelers``. What a label does is
  the reader's setting, applied client-side (:func:`protocol.moderation.moderate`).
  Mutes (``app.bsky.graph.muteActor``) are private to the reader's node and honoured
  in every view, like blocks.
* **Operators** apply policy to their own node only, through admin endpoints that
  take the admin token from the node's config and are rate limited per client. A
  takedown's scopes: ``host`` (no sessions, no writes), ``serve`` (not indexed,
  absent from views, sync endpoints and the firehose), ``carry`` (not gossiped, not served to
  peers, not ingested from them). Each is recorded with a reason and a time,
  reversible, listed in ``skyfed.node.getInfo`` and, with the history, published by
  ``skyfed.moderation.listActions``.
* **Other nodes** are untouched: nothing here sends anything to a peer.

What this module refuses: admin requests without the token, with a wrong one, on a
node with no token configured, or over the admin rate; a takedown without a reason or
with an unknown scope; muting oneself; more labelers than a header may name.
"""

from __future__ import annotations

import functools
import hmac
import logging
import sqlite3
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Final, Protocol

import orjson
from aiohttp import web

from protocol.errors import RemoteProtocolError, RepoError
from protocol.labels import Label, current_labels, retraction_cts
from protocol.moderation import (
    ACCEPT_LABELERS,
    CONTENT_LABELERS,
    SCOPES,
    InvalidTakedown,
    LabelerPref,
    Scope,
    Takedown,
    format_labelers,
    parse_accept_labelers,
    parse_scopes,
)
from protocol.syntax import is_valid_did, validate_did

from ..appview.index import index_record, unindex_record
from ..logs import fields
from ..server import inputs
from ..server.ratelimit import RequestLimiter, client_key
from ..store.repos import iso_now

if TYPE_CHECKING:
    from ..appview.views import Views
    from ..config import NodeConfig
    from ..net.federation import Federation
    from ..server.auth import Principal
    from ..store.repos import RepoManager
    from ..store.sqlite import SqliteStorage


class ModerationHost(Protocol):
    """What moderation asks of the rest of the node: the services a takedown has to
    bring into line (storage, repos, federation), views for its admin pages, and who
    is asking."""

    @property
    def config(self) -> NodeConfig: ...
    @property
    def storage(self) -> SqliteStorage: ...
    @property
    def repos(self) -> RepoManager: ...
    @property
    def federation(self) -> Federation: ...
    @property
    def views(self) -> Views: ...
    @property
    def node_did(self) -> str: ...
    def forget_account(self, did: str) -> None: ...
    async def resolve_repo(self, ident: str) -> str: ...
    async def principal(self, request: web.Request) -> Principal: ...


__all__ = [
    "MODERATION_KEY",
    "VIEW_METHODS",
    "AccountTakedown",
    "Moderation",
    "labels_middleware",
    "moderation_routes",
]

log = logging.getLogger("skyfed.moderation")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: The XRPC views whose answers carry labels.
VIEW_METHODS: Final = frozenset(
    {
        "app.bsky.feed.getTimeline",
        "app.bsky.feed.getAuthorFeed",
        "app.bsky.feed.getPostThread",
        "app.bsky.feed.getPosts",
        "app.bsky.feed.getLikes",
        "app.bsky.feed.getRepostedBy",
        "app.bsky.actor.getProfile",
        "app.bsky.actor.getProfiles",
        "app.bsky.graph.getFollows",
        "app.bsky.graph.getFollowers",
        "app.bsky.graph.getMutes",
        "app.bsky.graph.getBlocks",
        "app.bsky.graph.getList",
        "app.bsky.graph.getLists",
        "app.bsky.feed.getListFeed",
        "app.bsky.graph.getListMutes",
        "app.bsky.graph.getListBlocks",
        "app.bsky.labeler.getServices",
        "skyfed.feed.getLatest",
        "app.bsky.feed.getActorLikes",
        "app.bsky.feed.getQuotes",
        "app.bsky.feed.getFeed",
        "app.bsky.feed.getFeedGenerator",
        "app.bsky.feed.getFeedGenerators",
        "app.bsky.feed.getActorFeeds",
        "app.bsky.feed.getSuggestedFeeds",
        "app.bsky.actor.getSuggestions",
        "app.bsky.graph.getSuggestedFollowsByActor",
        # node/appview/notifications.py and search.py
        "app.bsky.notification.listNotifications",
        "app.bsky.feed.searchPosts",
        "app.bsky.actor.searchActors",
        "app.bsky.actor.searchActorsTypeahead",
    }
)
_THREAD_VIEW: Final = "app.bsky.feed.defs#threadViewPost"
_NOT_FOUND: Final = "app.bsky.feed.defs#notFoundPost"
#: Active takedowns listed in getInfo (all of them are in listActions).
_INFO_TAKEDOWNS: Final = 100
_MAX_MUTES: Final = 10_000


class AccountTakedown(RemoteProtocolError):
    """The account is taken down on this node (atproto's error name)."""

    error = "AccountTakedown"
    status = 401


class AdminAuthError(RemoteProtocolError):
    error = "AuthenticationRequired"
    status = 401


# -- the node's moderation state -------------------------------------------------------------


class Moderation:
    """Takedowns (cached in memory: every write and every peer message asks), mutes,
    and labels for views."""

    def __init__(self, node: ModerationHost):
        self.node = node
        cfg = node.config
        self.admin_limits = RequestLimiter(rate=cfg.admin_rate, burst=cfg.admin_burst)
        self._active: dict[str, Takedown] = {}

    async def load(self) -> None:
        self._active = {t.did: t for t in await self._query(active_only=True, limit=None)}

    # -- asking --------------------------------------------------------------------
    def refuses(self, scope: Scope, did: str) -> bool:
        takedown = self._active.get(did)
        return takedown is not None and takedown.covers(scope)

    def active(self) -> list[Takedown]:
        return sorted(self._active.values(), key=lambda t: t.id, reverse=True)

    def check_host(self, did: str) -> None:
        """Raise if this node refuses to host ``did`` (sessions and writes)."""
        if self.refuses("host", did):
            raise AccountTakedown(f"account has been taken down on this node: {did}")

    def check_serve(self, did: str) -> None:
        """Raise if this node refuses to serve ``did`` (repo reads and sync)."""
        if self.refuses("serve", did):
            raise RepoError(f"repo has been taken down on this node: {did}", error="RepoTakendown")

    # -- acting --------------------------------------------------------------------
    async def take_down(self, did: str, reason: str, scopes: Iterable[str] | None) -> Takedown:
        """Record a takedown (replacing an active one for the account) and apply it."""
        validate_did(did)
        wanted = parse_scopes(scopes)
        now = iso_now()
        previous = self._active.get(did)
        # Validates before anything is written.
        Takedown(id=0, did=did, scopes=wanted, reason=reason, created_at=now)
        was_unserved = previous is not None and "serve" in previous.scopes

        def w(conn: sqlite3.Connection) -> int:
            conn.execute(
                "UPDATE takedowns SET reversed_at = ?, reverse_reason = ?"
                " WHERE did = ? AND reversed_at IS NULL",
                (now, "replaced by a new takedown", did),
            )
            cur = conn.execute(
                "INSERT INTO takedowns (did, scopes, reason, created_at) VALUES (?, ?, ?, ?)"
                " RETURNING id",
                (did, ",".join(s for s in SCOPES if s in wanted), reason, now),
            )
            new_id = int(cur.fetchone()[0])
            if "serve" in wanted and not was_unserved:
                _unindex_account(conn, did)
                # Out of the firehose's replay window too (the #account event that
                # announces the takedown comes after).
                conn.execute("DELETE FROM events WHERE did = ?", (did,))
            elif "serve" not in wanted and was_unserved:
                _reindex_account(conn, did, now)
            return new_id

        row_id = await self.node.storage.write(w)
        takedown = Takedown(id=row_id, did=did, scopes=wanted, reason=reason, created_at=now)
        self._active[did] = takedown
        await self._applied(did, previous, takedown)
        log.warning(
            "takedown",
            extra=fields(
                id=row_id, did=did, scopes=",".join(takedown.to_json()["scopes"]), reason=reason
            ),
        )
        return takedown

    async def reverse(self, did: str, reason: str) -> Takedown:
        """Reverse the active takedown of ``did``."""
        validate_did(did)
        previous = self._active.get(did)
        if previous is None:
            raise InvalidTakedown(f"{did} is not taken down here", error="NotTakendown")
        now = iso_now()
        reversed_ = Takedown(
            id=previous.id,
            did=did,
            scopes=previous.scopes,
            reason=previous.reason,
            created_at=previous.created_at,
            reversed_at=now,
            reverse_reason=reason,
        )

        def w(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE takedowns SET reversed_at = ?, reverse_reason = ? WHERE id = ?",
                (now, reason, previous.id),
            )
            if "serve" in previous.scopes:
                _reindex_account(conn, did, now)

        await self.node.storage.write(w)
        del self._active[did]
        await self._applied(did, previous, None)
        log.warning("takedown reversed", extra=fields(id=previous.id, did=did, reason=reason))
        return reversed_

    async def _applied(self, did: str, before: Takedown | None, after: Takedown | None) -> None:
        """Make the rest of the node agree with a changed takedown."""
        node = self.node
        if after is not None and after.covers("host"):
            await node.storage.revoke_all_sessions(did)
        node.forget_account(did)
        node.repos.forget(did)
        head = await node.storage.get_head(did)
        unserved = after is not None and after.covers("serve")
        if head is not None:
            # atproto's account status, announced on the firehose as #account.
            if unserved and head.status != "takendown":
                await node.storage.set_repo_status(did, "takendown", iso_now())
            elif not unserved and head.status == "takendown":
                await node.storage.set_repo_status(did, None, iso_now())
        node.federation.forget_items()

    # -- listing -------------------------------------------------------------------
    async def _query(
        self, *, active_only: bool, limit: int | None, before: int | None = None, did: str = ""
    ) -> list[Takedown]:
        def q(conn: sqlite3.Connection) -> list[Takedown]:
            sql = (
                "SELECT id, did, scopes, reason, created_at, reversed_at, reverse_reason"
                " FROM takedowns WHERE id < ?"
            )
            args: list[Any] = [before if before is not None else 2**62]
            if active_only:
                sql += " AND reversed_at IS NULL"
            if did:
                sql += " AND did = ?"
                args.append(did)
            sql += " ORDER BY id DESC"
            if limit is not None:
                sql += " LIMIT ?"
                args.append(limit)
            return [
                Takedown(
                    id=r[0],
                    did=r[1],
                    scopes=parse_scopes(r[2]),
                    reason=r[3],
                    created_at=r[4],
                    reversed_at=r[5],
                    reverse_reason=r[6],
                )
                for r in conn.execute(sql, args).fetchall()
            ]

        return await self.node.storage.read(q)

    def policy(self) -> dict[str, Any]:
        cfg = self.node.config
        return {
            "statement": cfg.moderation_policy or "",
            "scopes": {
                "host": "no sessions and no writes for the account on this node",
                "serve": "not indexed; absent from this node's views, sync endpoints and firehose",
                "carry": "not gossiped, served to or taken from peers by this node",
            },
            "labels": "views carry labels only from the labelers a reader names "
            f"in {ACCEPT_LABELERS}; this node applies none of its own",
            "mutes": "private to the reader's node; honoured in every view, like blocks",
            "adminRateLimit": {"rate": cfg.admin_rate, "burst": cfg.admin_burst},
        }

    async def info(self) -> dict[str, Any]:
        """What ``skyfed.node.getInfo`` says about moderation."""
        active = self.active()
        return {
            "takedownCount": len(active),
            "takedowns": [t.to_json() for t in active[:_INFO_TAKEDOWNS]],
            "policy": self.policy(),
            "actions": "/xrpc/skyfed.moderation.listActions",
        }

    # -- mutes ---------------------------------------------------------------------
    async def mute(self, viewer: str, subject: str) -> None:
        if subject == viewer:
            raise RemoteProtocolError("you cannot mute yourself")

        def w(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT COUNT(*) FROM mutes WHERE did = ?", (viewer,)).fetchone()
            count = int(row[0])
            if count >= _MAX_MUTES:
                raise RemoteProtocolError(f"at most {_MAX_MUTES} mutes")
            conn.execute(
                "INSERT OR IGNORE INTO mutes VALUES (?, ?, ?)", (viewer, subject, iso_now())
            )

        await self.node.storage.write(w)

    async def unmute(self, viewer: str, subject: str) -> None:
        def w(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM mutes WHERE did = ? AND subject = ?", (viewer, subject))

        await self.node.storage.write(w)

    async def mutes(self, viewer: str, limit: int, cursor: str | None) -> list[str]:
        def q(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT subject FROM mutes WHERE did = ? AND subject > ? ORDER BY subject LIMIT ?",
                (viewer, cursor or "", limit),
            ).fetchall()
            return [r[0] for r in rows]

        return await self.node.storage.read(q)

    async def retraction_cts(self, src: str, uri: str, val: str, now: str) -> str:
        """The ``cts`` for a negation ``src`` makes now (protocol.labels.retraction_cts):
        it ties any held label of the same triple dated ahead of ``now``, and wins."""
        rows = await self.node.storage.read(
            lambda c: c.execute(
                "SELECT cts FROM labels WHERE src = ? AND uri = ? AND val = ?", (src, uri, val)
            ).fetchall()
        )
        return retraction_cts([r[0] for r in rows], now)

    # -- labels in views -------------------------------------------------------------
    async def apply_labels(
        self, data: Any, labelers: tuple[LabelerPref, ...]
    ) -> tuple[LabelerPref, ...]:
        """Fill every ``labels`` array in a view answer with the current labels from
        ``labelers`` on that post or account (a label naming a ``cid`` only on that
        version), and remove content a ``;redact`` labeler took down. Changes ``data``
        in place; returns the labelers applied."""
        if not labelers:
            return ()
        holders: list[tuple[dict[str, Any], str, str | None]] = []
        _collect(data, holders)
        if not holders:
            return labelers
        subjects = list({subject for _, subject, _ in holders})
        sources = [p.did for p in labelers]

        now = iso_now()

        def q(conn: sqlite3.Connection) -> list[Label]:
            # Decoding and the current set are worked out here, off the event loop.
            found: list[Label] = []
            marks = ",".join("?" * len(sources))
            for i in range(0, len(subjects), 400):
                chunk = subjects[i : i + 400]
                found += [
                    _label(r[0])
                    for r in conn.execute(
                        f"SELECT data FROM labels WHERE uri IN ({','.join('?' * len(chunk))})"
                        f" AND src IN ({marks})",
                        [*chunk, *sources],
                    )
                ]
            # A labeler's current key: its negation wins a tie on cts (protocol §12).
            current = dict(
                conn.execute(
                    f"SELECT did, signing_key FROM identities WHERE did IN ({marks})", sources
                ).fetchall()
            )
            return current_labels(found, now, current_keys=current)

        by_subject: dict[str, list[Label]] = defaultdict(list)
        for label in await self.node.storage.read(q):
            by_subject[label.uri].append(label)
        for holder, subject, cid in holders:
            holder["labels"] = [
                _view_label(label)
                for label in by_subject.get(subject, ())
                if label.cid is None or label.cid == cid
            ]
        redacting = {p.did for p in labelers if p.redact}
        doomed = {
            uri
            for uri, labels in by_subject.items()
            for label in labels
            if label.val == "!takedown" and label.src in redacting
        }
        if doomed:
            _redact(data, doomed)
        return labelers


def _view_label(label: Label) -> dict[str, Any]:
    """A label as views carry it: the JSON form without ``sig``, as Bluesky's AppView
    sends it. The atproto SDK's Label model refuses ``{"$bytes": ...}`` there and
    would fail the whole answer; queryLabels still gives the signed label."""
    out = label.to_json()
    out.pop("sig", None)
    return out


@functools.lru_cache(maxsize=50_000)
def _label(data: bytes) -> Label:
    """A stored label (checked on receipt), decoded once: labels never change under
    their encoding."""
    return Label.from_bytes(data)


def _unindex_account(conn: sqlite3.Connection, did: str) -> None:
    rows = conn.execute("SELECT collection, rkey FROM records WHERE did = ?", (did,)).fetchall()
    for collection, rkey in rows:
        unindex_record(conn, did, collection, rkey)


def _reindex_account(conn: sqlite3.Connection, did: str, now: str) -> None:
    rows = conn.execute(
        "SELECT r.collection, r.rkey, r.cid, b.data FROM records r"
        " JOIN blocks b ON b.cid = r.cid WHERE r.did = ?",
        (did,),
    ).fetchall()
    for collection, rkey, cid, data in rows:
        unindex_record(conn, did, collection, rkey)
        index_record(conn, did, collection, rkey, data, cid, now)


# -- walking view answers ------------------------------------------------------------------

# Record values are the author's data (and the views cache them): never walked. But a
# quoted post's view (app.bsky.embed.record#viewRecord) also sits under "record", in
# the embed: that one is a view, so it is walked like any other.
_OPAQUE: Final = frozenset({"record", "value"})
_EMBED_VIEW: Final = "app.bsky.embed.record#"
_EMBED_NOT_FOUND: Final = "app.bsky.embed.record#viewNotFound"


def _walked(key: str, item: object) -> bool:
    if not isinstance(item, list | dict):
        return False
    if key not in _OPAQUE:
        return True
    kind = item.get("$type") if isinstance(item, dict) else None
    return isinstance(kind, str) and kind.startswith(_EMBED_VIEW)


def _subject(view: dict[str, Any]) -> str | None:
    uri = view.get("uri")
    # Posts have an author; lists and labeler services a creator.
    if isinstance(uri, str) and ("author" in view or "creator" in view):
        return uri
    did = view.get("did")
    return did if isinstance(did, str) else None


def _collect(value: Any, out: list[tuple[dict[str, Any], str, str | None]]) -> None:
    if isinstance(value, list):
        for item in value:
            _collect(item, out)
    elif isinstance(value, dict):
        if isinstance(value.get("labels"), list):
            subject = _subject(value)
            if subject is not None:
                cid = value.get("cid")
                out.append((value, subject, cid if isinstance(cid, str) else None))
        for key, item in value.items():
            if _walked(key, item):
                _collect(item, out)


def _doomed(value: Any, doomed: set[str]) -> bool:
    if not isinstance(value, dict):
        return False
    inner = value.get("post")
    view = inner if isinstance(inner, dict) else value
    author = view.get("author")
    author_did = author.get("did") if isinstance(author, dict) else None
    return _subject(view) in doomed or author_did in doomed


def _redact(value: Any, doomed: set[str]) -> None:
    """Drop doomed items from lists; replace a doomed single view by a not-found stub."""
    if isinstance(value, list):
        value[:] = [item for item in value if not _doomed(item, doomed)]
        for item in value:
            _redact(item, doomed)
    elif isinstance(value, dict):
        for key, item in list(value.items()):
            if not _walked(key, item):
                continue
            if isinstance(item, dict) and _doomed(item, doomed):
                inner = item.get("post")
                uri = (inner if isinstance(inner, dict) else item).get("uri", "")
                # A quoted post becomes the embed union's not-found member.
                stub = _EMBED_NOT_FOUND if key in _OPAQUE else _NOT_FOUND
                value[key] = {"$type": stub, "uri": uri, "notFound": True}
            else:
                _redact(item, doomed)


# -- HTTP ----------------------------------------------------------------------------------

MODERATION_KEY: Final = web.AppKey("skyfed.moderation", Moderation)


@web.middleware
async def labels_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Attach the labels a reader asked for to a view's answer."""
    header = request.headers.get(ACCEPT_LABELERS)
    if header is None or request.match_info.get("nsid") not in VIEW_METHODS:
        return await handler(request)
    labelers = parse_accept_labelers(header)
    response = await handler(request)
    if response.status != 200 or not isinstance(response, web.Response):
        return response
    body = response.body
    if not isinstance(body, bytes):
        return response
    data = orjson.loads(body)
    applied = await request.app[MODERATION_KEY].apply_labels(data, labelers)
    headers = {k: v for k, v in response.headers.items() if k.lower().startswith("ratelimit")}
    headers[CONTENT_LABELERS] = format_labelers(applied)
    return web.Response(
        body=orjson.dumps(data),
        status=200,
        content_type="application/json",
        headers=headers,
    )


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


#: Largest body a moderation method takes, in bytes (they carry a DID and a reason).
MAX_MODERATION_BODY: Final = 64 * 1024


async def _body(request: web.Request) -> dict[str, Any]:
    return await inputs.read_json_object(request, max_bytes=MAX_MODERATION_BODY)


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise RemoteProtocolError(f'Input must have the property "{name}"')
    return value


def _admin(request: web.Request) -> Moderation:
    """The node's moderation, if the request carries the admin token. Rate limited
    per client before the token is looked at, so guessing it is slow."""
    mod = request.app[MODERATION_KEY]
    mod.admin_limits.check(client_key(request.remote or "unknown"))
    token = mod.node.config.admin_token
    if not token:
        raise RemoteProtocolError(
            "this node has no admin token configured", error="AdminDisabled", status=403
        )
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise AdminAuthError("admin endpoints take the node's admin token as a Bearer token")
    # The header is bytes decoded with surrogateescape: encode it back the same way,
    # so a non-ASCII byte is a wrong token, not a UnicodeEncodeError.
    if not hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), token.encode()):
        raise AdminAuthError("wrong admin token", error="InvalidToken")
    return mod


async def _account_did(mod: Moderation, actor: str) -> str:
    """A DID from a DID or a handle this node knows (atproto's error name for actors)."""
    try:
        return await mod.node.resolve_repo(actor.removeprefix("@"))
    except RepoError:
        raise RemoteProtocolError(f"unknown handle: {actor}", error="ProfileNotFound") from None


async def admin_takedown(request: web.Request) -> web.Response:
    """skyfed.admin.takedown: {did, reason, scopes?} -> {takedown}."""
    mod = _admin(request)
    body = await _body(request)
    did = await _account_did(mod, _text(body, "did"))
    scopes = body.get("scopes")
    if scopes is not None and (
        not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes)
    ):
        raise InvalidTakedown("scopes must be a list of strings")
    takedown = await mod.take_down(did, _text(body, "reason"), scopes)
    return _json({"takedown": takedown.to_json()})


async def admin_reverse(request: web.Request) -> web.Response:
    """skyfed.admin.reverseTakedown: {did, reason} -> {takedown} (now reversed)."""
    mod = _admin(request)
    body = await _body(request)
    did = await _account_did(mod, _text(body, "did"))
    takedown = await mod.reverse(did, _text(body, "reason"))
    return _json({"takedown": takedown.to_json()})


async def list_actions(request: web.Request) -> web.Response:
    """skyfed.moderation.listActions (public): the node's policy and every takedown,
    active or reversed, newest first."""
    mod = request.app[MODERATION_KEY]
    limit = inputs.query_int(request, "limit", 50, 1, 500)
    cursor = inputs.query_optional_int(request, "cursor", 0, inputs.INT64_MAX)
    did = inputs.query_str(request, "did", required=False) or ""
    if did and not is_valid_did(did):
        raise RemoteProtocolError("did must be a DID")
    rows = await mod._query(
        active_only=False,
        limit=limit,
        before=cursor,
        did=did,
    )
    out: dict[str, Any] = {
        "node": mod.node.node_did,
        "policy": mod.policy(),
        "actions": [t.to_json() for t in rows],
    }
    if len(rows) == limit:
        out["cursor"] = str(rows[-1].id)
    return _json(out)


async def _viewer(request: web.Request) -> str:
    node = request.app[MODERATION_KEY].node
    return (await node.principal(request)).did


async def mute_actor(request: web.Request) -> web.Response:
    """app.bsky.graph.muteActor: {actor}. Private to this node."""
    mod = request.app[MODERATION_KEY]
    viewer = await _viewer(request)
    subject = await _account_did(mod, _text(await _body(request), "actor"))
    await mod.mute(viewer, subject)
    return _json({})


async def unmute_actor(request: web.Request) -> web.Response:
    """app.bsky.graph.unmuteActor: {actor}."""
    mod = request.app[MODERATION_KEY]
    viewer = await _viewer(request)
    subject = await _account_did(mod, _text(await _body(request), "actor"))
    await mod.unmute(viewer, subject)
    return _json({})


async def get_mutes(request: web.Request) -> web.Response:
    """app.bsky.graph.getMutes: {mutes: [ProfileView], cursor?}."""
    mod = request.app[MODERATION_KEY]
    viewer = await _viewer(request)
    limit = inputs.query_int(request, "limit", 50, 1, 100)
    cursor = inputs.query_str(request, "cursor", required=False, max_chars=2048)
    dids = await mod.mutes(viewer, limit, cursor)
    profiles = await mod.node.views.profile_list(dids, viewer)
    out: dict[str, Any] = {"mutes": profiles}
    if len(dids) == limit:
        out["cursor"] = dids[-1]
    return _json(out)


def moderation_routes() -> dict[str, tuple[str, Handler]]:
    """The XRPC methods this module serves (merged into the node's routes)."""
    return {
        "skyfed.admin.takedown": ("POST", admin_takedown),
        "skyfed.admin.reverseTakedown": ("POST", admin_reverse),
        "skyfed.moderation.listActions": ("GET", list_actions),
        "app.bsky.graph.muteActor": ("POST", mute_actor),
        "app.bsky.graph.unmuteActor": ("POST", unmute_actor),
        "app.bsky.graph.getMutes": ("GET", get_mutes),
    }
