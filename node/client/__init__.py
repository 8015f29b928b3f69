"""An async client for a skyfed node (or any server speaking these XRPC methods).

    async with Client("http://127.0.0.1:2583") as c:
        await c.create_account("alice.skyfed.test", "correct horse battery")
        ref = await c.post("hello @bob.skyfed.test, see https://example.com #skyfed")
        await c.like(ref)
        feed = await c.timeline()
        ref = await c.verify_record(feed["feed"][0]["post"]["uri"])

Writes go to the account's home node (the one that issued the session). Views
(``timeline``, ``author_feed``, ``thread``, ``profile``, ``latest``, ...) return the
JSON the node answers, shaped as the ``app.bsky`` lexicons define (FeedViewPost,
ThreadViewPost, ProfileViewDetailed); any node can answer them, and a record read
from a node that is not its author's home can be checked against its author's signed
commit with :meth:`Client.verify_record`.

Moderation is the reader's: give the client :class:`ModerationPrefs` (``moderation=``)
and every request names those labelers (``atproto-accept-labelers``), so views come
back with their labels; :meth:`Client.moderate` then says whether a post or profile
is hidden, behind a warning or shown. Mutes (:meth:`Client.mute`), labelling as a
labeler (:meth:`Client.label`) and a node's admin endpoints (:meth:`Client.take_down`,
with the node's admin token) are here too.

Errors come back as :class:`XrpcError` carrying the server's ``error`` name, message
and HTTP status; a server that answers with a page or anything but a node's JSON
raises :class:`NotANodeError` (an XrpcError) naming the URL. An expired access token
is refreshed once, transparently. A record that fails verification raises
:class:`VerificationError`; one whose author's signed repository provably lacks it
(deleted) raises its subclass :class:`RecordNotFoundError`.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from protocol import syntax
from protocol.car import read_car
from protocol.cid import CID, cid_for_msgpack
from protocol.commit import Commit
from protocol.errors import InvalidSyntax, RemoteProtocolError, SkyfedError
from protocol.eventstream import decode_frame
from protocol.identity import IdentityOp, IdentityState, resolve_log
from protocol.keys import SigningKey, verify_key
from protocol.moderation import ACCEPT_LABELERS, CONTENT_LABELERS, Decision, ModerationPrefs
from protocol.moderation import moderate as _moderate
from protocol.mst import MST, MemoryBlockStore
from protocol.records import detect_facets
from protocol.serviceauth import make_service_token

__all__ = [
    "AtUri",
    "Client",
    "MigrationError",
    "NotANodeError",
    "NotYourRecordError",
    "RecordNotFoundError",
    "RecordRef",
    "Session",
    "VerificationError",
    "XrpcError",
    "migrate_account",
    "node_url",
    "rotate_signing_key",
]

# A CAR proof for one record is a commit, a path of MST nodes and the record:
# far below this; the bound keeps a hostile node from feeding us gigabytes.
_MAX_PROOF_BYTES = 8 * 1024 * 1024


class XrpcError(SkyfedError):
    """The server answered with an error."""

    def __init__(self, status: int, error: str, message: str):
        super().__init__(f"{error} ({status}): {message}")
        self.status = status
        self.error = error
        self.message = message


class NotANodeError(XrpcError):
    """The server answered, but not as a skyfed node does (an HTML page, plain text):
    the URL points at some other web server."""

    def __init__(self, url: str, status: int, content_type: str):
        super().__init__(
            status,
            "NotASkyfedNode",
            f"{url} is not a skyfed node (it answered {status} {content_type or 'with no type'}"
            " where a node answers JSON); check the URL and port",
        )
        self.url = url


class NotYourRecordError(SkyfedError, ValueError):
    """Deleting or changing a record of another account (a ValueError for old callers)."""


class VerificationError(RemoteProtocolError):
    """A record does not check out against its author's signed repository."""

    error = "VerificationFailed"


class RecordNotFoundError(VerificationError):
    """The author's signed repository, checked, does not hold the record: it was
    deleted (or never made). Not tampering: the proof of absence verified."""

    error = "RecordNotFound"


@dataclass(frozen=True, slots=True)
class RecordRef:
    """A strong reference to a record: its AT-URI and CID."""

    uri: str
    cid: str

    def to_json(self) -> dict[str, str]:
        return {"uri": self.uri, "cid": self.cid}


@dataclass(frozen=True, slots=True)
class AtUri:
    """``at://AUTHORITY/COLLECTION/RKEY``: a record's address (authority: DID or handle)."""

    authority: str
    collection: str
    rkey: str

    @classmethod
    def from_str(cls, uri: str) -> AtUri:
        """Parse a record AT-URI; raises InvalidSyntax for anything else."""
        syntax.validate_at_uri(uri)
        parts = uri[len("at://") :].split("/")
        if len(parts) != 3:
            raise InvalidSyntax(f"not a record AT-URI (needs a collection and rkey): {uri}")
        return cls(parts[0], parts[1], parts[2])

    def to_str(self) -> str:
        return f"at://{self.authority}/{self.collection}/{self.rkey}"

    @property
    def path(self) -> str:
        """The record's key in its repository's MST."""
        return f"{self.collection}/{self.rkey}"


@dataclass(slots=True)
class Session:
    did: str
    handle: str
    access_jwt: str
    refresh_jwt: str


_LOOPBACK = ("localhost", "127.", "[::1]", "::1")


def node_url(text: str) -> str:
    """A node's base URL from what a person typed. ``127.0.0.1:2583`` (no scheme) means
    ``http://`` for a loopback address; for any other host the scheme must be given,
    because guessing http for a public server would send tokens in the clear.
    Raises ValueError saying what to type."""
    url = text.strip().rstrip("/")
    if "://" not in url:
        if url.lower().startswith(_LOOPBACK):
            return f"http://{url}"
        raise ValueError(
            f"{text!r} has no scheme: write https://{url} (or http://{url} for a node without TLS)"
        )
    scheme = url.split("://", 1)[0].lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"{text!r}: a node's URL starts with https:// or http://")
    if not url.split("://", 1)[1]:
        raise ValueError(f"{text!r} names no host")
    return url


def _now() -> str:
    t = datetime.datetime.now(datetime.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


class Client:
    """One node, one (optional) logged-in account.

    Set :attr:`session` to resume a saved session; after any call it holds the
    current tokens (a refresh rotates both), so save it again.
    """

    def __init__(
        self,
        base_url: str,
        *,
        session: aiohttp.ClientSession | None = None,
        moderation: ModerationPrefs | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self._http = session
        self._own_http = session is None
        self.session: Session | None = None
        #: The reader's labelers and label behaviours (sent with every request).
        self.moderation = moderation or ModerationPrefs()
        #: The labelers the node says it applied to the last answer.
        self.content_labelers: str | None = None

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_http and self._http is not None:
            await self._http.close()
            self._http = None

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        return self._http

    @property
    def did(self) -> str:
        if self.session is None:
            raise RuntimeError("not logged in")
        return self.session.did

    # -- raw XRPC ----------------------------------------------------------------
    async def call(
        self,
        nsid: str,
        *,
        params: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        auth: str | None = "access",
        headers: Mapping[str, str] | None = None,
        _retry: bool = True,
        raw: bytes | None = None,
    ) -> Any:
        """GET (no ``data``) or POST a method; returns the decoded JSON body.

        A parameter whose value is a list or tuple is sent repeated (``uris=a&uris=b``);
        ``None`` values are left out. ``headers`` are sent as given (they win).
        ``raw`` POSTs bytes (a block stream) instead of JSON.
        """
        sent: dict[str, str] = {}
        accept = self.moderation.header
        if accept is not None:
            sent[ACCEPT_LABELERS] = accept
        if auth is not None and self.session is not None:
            token = self.session.access_jwt if auth == "access" else self.session.refresh_jwt
            sent["Authorization"] = f"Bearer {token}"
        sent.update(headers or {})
        query: list[tuple[str, str]] = []
        for k, v in (params or {}).items():
            if v is None:
                continue
            if isinstance(v, list | tuple):
                query.extend((k, _param(item)) for item in v)
            else:
                query.append((k, _param(v)))
        url = f"{self.base_url}/xrpc/{nsid}"
        if raw is not None:
            sent.setdefault("Content-Type", "application/vnd.ipld.car")
            request = self.http.post(url, params=query, data=raw, headers=sent)
        elif data is None:
            request = self.http.get(url, params=query, headers=sent)
        else:
            request = self.http.post(url, params=query, json=data, headers=sent)
        async with request as resp:
            body = await resp.read()
            self.content_labelers = resp.headers.get(CONTENT_LABELERS)
            if resp.status >= 400:
                try:
                    err = decode_json(body)
                    error, message = str(err["error"]), str(err.get("message", ""))
                except (XrpcError, AttributeError, KeyError, TypeError):
                    # Every skyfed error is JSON naming the error: anything else is some
                    # other server.
                    raise NotANodeError(self.base_url, resp.status, resp.content_type) from None
                if error == "ExpiredToken" and _retry and auth == "access" and self.session:
                    await self.refresh()
                    return await self.call(
                        nsid,
                        params=params,
                        data=data,
                        auth=auth,
                        headers=headers,
                        _retry=False,
                        raw=raw,
                    )
                raise XrpcError(resp.status, error, message)
            if resp.content_type == "application/json":
                return decode_json(body)
            if resp.content_type.startswith("text/"):
                # A node answers JSON or block streams, never a page.
                raise NotANodeError(self.base_url, resp.status, resp.content_type)
            return body

    async def paginate(
        self, nsid: str, key: str, params: Mapping[str, Any] | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Every item under ``key`` across all pages of a cursor-paginated view."""
        query = dict(params or {})
        while True:
            page = await self.call(nsid, params=query)
            for item in page.get(key, []):
                yield item
            cursor = page.get("cursor")
            if not cursor or not page.get(key) or cursor == query.get("cursor"):
                return
            query["cursor"] = cursor

    # -- accounts and sessions ---------------------------------------------------
    async def create_account(
        self,
        handle: str,
        password: str,
        *,
        email: str | None = None,
        recovery_key: str | None = None,
        did: str | None = None,
        service_token: str | None = None,
        identity_log: Sequence[bytes] | None = None,
    ) -> Session:
        """Create an account here. With ``did``, take in an existing identity (the
        first step of a migration): ``service_token`` proves control of the DID, and
        ``identity_log`` teaches its log to a node that does not hold it."""
        data: dict[str, Any] = {"handle": handle, "password": password}
        if email:
            data["email"] = email
        if recovery_key:
            data["recoveryKey"] = recovery_key
        if did is not None:
            data["did"] = did
        if identity_log:
            data["identityLog"] = [_b64(op) for op in identity_log]
        out = await self.call(
            "com.atproto.server.createAccount",
            data=data,
            auth=None,
            headers=None if service_token is None else {"Authorization": f"Bearer {service_token}"},
        )
        self.session = Session(out["did"], out["handle"], out["accessJwt"], out["refreshJwt"])
        return self.session

    async def login(self, identifier: str, password: str) -> Session:
        out = await self.call(
            "com.atproto.server.createSession",
            data={"identifier": identifier, "password": password},
            auth=None,
        )
        self.session = Session(out["did"], out["handle"], out["accessJwt"], out["refreshJwt"])
        return self.session

    async def refresh(self) -> Session:
        out = await self.call("com.atproto.server.refreshSession", data={}, auth="refresh")
        self.session = Session(out["did"], out["handle"], out["accessJwt"], out["refreshJwt"])
        return self.session

    async def logout(self) -> None:
        await self.call("com.atproto.server.deleteSession", data={}, auth="refresh")
        self.session = None

    # -- records -----------------------------------------------------------------
    async def create_record(
        self, collection: str, record: Mapping[str, Any], *, rkey: str | None = None
    ) -> RecordRef:
        data: dict[str, Any] = {"repo": self.did, "collection": collection, "record": dict(record)}
        if rkey is not None:
            data["rkey"] = rkey
        out = await self.call("com.atproto.repo.createRecord", data=data)
        return RecordRef(out["uri"], out["cid"])

    async def put_record(self, collection: str, rkey: str, record: Mapping[str, Any]) -> RecordRef:
        out = await self.call(
            "com.atproto.repo.putRecord",
            data={"repo": self.did, "collection": collection, "rkey": rkey, "record": dict(record)},
        )
        return RecordRef(out["uri"], out["cid"])

    async def delete_record(self, collection: str, rkey: str) -> None:
        await self.call(
            "com.atproto.repo.deleteRecord",
            data={"repo": self.did, "collection": collection, "rkey": rkey},
        )

    async def get_record(self, repo: str, collection: str, rkey: str) -> dict[str, Any]:
        out: dict[str, Any] = await self.call(
            "com.atproto.repo.getRecord",
            params={"repo": repo, "collection": collection, "rkey": rkey},
        )
        return out

    async def list_records(
        self, repo: str, collection: str, *, limit: int = 50, cursor: str | None = None
    ) -> dict[str, Any]:
        out: dict[str, Any] = await self.call(
            "com.atproto.repo.listRecords",
            params={"repo": repo, "collection": collection, "limit": limit, "cursor": cursor},
        )
        return out

    async def get_record_by_uri(self, uri: str) -> dict[str, Any]:
        """``{uri, cid, value}`` of the record at an AT-URI, as this node holds it."""
        at = AtUri.from_str(uri)
        return await self.get_record(at.authority, at.collection, at.rkey)

    async def ref(self, subject: RecordRef | str) -> RecordRef:
        """A strong reference for a record given as a RecordRef or an AT-URI (the CID
        is looked up on this node; the URI comes back with the author's DID)."""
        if isinstance(subject, RecordRef):
            return subject
        got = await self.get_record_by_uri(subject)
        return RecordRef(got["uri"], got["cid"])

    async def delete(self, uri: RecordRef | str) -> None:
        """Delete one of this account's records (a post, like, repost, follow, block...)."""
        at = AtUri.from_str(uri.uri if isinstance(uri, RecordRef) else uri)
        mine = {self.did, self.session.handle if self.session else self.did}
        if at.authority not in mine:
            raise NotYourRecordError(
                f"{at.to_str()} is a record of {at.authority}, not of @"
                f"{self.session.handle if self.session else self.did}: you can delete "
                "only your own records"
            )
        await self.delete_record(at.collection, at.rkey)

    # -- the social verbs --------------------------------------------------------
    async def post(
        self,
        text: str,
        *,
        reply_to: RecordRef | str | None = None,
        root: RecordRef | None = None,
        quote: RecordRef | str | None = None,
        langs: list[str] | None = None,
        facets: bool = True,
        images: Sequence[tuple[bytes, str]] = (),
    ) -> RecordRef:
        """Post ``text``. Links, ``@handle`` mentions that resolve here, and ``#tags``
        become facets (UTF-8 byte offsets) unless ``facets`` is False.

        ``images``: up to 4 (bytes, alt text), uploaded first (:meth:`upload_blob`) and
        embedded (with a quote: ``app.bsky.embed.recordWithMedia``).

        ``reply_to`` and ``quote`` take a RecordRef or an AT-URI. A reply's ``root``
        is the parent's own root when the parent is itself a reply (looked up on this
        node); pass ``root`` to skip the look-up.
        """
        record: dict[str, Any] = {"$type": "app.bsky.feed.post", "text": text, "createdAt": _now()}
        if facets:
            found = await self.detect_facets(text)
            if found:
                record["facets"] = found
        if reply_to is not None:
            parent, thread_root = await self._reply_refs(reply_to, root)
            record["reply"] = {"root": thread_root.to_json(), "parent": parent.to_json()}
        if quote is not None:
            quoted = await self.ref(quote)
            record["embed"] = {"$type": "app.bsky.embed.record", "record": quoted.to_json()}
        if images:
            if len(images) > 4:
                raise ValueError("a post holds at most 4 images")
            pictures = {
                "$type": "app.bsky.embed.images",
                "images": [
                    {"image": await self.upload_blob(data), "alt": alt} for data, alt in images
                ],
            }
            quoted_embed = record.get("embed")
            record["embed"] = (
                pictures
                if quoted_embed is None
                else {
                    "$type": "app.bsky.embed.recordWithMedia",
                    "record": quoted_embed,
                    "media": pictures,
                }
            )
        if langs:
            record["langs"] = langs
        return await self.create_record("app.bsky.feed.post", record)

    async def upload_blob(self, data: bytes, mime: str = "*/*") -> dict[str, Any]:
        """Upload an image; returns the blob ref to put in a record (the node names its
        type from its bytes; ``mime``, when given, must agree)."""
        out = await self.call(
            "com.atproto.repo.uploadBlob", raw=data, headers={"Content-Type": mime}
        )
        blob = out.get("blob") if isinstance(out, dict) else None
        if not isinstance(blob, dict):
            raise XrpcError(502, "InvalidResponse", "uploadBlob answered without a blob")
        return blob

    async def detect_facets(self, text: str) -> list[dict[str, Any]]:
        """Facets for ``text``, with mentions resolved through this node."""
        handles: list[str] = []

        def collect(handle: str) -> None:
            handles.append(handle)  # first pass: only learn which handles to resolve

        detect_facets(text, collect)
        dids: dict[str, str] = {}
        for handle in dict.fromkeys(handles):
            try:
                dids[handle] = await self.resolve_handle(handle)
            except XrpcError as e:
                if e.status >= 500:
                    raise
        return detect_facets(text, dids.get)

    async def _reply_refs(
        self, reply_to: RecordRef | str, root: RecordRef | None
    ) -> tuple[RecordRef, RecordRef]:
        if isinstance(reply_to, RecordRef) and root is not None:
            return reply_to, root
        uri = reply_to.uri if isinstance(reply_to, RecordRef) else reply_to
        try:
            got = await self.get_record_by_uri(uri)
        except XrpcError as e:
            if e.error != "RecordNotFound" or not isinstance(reply_to, RecordRef):
                raise
            # The parent is not held here: it is the best root we know of.
            return reply_to, root or reply_to
        parent = RecordRef(got["uri"], got["cid"])
        if isinstance(reply_to, RecordRef):
            parent = reply_to
        if root is not None:
            return parent, root
        reply = got.get("value", {}).get("reply")
        thread_root = reply.get("root") if isinstance(reply, dict) else None
        if isinstance(thread_root, dict) and {"uri", "cid"} <= thread_root.keys():
            return parent, RecordRef(str(thread_root["uri"]), str(thread_root["cid"]))
        return parent, parent

    async def like(self, subject: RecordRef | str) -> RecordRef:
        ref = await self.ref(subject)
        return await self.create_record(
            "app.bsky.feed.like",
            {"$type": "app.bsky.feed.like", "subject": ref.to_json(), "createdAt": _now()},
        )

    async def repost(self, subject: RecordRef | str) -> RecordRef:
        ref = await self.ref(subject)
        return await self.create_record(
            "app.bsky.feed.repost",
            {"$type": "app.bsky.feed.repost", "subject": ref.to_json(), "createdAt": _now()},
        )

    async def follow(self, did: str) -> RecordRef:
        """Follow an account, given by DID or handle."""
        return await self.create_record(
            "app.bsky.graph.follow",
            {
                "$type": "app.bsky.graph.follow",
                "subject": await self._did(did),
                "createdAt": _now(),
            },
        )

    async def block(self, actor: str) -> RecordRef:
        """Block an account, given by DID or handle: neither side sees the other's posts."""
        return await self.create_record(
            "app.bsky.graph.block",
            {
                "$type": "app.bsky.graph.block",
                "subject": await self._did(actor),
                "createdAt": _now(),
            },
        )

    async def resolve_handle(self, handle: str) -> str:
        out = await self.call("com.atproto.identity.resolveHandle", params={"handle": handle})
        return str(out["did"])

    async def _did(self, actor: str) -> str:
        actor = actor.removeprefix("@")
        return actor if actor.startswith("did:") else await self.resolve_handle(actor)

    # -- views (app.bsky lexicon shapes) -------------------------------------------
    async def timeline(self, *, limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
        """``{feed: [FeedViewPost], cursor?}``: posts and reposts by whom you follow."""
        return await self._view("app.bsky.feed.getTimeline", limit=limit, cursor=cursor)

    async def author_feed(
        self, actor: str, *, limit: int = 50, cursor: str | None = None
    ) -> dict[str, Any]:
        """``{feed: [FeedViewPost], cursor?}``: one account's posts and reposts."""
        return await self._view(
            "app.bsky.feed.getAuthorFeed", actor=actor, limit=limit, cursor=cursor
        )

    async def latest(self, *, limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
        """``{feed: [FeedViewPost], cursor?}``: the newest posts this node holds."""
        return await self._view("skyfed.feed.getLatest", limit=limit, cursor=cursor)

    async def custom_feed(
        self, feed: str, *, limit: int = 50, cursor: str | None = None
    ) -> dict[str, Any]:
        """``{feed: [FeedViewPost], cursor?}``: a feed generator's feed, named by the
        AT-URI of its ``app.bsky.feed.generator`` record (docs/feed-generators.md)."""
        return await self._view("app.bsky.feed.getFeed", feed=feed, limit=limit, cursor=cursor)

    async def declare_feed(
        self, name: str, *, service: str, display_name: str, description: str | None = None
    ) -> RecordRef:
        """Publish an ``app.bsky.feed.generator`` record: the feed ``name`` that the
        node ``service`` (its DID) answers for."""
        record: dict[str, Any] = {
            "$type": "app.bsky.feed.generator",
            "did": service,
            "displayName": display_name,
            "createdAt": _now(),
        }
        if description is not None:
            record["description"] = description
        return await self.create_record("app.bsky.feed.generator", record, rkey=name)

    async def thread(
        self, uri: str, *, depth: int | None = None, parent_height: int | None = None
    ) -> dict[str, Any]:
        """``{thread: ThreadViewPost}``: a post, its parents and nested replies."""
        return await self._view(
            "app.bsky.feed.getPostThread", uri=uri, depth=depth, parentHeight=parent_height
        )

    async def posts(self, uris: Sequence[str]) -> dict[str, Any]:
        """``{posts: [PostView]}`` for up to 25 AT-URIs (unknown ones are left out)."""
        return await self._view("app.bsky.feed.getPosts", uris=list(uris))

    async def likes(
        self, uri: str, *, limit: int = 50, cursor: str | None = None
    ) -> dict[str, Any]:
        """``{uri, likes: [{actor, createdAt, indexedAt}], cursor?}``."""
        return await self._view("app.bsky.feed.getLikes", uri=uri, limit=limit, cursor=cursor)

    async def reposted_by(
        self, uri: str, *, limit: int = 50, cursor: str | None = None
    ) -> dict[str, Any]:
        """``{uri, repostedBy: [ProfileView], cursor?}``."""
        return await self._view("app.bsky.feed.getRepostedBy", uri=uri, limit=limit, cursor=cursor)

    async def set_profile(self, **fields: str | None) -> RecordRef:
        """Change this account's ``app.bsky.actor.profile`` record (key ``self``):
        ``display_name=`` and ``description=`` (an empty string removes the field,
        ``None`` keeps it). Other fields already in the record are kept."""
        names = {"display_name": "displayName", "description": "description"}
        unknown = set(fields) - set(names)
        if unknown:
            raise TypeError(f"set_profile() got unknown fields: {', '.join(sorted(unknown))}")
        try:
            current = (await self.get_record(self.did, "app.bsky.actor.profile", "self"))["value"]
        except XrpcError as e:
            if e.error != "RecordNotFound":
                raise
            current = {}
        record = {k: v for k, v in dict(current).items()}
        record["$type"] = "app.bsky.actor.profile"
        for arg, key in names.items():
            value = fields.get(arg)
            if value is None:
                continue
            if value.strip():
                record[key] = value
            else:
                record.pop(key, None)
        return await self.put_record("app.bsky.actor.profile", "self", record)

    async def profile(self, actor: str) -> dict[str, Any]:
        """ProfileViewDetailed of an account (DID or handle)."""
        return await self._view("app.bsky.actor.getProfile", actor=actor)

    async def profiles(self, actors: Sequence[str]) -> dict[str, Any]:
        """``{profiles: [ProfileViewDetailed]}`` for up to 25 accounts."""
        return await self._view("app.bsky.actor.getProfiles", actors=list(actors))

    async def follows(
        self, actor: str, *, limit: int = 50, cursor: str | None = None
    ) -> dict[str, Any]:
        """``{subject, follows: [ProfileView], cursor?}``: whom ``actor`` follows."""
        return await self._view(
            "app.bsky.graph.getFollows", actor=actor, limit=limit, cursor=cursor
        )

    async def followers(
        self, actor: str, *, limit: int = 50, cursor: str | None = None
    ) -> dict[str, Any]:
        """``{subject, followers: [ProfileView], cursor?}``: who follows ``actor``."""
        return await self._view(
            "app.bsky.graph.getFollowers", actor=actor, limit=limit, cursor=cursor
        )

    # -- notifications and search ---------------------------------------------------
    async def notifications(
        self,
        *,
        limit: int = 50,
        cursor: str | None = None,
        reasons: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """``{notifications: [...], cursor?, seenAt?}``: this account's, newest first."""
        return await self._view(
            "app.bsky.notification.listNotifications",
            limit=limit,
            cursor=cursor,
            reasons=list(reasons) if reasons else None,
        )

    async def unread_count(self) -> int:
        out = await self._view("app.bsky.notification.getUnreadCount")
        return int(out["count"])

    async def update_seen(self, seen_at: str | None = None) -> None:
        """Mark every notification up to ``seen_at`` (default: now) read."""
        await self.call("app.bsky.notification.updateSeen", data={"seenAt": seen_at or _now()})

    async def search_posts(
        self,
        q: str,
        *,
        limit: int = 25,
        cursor: str | None = None,
        sort: str | None = None,
        **filters: str | None,
    ) -> dict[str, Any]:
        """``{posts: [PostView], cursor?}``; ``filters``: author, mentions, lang,
        since, until, domain (as app.bsky.feed.searchPosts names them)."""
        return await self._view(
            "app.bsky.feed.searchPosts", q=q, limit=limit, cursor=cursor, sort=sort, **filters
        )

    async def search_actors(
        self, q: str, *, limit: int = 25, cursor: str | None = None
    ) -> dict[str, Any]:
        """``{actors: [ProfileView], cursor?}`` whose handle, name or bio match ``q``."""
        return await self._view("app.bsky.actor.searchActors", q=q, limit=limit, cursor=cursor)

    async def _view(self, nsid: str, **params: Any) -> dict[str, Any]:
        out: dict[str, Any] = await self.call(nsid, params=params)
        return out

    # -- moderation ----------------------------------------------------------------
    def moderate(self, view: Mapping[str, Any]) -> Decision:
        """Hide, warn or show a PostView / ProfileView, by this reader's settings and
        the labels the node attached (from the labelers this client named)."""
        return _moderate(view, self.moderation)

    async def label(
        self,
        subject: str,
        val: str,
        *,
        cid: str | None = None,
        neg: bool = False,
        exp: str | None = None,
    ) -> dict[str, Any]:
        """Label a post (AT-URI) or an account (DID) as a labeler; ``neg`` retracts.
        Returns the signed label (JSON form)."""
        spec: dict[str, Any] = {"uri": subject, "val": val}
        if cid is not None:
            spec["cid"] = cid
        if neg:
            spec["neg"] = True
        if exp is not None:
            spec["exp"] = exp
        out = await self.call("skyfed.label.createLabels", data={"labels": [spec]})
        label: dict[str, Any] = out["labels"][0]
        return label

    async def query_labels(
        self, patterns: Sequence[str], *, sources: Sequence[str] = (), limit: int = 50
    ) -> dict[str, Any]:
        """``{labels, cursor?}``: every stored label on matching subjects."""
        return await self._view(
            "com.atproto.label.queryLabels",
            uriPatterns=list(patterns),
            sources=list(sources) or None,
            limit=limit,
        )

    async def mute(self, actor: str) -> None:
        """Mute an account (private to your node): it leaves your views."""
        await self.call("app.bsky.graph.muteActor", data={"actor": await self._did(actor)})

    async def unmute(self, actor: str) -> None:
        await self.call("app.bsky.graph.unmuteActor", data={"actor": await self._did(actor)})

    async def mutes(self, *, limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
        """``{mutes: [ProfileView], cursor?}``."""
        return await self._view("app.bsky.graph.getMutes", limit=limit, cursor=cursor)

    async def moderation_actions(
        self, *, limit: int = 50, cursor: str | None = None, did: str | None = None
    ) -> dict[str, Any]:
        """``{node, policy, actions: [takedown], cursor?}``: what this node does (public)."""
        return await self._view(
            "skyfed.moderation.listActions", limit=limit, cursor=cursor, did=did
        )

    async def take_down(
        self,
        actor: str,
        reason: str,
        *,
        admin_token: str,
        scopes: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """Node policy (this node's admin only): take an account down here."""
        data: dict[str, Any] = {"did": actor, "reason": reason}
        if scopes is not None:
            data["scopes"] = list(scopes)
        out: dict[str, Any] = await self.call(
            "skyfed.admin.takedown",
            data=data,
            auth=None,
            headers={"Authorization": f"Bearer {admin_token}"},
        )
        return out["takedown"]  # type: ignore[no-any-return]

    async def reverse_takedown(
        self, actor: str, reason: str, *, admin_token: str
    ) -> dict[str, Any]:
        """Node policy (this node's admin only): reverse an account's takedown here."""
        out: dict[str, Any] = await self.call(
            "skyfed.admin.reverseTakedown",
            data={"did": actor, "reason": reason},
            auth=None,
            headers={"Authorization": f"Bearer {admin_token}"},
        )
        return out["takedown"]  # type: ignore[no-any-return]

    async def report(
        self,
        subject: str,
        reason_type: str = "com.atproto.moderation.defs#reasonSpam",
        *,
        reason: str | None = None,
        labeler: str | None = None,
    ) -> dict[str, Any]:
        """Report an account (a DID) or a record (an AT-URI) to this node's admin, or
        to a labeler hosted here (``labeler``: its DID)."""
        if subject.startswith("at://"):
            ref = await self.ref(subject)
            target: dict[str, Any] = {"$type": "com.atproto.repo.strongRef", **ref.to_json()}
        else:
            target = {"$type": "com.atproto.admin.defs#repoRef", "did": await self._did(subject)}
        data: dict[str, Any] = {"reasonType": reason_type, "subject": target}
        if reason is not None:
            data["reason"] = reason
        headers = {"atproto-proxy": f"{labeler}#atproto_labeler"} if labeler else None
        out: dict[str, Any] = await self.call(
            "com.atproto.moderation.createReport", data=data, headers=headers
        )
        return out

    async def reports(
        self,
        *,
        admin_token: str,
        limit: int = 50,
        cursor: str | None = None,
        labeler: str | None = None,
        queue: str | None = None,
        resolved: bool = False,
    ) -> dict[str, Any]:
        """The node's report queues (admin only): ``{reports, cursor?}``."""
        out: dict[str, Any] = await self.call(
            "skyfed.admin.listReports",
            params={
                "limit": limit,
                "cursor": cursor,
                "labeler": labeler,
                "queue": queue,
                "resolved": "true" if resolved else None,
            },
            auth=None,
            headers={"Authorization": f"Bearer {admin_token}"},
        )
        return out

    async def resolve_report(
        self, report_id: int, resolution: str, *, admin_token: str
    ) -> dict[str, Any]:
        """Close a report (admin only)."""
        out: dict[str, Any] = await self.call(
            "skyfed.admin.resolveReport",
            data={"id": report_id, "resolution": resolution},
            auth=None,
            headers={"Authorization": f"Bearer {admin_token}"},
        )
        return out["report"]  # type: ignore[no-any-return]

    # -- verification --------------------------------------------------------------
    async def verify_record(self, uri: str, *, cid: str | None = None) -> RecordRef:
        """Check the record at ``uri`` against its author's signed commit.

        Fetches the author's identity log (self-certifying: the DID is the hash of its
        genesis op, and every later op is signed by a rotation key) and a record proof
        (``com.atproto.sync.getRecord``: the signed commit, the MST path to the
        record, the record block) from this node, which need not be the author's
        home. Checks the commit is the author's and signed by their current signing
        key, that the MST under it maps the record's path to a CID, and that the
        record block hashes to that CID (and equals ``cid`` if given).

        What it cannot tell: that this node's copy is the *newest* (a node can serve an
        old commit, or withhold a later identity op). Returns the verified reference;
        raises :class:`VerificationError` if anything does not check out.
        """
        at = AtUri.from_str(uri)
        did = await self._did(at.authority)
        where = f"at://{did}/{at.path}"
        log = await self.call("skyfed.identity.getLog", params={"did": did}, auth=None)
        try:
            ops = [base64.b64decode(op, validate=True) for op in log["ops"]]
            state = resolve_log(did, ops).state
        except (SkyfedError, ValueError, TypeError, KeyError) as e:
            raise VerificationError(f"{where}: identity log of {did} does not resolve: {e}") from e
        if state.tombstoned:
            raise VerificationError(f"{where}: identity {did} is tombstoned")
        key = verify_key(state.signing_key)
        proof = await self.call(
            "com.atproto.sync.getRecord",
            params={"did": did, "collection": at.collection, "rkey": at.rkey},
            auth=None,
        )
        if not isinstance(proof, bytes):
            raise VerificationError(f"{where}: the node did not answer with a block stream")
        try:
            roots, blocks = read_car(proof, max_total=_MAX_PROOF_BYTES)
            commit_block = blocks.get(roots[0])
            if commit_block is None:
                raise VerificationError("the proof lacks its commit block")
            commit = Commit.from_bytes(commit_block)
            if commit.did != did:
                raise VerificationError(f"the commit is by {commit.did}, not {did}")
            commit.verify(key)
            found = MST.load(MemoryBlockStore(blocks), commit.data).get(at.path)
        except VerificationError as e:
            raise VerificationError(f"{where}: {e.message}") from e
        except SkyfedError as e:
            raise VerificationError(f"{where}: {e}") from e
        if found is None:
            raise RecordNotFoundError(
                f"{where} is not in its author's signed repository (rev {commit.rev}): "
                "deleted, or never made"
            )
        record = blocks.get(found)
        if record is None or cid_for_msgpack(record) != found:
            raise VerificationError(f"{where}: the record block does not hash to {found}")
        if cid is not None and CID.from_str(cid) != found:
            raise VerificationError(f"{where}: signed CID is {found}, not {cid}")
        return RecordRef(where, str(found))

    # -- portable identity -------------------------------------------------------
    async def identity_log(self, did: str | None = None) -> list[bytes]:
        """The signed identity ops of ``did`` (default: this account) this node holds."""
        out = await self.call("skyfed.identity.getLog", params={"did": did or self.did}, auth=None)
        return [base64.b64decode(op, validate=True) for op in out["ops"]]

    async def identity(self, did: str | None = None) -> IdentityState:
        """The resolved identity of ``did``, checked here from its signed log."""
        did = did or self.did
        return resolve_log(did, await self.identity_log(did)).state

    async def export_repo(self, did: str | None = None) -> bytes:
        """The whole repository as a block stream (``com.atproto.sync.getRepo``)."""
        out = await self.call(
            "com.atproto.sync.getRepo", params={"did": did or self.did}, auth=None
        )
        if not isinstance(out, bytes):
            raise XrpcError(502, "InvalidResponse", "getRepo did not answer with a block stream")
        return out

    async def import_repo(self, car: bytes) -> dict[str, Any]:
        """Load this account's repository here from a block stream."""
        out: dict[str, Any] = await self.call("com.atproto.repo.importRepo", raw=car)
        return out

    async def node_did(self) -> str:
        out = await self.call("com.atproto.server.describeServer", auth=None)
        return str(out["did"])

    async def service_auth(self, aud: str, lxm: str, *, lifetime: int = 120) -> str:
        """A token, signed by this account's home, for one call of ``lxm`` at ``aud``."""
        out = await self.call(
            "com.atproto.server.getServiceAuth", params={"aud": aud, "lxm": lxm, "exp": lifetime}
        )
        return str(out["token"])

    async def reserve_signing_key(self) -> str:
        """A fresh signing key this node holds for this account (did:key)."""
        out = await self.call("com.atproto.server.reserveSigningKey", data={})
        return str(out["signingKey"])

    async def recommended_did_credentials(self) -> dict[str, Any]:
        out: dict[str, Any] = await self.call("com.atproto.identity.getRecommendedDidCredentials")
        return out

    async def sign_identity_op(self, *, password: str | None = None, **fields: Any) -> bytes:
        """An op on this account's current identity with ``fields`` (atproto's JSON
        names: rotationKeys, verificationMethods, alsoKnownAs, services) changed,
        signed by this node's rotation key. Not applied: submit it. The node wants
        the account's ``password`` for every op but a rotation to a key it reserved."""
        data = dict(fields)
        if password is not None:
            data["password"] = password
        out = await self.call("com.atproto.identity.signPlcOperation", data=data)
        return base64.b64decode(out["operation"], validate=True)

    async def submit_identity_op(
        self, did: str, op: bytes, *, log: Sequence[bytes] = ()
    ) -> dict[str, Any]:
        """Hand a signed op to this node; it checks, stores and gossips it."""
        data: dict[str, Any] = {"did": did, "operation": _b64(op)}
        if log:
            data["log"] = [_b64(item) for item in log]
        out: dict[str, Any] = await self.call("skyfed.identity.submitOp", data=data, auth=None)
        return out

    async def activate_account(self) -> dict[str, Any]:
        out: dict[str, Any] = await self.call("com.atproto.server.activateAccount", data={})
        return out

    async def deactivate_account(self) -> None:
        await self.call("com.atproto.server.deactivateAccount", data={})

    async def account_status(self) -> dict[str, Any]:
        out: dict[str, Any] = await self.call("com.atproto.server.checkAccountStatus")
        return out

    # -- the firehose ------------------------------------------------------------
    async def subscribe(
        self, cursor: int | None = None
    ) -> AsyncIterator[tuple[dict[str, Any], dict[str, Any]]]:
        """Yield (header, body) for every firehose frame, from ``cursor`` or live."""
        url = self.base_url.replace("http", "ws", 1) + "/xrpc/com.atproto.sync.subscribeRepos"
        params = {} if cursor is None else {"cursor": str(cursor)}
        async with self.http.ws_connect(url, params=params, max_msg_size=6 * 1024 * 1024) as ws:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.BINARY:
                    break
                header, body = split_frame(msg.data)
                yield header, body


# -- moving and re-keying an account ---------------------------------------------------


logger = logging.getLogger(__name__)


class MigrationError(SkyfedError):
    """A rotation or migration cannot go ahead (what is missing is in the message)."""


#: What :func:`migrate_account` logs (and ``skyfed account migrate`` prints) when the
#: moved account will hold no rotation key of its own.
UNPROTECTED_WARNING = (
    "this account has no rotation key of its own outranking the nodes' keys: after "
    "the move, whoever controls the new node's rotation key controls the identity, and "
    "a node that first learns the account's log together with a fork by the old node "
    "may take the old node's side. Create accounts with a rotation key (`skyfed account "
    "create` does by default) and keep it safe."
)


async def rotate_signing_key(client: Client, rotation_key: SigningKey | None = None) -> str:
    """Give the logged-in account a new signing key, held by its home node.

    The node reserves the key; the op naming it is signed with ``rotation_key`` (the
    user's own, held locally) if given, else by the node's rotation key. Once the op
    lands the node re-signs the repo's head with the new key. Returns the new key."""
    did = client.did
    new_key = await client.reserve_signing_key()
    if rotation_key is None:
        op = await client.sign_identity_op(verificationMethods={"atproto": new_key})
    else:
        state = await client.identity(did)
        _check_rotation_key(state, rotation_key)
        op = IdentityOp.update(state, rotation_key, signing_key=new_key).to_bytes()
    await client.submit_identity_op(did, op)
    return new_key


def _check_rotation_key(state: IdentityState, key: SigningKey) -> None:
    if key.did_key() not in state.rotation_keys:
        raise MigrationError(
            f"the local rotation key {key.did_key()} is not a rotation key of {state.did}"
        )


async def migrate_account(
    new: Client,
    did: str,
    password: str,
    *,
    old: Client | None = None,
    old_password: str | None = None,
    rotation_key: SigningKey | None = None,
    car: bytes | None = None,
    log: Sequence[bytes] | None = None,
    email: str | None = None,
) -> Session:
    """Move account ``did`` to the node ``new`` talks to; ``new`` ends logged in there.

    With ``old`` (a client logged in at the current home), the old node cooperates: it
    vouches for the account and signs the op with its rotation key. Without it, the
    user's ``rotation_key`` does both, and the repository comes from ``car`` (an
    earlier export) or from the copy ``new`` already holds (nodes replicate every
    repository); ``log`` is an exported identity log, for a node that does not hold
    it. Steps, as atproto's migration: create the account at the new node
    (deactivated), import the repository, sign an op naming the new node's
    credentials, submit it, activate (the new node commits under its key), and
    deactivate at the old node. The old node signs only with the account's password
    there: ``old_password``, by default ``password``.

    Without a ``rotation_key`` the moved identity's only rotation key is the new
    node's; that is logged as a warning (:data:`UNPROTECTED_WARNING`).
    """
    source = old if old is not None else new
    if log is None:
        log = await source.identity_log(did)
    else:
        # An exported log may be older than what the network holds: merge.
        with contextlib.suppress(XrpcError):
            log = [*log, *await source.identity_log(did)]
    log = list(dict.fromkeys(log))
    state = resolve_log(did, log).state
    if state.tombstoned:
        raise MigrationError(f"{did} is tombstoned")
    if old is None and rotation_key is None:
        raise MigrationError(
            "without the old node, migration needs a rotation key held locally "
            "(made by `skyfed account create`)"
        )
    if rotation_key is not None:
        _check_rotation_key(state, rotation_key)
    else:
        logger.warning("migrating %s: %s", did, UNPROTECTED_WARNING)
    aud = await new.node_did()
    lxm = "com.atproto.server.createAccount"
    if old is not None:
        token = await old.service_auth(aud, lxm)
    else:
        assert rotation_key is not None
        token = make_service_token(
            did=did,
            aud=aud,
            lxm=lxm,
            key=rotation_key,
            now=int(time.time()),
            lifetime=120,
            jti=secrets.token_hex(16),
        )
    await new.create_account(
        state.handle, password, email=email, did=did, service_token=token, identity_log=log
    )
    if car is None:
        try:
            car = await source.export_repo(did)
        except XrpcError as e:
            raise MigrationError(
                f"{source.base_url} holds no copy of the repository ({e.error}); "
                "pass one exported earlier"
            ) from e
    await new.import_repo(car)
    creds = await new.recommended_did_credentials()
    rotation_keys = [k for k in creds["rotationKeys"] if isinstance(k, str)]
    if rotation_key is not None:
        rotation_keys.insert(0, rotation_key.did_key())
    if old is not None:
        op = await old.sign_identity_op(
            password=password if old_password is None else old_password,
            rotationKeys=rotation_keys,
            verificationMethods=creds["verificationMethods"],
            alsoKnownAs=creds["alsoKnownAs"],
            services=creds["services"],
        )
    else:
        assert rotation_key is not None
        current = await new.identity(did)
        op = IdentityOp.update(
            current,
            rotation_key,
            rotation_keys=rotation_keys,
            signing_key=creds["verificationMethods"]["atproto"],
            endpoint=creds["services"]["atproto_pds"]["endpoint"],
        ).to_bytes()
    await new.submit_identity_op(did, op)
    await new.activate_account()
    if old is not None:
        try:
            await old.deactivate_account()
        except XrpcError as e:
            if e.error != "AccountDeactivated" and e.status < 500:
                raise
    assert new.session is not None
    return new.session


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def split_frame(data: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """A firehose frame's header and body (see :mod:`protocol.eventstream`)."""
    return decode_frame(data)


def decode_json(body: bytes) -> Any:
    """A node's JSON answer. An answer that is not JSON, or is nested past what
    Python's parser takes (a hostile node can send either), is the node's fault:
    :class:`XrpcError` ``InvalidResponse``, never a crash of the caller."""
    try:
        return json.loads(body)
    except RecursionError:
        raise XrpcError(502, "InvalidResponse", "the node's answer is nested too deeply") from None
    except ValueError as e:
        raise XrpcError(502, "InvalidResponse", f"the node's answer is not JSON: {e}") from None


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
