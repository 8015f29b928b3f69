"""Bounds on what a remote party can make the node hold: bytes, time and count.

Every buffer a client or peer can fill has a limit in bytes and a deadline, and the
number of things that hold one (request bodies being received, response streams,
firehose subscribers, peer links) is capped in all and per client address. This
module holds the HTTP side of that and the arithmetic that turns the bounds into
the node's memory ceiling (``memory_ceiling_mb``); the firehose (node/server/firehose.py)
and the peer links (node/net/federation.py) enforce their own with the settings named
here. docs/security.md, "Memory bounds", lists them all with their defaults.

What it refuses: a body declared longer than its route accepts (413 before a byte
is read), a body not received within ``body_timeout`` (408, connection closed),
more bodies in flight than ``max_body_readers`` (503) or than
``max_body_readers_per_addr`` from one address (429), more response streams than
``max_repo_streams`` / ``max_repo_streams_per_addr``, and a reader that does not
take a chunk of a stream within ``send_timeout`` (cut off).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Middleware

from protocol.errors import RemoteProtocolError

from .server.ratelimit import client_key

if TYPE_CHECKING:
    from .config import NodeConfig

__all__ = [
    "BASELINE_MB",
    "STREAM_CHUNK",
    "AddressSlots",
    "body_middleware",
    "memory_budget",
    "stream_chunks",
]

#: Bytes of a response stream produced at once (one storage read, one write).
STREAM_CHUNK = 256 * 1024
#: An idle node's working set with its caches full (MST node cache, signing-key
#: cache, the reconciliation set), in MiB: the part of the ceiling no bound covers.
BASELINE_MB = 160
_MB = 1024 * 1024
#: Seconds aiohttp goes on reading (and dropping) a request body the handler left
#: unread before it closes the connection (its default is 10).
LINGER = 2.0
#: Routes whose body is read by the handler under its own, larger limit.
_OWN_LIMIT = {"/xrpc/com.atproto.repo.importRepo"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class TooBusy(RemoteProtocolError):
    """A cap on things held at once is reached."""

    error = "RateLimitExceeded"
    status = 429


class AddressSlots:
    """A count of things held at once, capped in all and per client address."""

    def __init__(self, total: int, per_addr: int, what: str):
        self.total, self.per_addr, self.what = total, per_addr, what
        self._by_addr: Counter[str] = Counter()
        self.held = 0

    def acquire(self, address: str | None) -> str:
        """Take a slot for ``address`` (returns its key for :meth:`release`), or raise
        TooBusy (429 per address, 503 in all)."""
        key = client_key(address or "unknown")
        if self.held >= self.total:
            raise TooBusy(f"too many {self.what} at once on this node", status=503)
        if self._by_addr[key] >= self.per_addr:
            raise TooBusy(f"too many {self.what} at once from your address")
        self._by_addr[key] += 1
        self.held += 1
        return key

    def release(self, key: str) -> None:
        self.held -= 1
        self._by_addr[key] -= 1
        if self._by_addr[key] <= 0:
            del self._by_addr[key]


def body_middleware(config: NodeConfig) -> Middleware:
    """Bound every request body: declared size (413 at once), time to receive it
    (408) and bodies in flight (429/503). The slot and the deadline end as soon as
    the body has arrived; most bodies come with their headers and never wait."""
    slots = AddressSlots(
        config.max_body_readers, config.max_body_readers_per_addr, "request bodies"
    )

    @web.middleware
    async def bound_body(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.body_exists:
            return await handler(request)
        own = request.path in _OWN_LIMIT
        limit = config.max_import_bytes if own else config.max_body
        declared = request.content_length
        if declared is not None and declared > limit:
            return _refuse(413, "PayloadTooLarge", f"request body is over {limit} bytes")
        if own:
            # It reads with its own deadline and slot; a body it refused part-way is
            # not read through (aiohttp would linger on it): the connection closes.
            response = await handler(request)
            if not request.content.is_eof():
                response.force_close()
            return response
        content = request.content
        if content.is_eof():
            return await handler(request)
        try:
            key = slots.acquire(request.remote)
        except TooBusy as e:
            return _refuse(e.status, e.error, e.message)
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                slots.release(key)

        try:
            async with asyncio.timeout(config.body_timeout) as deadline:

                def arrived() -> None:
                    if held:  # (the body may come after the handler is done)
                        deadline.reschedule(None)  # the handler's own work is not timed
                    release()

                content.on_eof(arrived)
                return await handler(request)
        except TimeoutError:
            if not deadline.expired():
                raise
            # The handler was waiting for the body (the deadline ends when it has
            # arrived), so it had done nothing yet: cancelling it undoes nothing.
            return _refuse(
                408,
                "RequestTimeout",
                f"request body not received within {config.body_timeout:.0f}s",
            )
        finally:
            release()

    return bound_body


def _refuse(status: int, error: str, message: str) -> web.Response:
    """An answer before the body is read: the connection closes after it (the unread
    body would otherwise have to be read through)."""
    response = web.json_response({"error": error, "message": message}, status=status)
    response.force_close()
    return response


async def stream_chunks(
    request: web.Request,
    response: web.StreamResponse,
    chunks: AsyncIterator[bytes],
    send_timeout: float,
) -> bool:
    """Write ``chunks`` to a prepared ``response``, each awaiting the reader (aiohttp
    drains past 64 KiB), and cut the connection when one is not taken within
    ``send_timeout``. True if the stream was sent whole."""
    try:
        async for chunk in chunks:
            async with asyncio.timeout(send_timeout):
                await response.write(chunk)
        await response.write_eof()
    except TimeoutError:
        if request.transport is not None:
            request.transport.abort()  # a reader that does not read holds nothing
        return False
    except ConnectionError:
        return False
    return True


def memory_budget(config: NodeConfig) -> dict[str, int]:
    """What each bound lets remote parties make the node hold at most, in bytes,
    plus the idle working set: their sum is what ``memory_ceiling_mb`` must cover."""
    from protocol.peerwire import MAX_FRAME

    from .net.federation import INBOX_BYTES_TOTAL, REPO_ANSWERS_AT_ONCE

    return {
        "baseline": BASELINE_MB * _MB,
        # aiohttp gathers a body in chunks, then joins them: twice the body.
        "request bodies": config.max_body_readers * config.max_body * 2,
        "repo streams": config.max_repo_streams * (STREAM_CHUNK * 2 + 64 * 1024),
        # The stream, its blocks and the tree built from them.
        "repo import": config.max_import_bytes * 3,
        "firehose": config.firehose_buffer_total + config.max_subscribers * 64 * 1024,
        "peer send queues": config.peer_buffer_total,
        # Raw bytes and the decoded messages made from them.
        "peer inboxes": INBOX_BYTES_TOTAL * 2,
        # Gathered, copied out, then encoded into the message.
        "peer repo answers": REPO_ANSWERS_AT_ONCE * MAX_FRAME * 3,
        # Every link may be sent a message of a frame, the hello included: one being
        # assembled by aiohttp, one assembled and waiting, and the one received and
        # decoded before the inbox check (peer inboxes, above) counts it.
        "peer link receives": peer_links(config) * MAX_FRAME * 3,
        # A blob held whole while it is sent, or while a fetched one is checked and
        # stored (an upload is a request body, above).
        "blobs": (config.max_blob_answers + config.blob_fetches) * config.blob_max_bytes,
    }


def peer_links(config: NodeConfig) -> int:
    """Peer links a node holds at most: inbound ones (``max_inbound_links``, counted
    from before the handshake), the ones it dials (``max_peers``) and its static
    ``peers``."""
    return config.max_inbound_links + config.max_peers + len(config.peers)


def budget_lines(config: NodeConfig) -> Iterator[str]:
    budget = memory_budget(config)
    for name, size in budget.items():
        yield f"{name}: {size / _MB:.0f} MiB"
    yield f"sum: {sum(budget.values()) / _MB:.0f} MiB (ceiling {config.memory_ceiling_mb} MiB)"
