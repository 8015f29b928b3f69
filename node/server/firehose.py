"""The firehose: ``com.atproto.sync.subscribeRepos`` over WebSocket.

Each binary WebSocket message is two canonical msgpack documents back to back: a
header ``{"op": 1, "t": "#commit"}`` (``op: -1`` for an error, with no ``t``) and a
body. Every event gets a node-wide ``seq`` when it is stored; its frame is encoded
once, stored with it, and the same bytes go to every subscriber.

Cursor rules, as atproto defines them: no cursor starts live; a cursor inside the
replay window replays every stored event with ``seq >= cursor`` and then goes live
without gap or duplicate; a cursor older than the window gets ``#info
OutdatedCursor`` and the whole window; a cursor past the newest event gets an
error frame ``FutureCursor`` and a close.

Every subscriber has a bounded queue. One that falls behind is sent
``ConsumerTooSlow`` and closed: it never grows the node's memory; it can reconnect
with a cursor and catch up from storage. Behind means more than ``buffer_limit``
unsent bytes, or unsent bytes waiting for longer than ``behind_timeout`` seconds, or
being the furthest behind when all subscribers' unsent bytes together pass
``total_limit``. Subscribers are capped in number, in all and per client address
(``max_subscribers``, ``max_subscribers_per_addr``: 429 before the upgrade).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from aiohttp import WSCloseCode, web

from protocol.eventstream import encode_error_frame, encode_frame

from ..limits import AddressSlots, TooBusy
from ..store.sqlite import SqliteStorage

__all__ = ["Firehose", "TooBusy", "ws_binary_frame"]

_REPLAY_BATCH = 500


def ws_binary_frame(payload: bytes) -> bytes:
    """An unmasked, uncompressed WebSocket binary frame (RFC 6455 §5.2), as a server
    sends it. Every subscriber gets these same bytes, so they are built once."""
    n = len(payload)
    if n < 126:
        head = bytes([0x82, n])
    elif n < 65536:
        head = bytes([0x82, 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x82, 127]) + n.to_bytes(8, "big")
    return head + payload


@dataclass(eq=False)
class _Subscriber:
    transport: asyncio.Transport
    limit: int
    done: asyncio.Event = field(default_factory=asyncio.Event)
    too_slow: bool = False
    #: When unsent bytes were first seen waiting (monotonic), None while caught up.
    behind_since: float | None = None


class Firehose:
    """Fans stored events out to WebSocket subscribers.

    Live frames are written straight to each subscriber's transport as pre-built
    WebSocket frames: one encoding per event, one ``write`` per subscriber, no task
    switch per frame. A subscriber whose unsent bytes pass ``buffer_limit`` is too
    slow and is dropped; nothing grows without bound.
    """

    def __init__(
        self,
        storage: SqliteStorage,
        *,
        buffer_limit: int = 4 * 1024 * 1024,
        total_limit: int = 64 * 1024 * 1024,
        behind_timeout: float = 60.0,
        max_subscribers: int = 256,
        max_subscribers_per_addr: int = 16,
    ):
        self.storage = storage
        self.buffer_limit = buffer_limit
        self.total_limit = total_limit
        self.behind_timeout = behind_timeout
        self.slots = AddressSlots(max_subscribers, max_subscribers_per_addr, "firehose subscribers")
        self.last_seq = 0
        self._subscribers: set[_Subscriber] = set()
        self._sockets: set[web.WebSocketResponse] = set()
        self.dropped_slow = 0

    async def start(self) -> None:
        _, hi = await self.storage.seq_bounds()
        self.last_seq = hi
        self.storage.on_events = self.publish

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def publish(self, events: list[tuple[int, bytes]]) -> None:
        """Called on the loop once events are durable, in seq order."""
        if not events:
            return
        self.last_seq = max(self.last_seq, events[-1][0])
        if not self._subscribers:
            return
        wire = b"".join(ws_binary_frame(frame) for _, frame in events)
        now = time.monotonic()
        total = 0
        live: list[tuple[int, _Subscriber]] = []
        for sub in self._subscribers:
            if sub.done.is_set():
                continue
            transport = sub.transport
            if transport.is_closing():
                sub.done.set()
                continue
            pending = transport.get_write_buffer_size()
            if pending > sub.limit or self._behind_too_long(sub, now):
                self._drop(sub)
                continue
            transport.write(wire)
            pending += len(wire)
            total += pending
            live.append((pending, sub))
        if total > self.total_limit:
            # All subscribers together hold too much: drop the furthest behind first.
            live.sort(key=lambda p: p[0], reverse=True)
            for pending, sub in live:
                if total <= self.total_limit:
                    break
                self._drop(sub)
                total -= pending

    def _behind_too_long(self, sub: _Subscriber, now: float) -> bool:
        """Note when ``sub`` fell behind (bytes unsent); True once that has lasted
        longer than ``behind_timeout``."""
        if sub.transport.get_write_buffer_size() == 0:
            sub.behind_since = None
            return False
        if sub.behind_since is None:
            sub.behind_since = now
        return now - sub.behind_since > self.behind_timeout

    def _drop(self, sub: _Subscriber) -> None:
        sub.too_slow = True
        sub.done.set()
        self.dropped_slow += 1

    async def serve(self, request: web.Request, cursor: int | None) -> web.WebSocketResponse:
        key = self.slots.acquire(request.remote)  # TooBusy: answered 429/503
        try:
            # No permessage-deflate: compressing per subscriber would cost 4x the CPU,
            # and live frames are written pre-built (see publish()).
            ws = web.WebSocketResponse(heartbeat=30, max_msg_size=1024, compress=False)
            await ws.prepare(request)
            transport = request.transport
            self._sockets.add(ws)
            try:
                if transport is not None:
                    await self._stream(ws, transport, cursor)
            except (ConnectionError, TimeoutError):
                pass  # the subscriber went away or stopped reading mid-replay
            finally:
                self._sockets.discard(ws)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5):
                        await ws.close()
                if transport is not None and transport.get_write_buffer_size() > 0:
                    transport.abort()  # what a gone reader left unsent is not kept
            return ws
        finally:
            self.slots.release(key)

    async def close_all(self) -> None:
        """Close every subscriber (node shutdown): without this, the server would
        wait for each stream to end on its own."""
        for ws in list(self._sockets):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"node shutting down")

    async def _stream(
        self, ws: web.WebSocketResponse, transport: asyncio.Transport, cursor: int | None
    ) -> None:
        sub = _Subscriber(transport, self.buffer_limit)
        if cursor is not None:
            lo, hi = await self.storage.seq_bounds()
            if cursor > max(hi, self.last_seq) + 1:
                await ws.send_bytes(
                    encode_error_frame("FutureCursor", "cursor is past the newest event")
                )
                return
            if cursor < lo:
                await ws.send_bytes(
                    encode_frame(
                        "#info",
                        {"name": "OutdatedCursor", "message": "cursor is older than the window"},
                    )
                )
            if not await self._replay(ws, max(cursor, lo) - 1):
                return
        self._subscribers.add(sub)
        try:
            reader = asyncio.ensure_future(self._drain_incoming(ws))
            done = asyncio.ensure_future(sub.done.wait())
            try:
                # Also woken now and then when nothing is published: a reader that
                # stops taking what it was sent is cut off within behind_timeout even
                # on a quiet node, not only when the next event comes.
                while not (reader.done() or done.done()):
                    await asyncio.wait(
                        {reader, done},
                        timeout=self.behind_timeout / 2,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    if not sub.done.is_set() and self._behind_too_long(sub, time.monotonic()):
                        self._drop(sub)
            finally:
                for task in (reader, done):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if sub.too_slow:
                # Written without waiting: a reader that does not read must not hold
                # this task; the close frame follows it, then the connection goes.
                transport.write(
                    ws_binary_frame(
                        encode_error_frame("ConsumerTooSlow", "subscriber fell too far behind")
                    )
                )
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1):
                        await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"ConsumerTooSlow")
                transport.abort()
        finally:
            self._subscribers.discard(sub)

    async def _replay(self, ws: web.WebSocketResponse, after: int) -> bool:
        """Send stored events after ``after`` until caught up with the live stream;
        returns at the exact point where live delivery takes over (False if closed)."""
        last = after
        while True:
            rows = await self.storage.events_after(last, _REPLAY_BATCH)
            for seq, frame in rows:
                # send_bytes waits for the reader past 64 KiB: one that stops reading
                # during replay is cut off like a live one.
                async with asyncio.timeout(self.behind_timeout):
                    await ws.send_bytes(frame)
                last = seq
            if ws.closed:
                return False
            # No await between this check and the caller registering: nothing can
            # be published in between, so there is no gap and no duplicate.
            if len(rows) < _REPLAY_BATCH and last >= self.last_seq:
                return True

    @staticmethod
    async def _drain_incoming(ws: web.WebSocketResponse) -> None:
        """Subscribers do not talk; reading notices when they leave."""
        async for _ in ws:
            pass
