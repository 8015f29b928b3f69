"""An async client for a skyfed node (or any server speaking these XRPC methods).

    async with Client("http://127.0.0.1:2583") as c:
        await c.create_account("alice.skyfed.test", "correct horse battery")
        ref = await c.post("hello, network")
        await c.like(ref)

Errors come back as :class:`XrpcError` carrying the server's ``error`` name, message
and HTTP status. An expired access token is refreshed once, transparently.
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from protocol.eventstream import decode_frame

__all__ = ["Client", "RecordRef", "Session", "XrpcError"]


class XrpcError(Exception):
    """The server answered with an error."""

    def __init__(self, status: int, error: str, message: str):
        super().__init__(f"{error} ({status}): {message}")
        self.status = status
        self.error = error
        self.message = message


@dataclass(frozen=True, slots=True)
class RecordRef:
    """A strong reference to a record: its AT-URI and CID."""

    uri: str
    cid: str

    def to_json(self) -> dict[str, str]:
        return {"uri": self.uri, "cid": self.cid}


@dataclass(slots=True)
class Session:
    did: str
    handle: str
    access_jwt: str
    refresh_jwt: str


def _now() -> str:
    t = datetime.datetime.now(datetime.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


class Client:
    """One node, one (optional) logged-in account."""

    def __init__(self, base_url: str, *, session: aiohttp.ClientSession | None = None):
        self.base_url = base_url.rstrip("/")
        self._http = session
        self._own_http = session is None
        self.session: Session | None = None

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
        _retry: bool = True,
    ) -> Any:
        """GET (no ``data``) or POST a method; returns the decoded JSON body."""
        headers = {}
        if auth is not None and self.session is not None:
            token = self.session.access_jwt if auth == "access" else self.session.refresh_jwt
            headers["Authorization"] = f"Bearer {token}"
        query = {k: _param(v) for k, v in (params or {}).items() if v is not None}
        url = f"{self.base_url}/xrpc/{nsid}"
        if data is None:
            request = self.http.get(url, params=query, headers=headers)
        else:
            request = self.http.post(url, params=query, json=data, headers=headers)
        async with request as resp:
            body = await resp.read()
            if resp.status >= 400:
                try:
                    err = decode_json(body)
                    error, message = str(err.get("error")), str(err.get("message", ""))
                except ValueError:
                    error, message = "Error", body[:200].decode("utf-8", "replace")
                if error == "ExpiredToken" and _retry and auth == "access" and self.session:
                    await self.refresh()
                    return await self.call(nsid, params=params, data=data, auth=auth, _retry=False)
                raise XrpcError(resp.status, error, message)
            if resp.content_type == "application/json":
                return decode_json(body)
            return body

    # -- accounts and sessions ---------------------------------------------------
    async def create_account(
        self,
        handle: str,
        password: str,
        *,
        email: str | None = None,
        recovery_key: str | None = None,
    ) -> Session:
        data: dict[str, Any] = {"handle": handle, "password": password}
        if email:
            data["email"] = email
        if recovery_key:
            data["recoveryKey"] = recovery_key
        out = await self.call("com.atproto.server.createAccount", data=data, auth=None)
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

    # -- the social verbs --------------------------------------------------------
    async def post(
        self,
        text: str,
        *,
        reply_to: RecordRef | None = None,
        root: RecordRef | None = None,
        quote: RecordRef | None = None,
        langs: list[str] | None = None,
    ) -> RecordRef:
        record: dict[str, Any] = {"$type": "app.bsky.feed.post", "text": text, "createdAt": _now()}
        if reply_to is not None:
            record["reply"] = {"root": (root or reply_to).to_json(), "parent": reply_to.to_json()}
        if quote is not None:
            record["embed"] = {"$type": "app.bsky.embed.record", "record": quote.to_json()}
        if langs:
            record["langs"] = langs
        return await self.create_record("app.bsky.feed.post", record)

    async def like(self, subject: RecordRef) -> RecordRef:
        return await self.create_record(
            "app.bsky.feed.like",
            {"$type": "app.bsky.feed.like", "subject": subject.to_json(), "createdAt": _now()},
        )

    async def repost(self, subject: RecordRef) -> RecordRef:
        return await self.create_record(
            "app.bsky.feed.repost",
            {"$type": "app.bsky.feed.repost", "subject": subject.to_json(), "createdAt": _now()},
        )

    async def follow(self, did: str) -> RecordRef:
        return await self.create_record(
            "app.bsky.graph.follow",
            {"$type": "app.bsky.graph.follow", "subject": did, "createdAt": _now()},
        )

    async def resolve_handle(self, handle: str) -> str:
        out = await self.call("com.atproto.identity.resolveHandle", params={"handle": handle})
        return str(out["did"])

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


def split_frame(data: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """A firehose frame's header and body (see :mod:`protocol.eventstream`)."""
    return decode_frame(data)


def decode_json(body: bytes) -> Any:
    import json

    return json.loads(body)


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
