"""Asking another node for a feed skeleton (``getFeed`` of a generator hosted elsewhere).

A feed's declaration names the DID of the service that answers for it. On skyfed
that is a node's DID (its node key as ``did:key``), and this node finds the node's
address only from its own peer links: an address it dialled that answered the
signed handshake with that key, or else the address a linked peer (authenticated by
that key) gave for itself. A DID no link vouches for is not dialled at all.

The call carries a service token (:mod:`protocol.serviceauth`) by which the reader
vouches for this one request: ``iss`` the reader, ``aud`` the generator's node DID,
``lxm`` ``app.bsky.feed.getFeedSkeleton``, one minute of life, one use. An
anonymous reader's call carries none.

Bounds, whatever the other node does: the connection goes through the node's dial
policy (node/net/netpolicy.py: checked after DNS, redirects refused), the whole call
takes at most ``feed_timeout`` seconds, the answer at most ``feed_remote_bytes``
bytes (a larger Content-Length is refused before reading, a body is read no further
than the bound), and the answer must parse as a skeleton of at most ``limit`` posts
(:class:`protocol.feedgen.Skeleton`). Any failure is ``UpstreamFailure`` (502) or
``UpstreamTimeout`` (504) to the reader, never a hang or a 500.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Final

import aiohttp
import orjson

from protocol.errors import RemoteProtocolError
from protocol.feedgen import MAX_CURSOR, Skeleton, SkeletonError

from .netpolicy import DialPolicy

__all__ = ["GET_SKELETON", "RemoteFeeds"]

GET_SKELETON: Final = "app.bsky.feed.getFeedSkeleton"
DESCRIBE: Final = "app.bsky.feed.describeFeedGenerator"
#: Feeds a describeFeedGenerator answer may list (the rest are ignored).
MAX_DESCRIBED: Final = 1000
#: How long a describeFeedGenerator answer (or its absence) is reused, in seconds,
#: and for how many services at most: getFeedGenerator is a reader's request, and
#: each one must not become a request to another node.
DESCRIBE_TTL: Final = 60.0
MAX_DESCRIBED_SERVICES: Final = 1000

Sign = Callable[[str, str, str], Awaitable[str]]


class UpstreamTimeout(RemoteProtocolError):
    error = "UpstreamTimeout"
    status = 504


class RemoteFeeds:
    """Outbound calls to other nodes' feed generators."""

    def __init__(
        self,
        *,
        address_of: Callable[[str], str | None],
        policy: DialPolicy,
        sign: Sign,
        timeout: float,
        max_bytes: int,
    ):
        self.address_of = address_of
        self.policy = policy
        self.sign = sign
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._session: aiohttp.ClientSession | None = None
        self._described: OrderedDict[str, tuple[float, list[str] | None]] = OrderedDict()
        #: Calls that failed (refused, timed out, bad answers), for tests and operators.
        self.failures = 0

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = self.policy.session()
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def reachable(self, service: str) -> bool:
        return self.address_of(service) is not None

    async def skeleton(
        self, service: str, feed: str, viewer: str | None, limit: int, cursor: str | None
    ) -> Skeleton:
        params = {"feed": feed, "limit": str(limit)}
        if cursor is not None:
            if len(cursor) > MAX_CURSOR:
                raise RemoteProtocolError(f"cursor is over {MAX_CURSOR} characters")
            params["cursor"] = cursor
        headers = {}
        if viewer is not None:
            headers["Authorization"] = "Bearer " + await self.sign(viewer, service, GET_SKELETON)
        body = await self._get(service, GET_SKELETON, params, headers)
        try:
            return Skeleton.from_bytes(body, max_items=limit, max_bytes=self.max_bytes)
        except SkeletonError:
            self.failures += 1
            raise

    async def describe(self, service: str) -> list[str] | None:
        """The feed URIs the service says it serves, or None if it did not answer
        (either reused for :data:`DESCRIBE_TTL` seconds)."""
        now = time.monotonic()
        hit = self._described.get(service)
        if hit is not None and hit[0] > now:
            return hit[1]
        found = await self._describe(service)
        self._described[service] = (now + DESCRIBE_TTL, found)
        self._described.move_to_end(service)
        while len(self._described) > MAX_DESCRIBED_SERVICES:
            self._described.popitem(last=False)
        return found

    async def _describe(self, service: str) -> list[str] | None:
        try:
            body = await self._get(service, DESCRIBE, {}, {})
            value: Any = orjson.loads(body)
        except (RemoteProtocolError, orjson.JSONDecodeError):
            return None
        feeds = value.get("feeds") if isinstance(value, dict) else None
        if not isinstance(feeds, list):
            return None
        out = []
        for entry in feeds[:MAX_DESCRIBED]:
            uri = entry.get("uri") if isinstance(entry, dict) else None
            if isinstance(uri, str) and len(uri) <= 8192:
                out.append(uri)
        return out

    async def _get(
        self, service: str, nsid: str, params: dict[str, str], headers: dict[str, str]
    ) -> bytes:
        base = self.address_of(service)
        if base is None:
            self.failures += 1
            raise SkeletonError(f"feed service {service} is not known to this node")
        url = f"{base.rstrip('/')}/xrpc/{nsid}"
        try:
            async with asyncio.timeout(self.timeout):
                async with self._http().get(
                    url, params=params, headers=headers, allow_redirects=False
                ) as resp:
                    if resp.status != 200:
                        raise SkeletonError(f"feed service answered HTTP {resp.status}")
                    declared = resp.content_length
                    if declared is not None and declared > self.max_bytes:
                        raise SkeletonError(f"feed service answer is over {self.max_bytes} bytes")
                    body = bytearray()
                    while True:
                        chunk = await resp.content.read(64 * 1024)
                        if not chunk:
                            break
                        body += chunk
                        if len(body) > self.max_bytes:
                            raise SkeletonError(
                                f"feed service answer is over {self.max_bytes} bytes"
                            )
                    return bytes(body)
        except TimeoutError:
            self.failures += 1
            raise UpstreamTimeout(f"feed service took longer than {self.timeout}s") from None
        except SkeletonError:
            self.failures += 1
            raise
        except (aiohttp.ClientError, OSError) as e:
            self.failures += 1
            raise SkeletonError(f"feed service is unreachable: {type(e).__name__}") from None
