"""Feeds as a reader sees them: getFeed, getFeedGenerator(s), and the generator side
(getFeedSkeleton, describeFeedGenerator) of the feeds this node hosts.

``getFeed`` looks up the feed's declaration (an ``app.bsky.feed.generator`` record
this node holds), asks the service it names for a skeleton (this node's own
:class:`FeedHost` when the service is this node's DID, another node through
:class:`node.net.remotefeeds.RemoteFeeds` otherwise), and hydrates the skeleton
locally with what this node holds, hiding what views hide.

``getFeedSkeleton`` answers only for declarations that name this node's DID and
whose record key is a hosted generator's name. Its caller may vouch for a reader
with a service token (``iss`` the reader, ``aud`` this node, ``lxm``
``app.bsky.feed.getFeedSkeleton``), checked against the reader's current signing key
from its identity log and good once (a replay is refused); without one the feed is
built for nobody in particular.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from protocol.errors import RemoteProtocolError
from protocol.feedgen import MAX_CURSOR, Skeleton, feed_uri_parts
from protocol.serviceauth import (
    MAX_TOKEN_BYTES,
    ServiceAuthError,
    UsedTokens,
    verify_service_token,
)

from ..feeds import FeedViews, UnknownFeed
from .host import FeedHost

__all__ = ["Feeds", "RemoteSkeletons"]

GET_SKELETON = "app.bsky.feed.getFeedSkeleton"
#: Most hosted feeds describeFeedGenerator lists.
MAX_DESCRIBED = 1000


class RemoteSkeletons(Protocol):
    """What :class:`Feeds` needs from the network side (node/net/remotefeeds.py)."""

    def reachable(self, service: str) -> bool: ...

    async def skeleton(
        self, service: str, feed: str, viewer: str | None, limit: int, cursor: str | None
    ) -> Skeleton: ...

    async def describe(self, service: str) -> list[str] | None: ...


class Feeds:
    def __init__(
        self,
        *,
        node_did: str,
        views: FeedViews,
        host: FeedHost,
        remote: RemoteSkeletons,
        signing_key_of: Callable[[str], Awaitable[str | None]],
        used_tokens: UsedTokens,
        clock: Callable[[], float],
    ):
        self.node_did = node_did
        self.views = views
        self.host = host
        self.remote = remote
        self.signing_key_of = signing_key_of
        self.used_tokens = used_tokens
        self.clock = clock

    # -- the reader's side ---------------------------------------------------------
    async def _declared(self, feed: str) -> tuple[str, str]:
        if feed_uri_parts(feed) is None:
            raise UnknownFeed(f"{feed} is not the AT-URI of a feed generator record")
        found = await self.views.generator_service(feed)
        if found is None:
            raise UnknownFeed(f"could not find feed {feed}")
        return found

    async def get_feed(
        self, feed: str, viewer: str | None, limit: int, cursor: str | None
    ) -> dict[str, Any]:
        service, rkey = await self._declared(feed)
        if cursor is not None and len(cursor) > MAX_CURSOR:
            raise RemoteProtocolError(f"cursor is over {MAX_CURSOR} characters")
        if service == self.node_did:
            if self.host.get(rkey) is None:
                raise UnknownFeed(f"this node hosts no feed {rkey!r}")
            skeleton = await self.host.skeleton(rkey, viewer, limit, cursor)
        else:
            skeleton = await self.remote.skeleton(service, feed, viewer, limit, cursor)
        return await self.views.hydrate(skeleton, viewer)

    async def generator(self, feed: str, viewer: str | None) -> dict[str, Any]:
        """getFeedGenerator: the view, whether the service answers (``isOnline``) and
        serves this feed (``isValid``)."""
        if feed_uri_parts(feed) is None:
            raise RemoteProtocolError(f"{feed} is not the AT-URI of a feed generator record")
        views = await self.views.generators([feed], viewer)
        if not views:
            raise RemoteProtocolError(f"could not find feed {feed}")
        view = views[0]
        service, rkey = await self._declared(feed)
        if service == self.node_did:
            online, valid = True, self.host.get(rkey) is not None
        elif not self.remote.reachable(service):
            online, valid = False, False
        else:
            served = await self.remote.describe(service)
            online, valid = served is not None, served is not None and feed in served
        return {"view": view, "isOnline": online, "isValid": valid}

    async def generators(self, feeds: list[str], viewer: str | None) -> dict[str, Any]:
        return {"feeds": await self.views.generators(feeds, viewer)}

    # -- the generator's side ------------------------------------------------------
    async def describe(self) -> dict[str, Any]:
        uris = await self.views.served_feeds(self.node_did, self.host.names(), MAX_DESCRIBED)
        return {"did": self.node_did, "feeds": [{"uri": u} for u in uris]}

    async def skeleton(
        self, feed: str, viewer: str | None, limit: int, cursor: str | None
    ) -> dict[str, Any]:
        service, rkey = await self._declared(feed)
        if service != self.node_did or self.host.get(rkey) is None:
            raise UnknownFeed(f"this node does not serve {feed}")
        if cursor is not None and len(cursor) > MAX_CURSOR:
            raise RemoteProtocolError(f"cursor is over {MAX_CURSOR} characters")
        return (await self.host.skeleton(rkey, viewer, limit, cursor)).to_json()

    async def caller(self, token: str) -> str:
        """The reader a service token vouches for (see the module docstring)."""
        if len(token) > MAX_TOKEN_BYTES:
            raise ServiceAuthError(f"a service token is at most {MAX_TOKEN_BYTES} bytes")
        import jwt  # loaded by the first service token read, not with the node

        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as e:
            raise ServiceAuthError(f"malformed service token: {e}") from e
        iss = claims.get("iss") if isinstance(claims, dict) else None
        if not isinstance(iss, str) or len(iss) > 2048:
            raise ServiceAuthError("service token needs an iss")
        key = await self.signing_key_of(iss)
        if key is None:
            raise ServiceAuthError(f"no identity known for {iss}")
        now = int(self.clock())
        verify_service_token(
            token, did=iss, aud=self.node_did, lxm=GET_SKELETON, keys=[key], now=now
        )
        self.used_tokens.use(token, now)
        return iss
