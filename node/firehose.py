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
with a cursor and catch up from storage.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from aiohttp import WSCloseCode, web

from protocol.encoding import Value, encode

from .storage import SqliteStorage

__all__ = ["Firehose", "encode_error_frame", "encode_frame"]

_REPLAY_BATCH = 500


def encode_frame(kind: str, body: dict[str, Value]) -> bytes:
    """A message frame: header ``{op: 1, t: kind}`` then the body."""
    return encode({"op": 1, "t": kind}) + encode(body)


def encode_error_frame(error: str, message: str) -> bytes:
    return encode({"op": -1}) + encode({"error": error, "message": message})


@dataclass(eq=False)
class _Subscriber:
    queue: asyncio.Queue[tuple[int, bytes]]
    too_slow: asyncio.Event = field(default_factory=asyncio.Event)


class Firehose:
    """Fans stored events out to WebSocket subscribers."""

    def __init__(
        self,
        storage: SqliteStorage,
        *,
        queue_size: int = 10_000,
    ):
        self.storage = storage
        self.queue_size = queue_size
        self.last_seq = 0
        self._subscribers: set[_Subscriber] = set()
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
        for seq, frame in events:
            if seq > self.last_seq:
                self.last_seq = seq
            for sub in self._subscribers:
                if sub.too_slow.is_set():
                    continue
                try:
                    sub.queue.put_nowait((seq, frame))
                except asyncio.QueueFull:
                    sub.too_slow.set()
                    self.dropped_slow += 1

    async def serve(self, request: web.Request, cursor: int | None) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=1024)
        await ws.prepare(request)
        try:
            await self._stream(ws, cursor)
        finally:
            await ws.close()
        return ws

    async def _stream(self, ws: web.WebSocketResponse, cursor: int | None) -> None:
        sub = _Subscriber(asyncio.Queue(self.queue_size))
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
            sent = await self._replay(ws, max(cursor, lo) - 1, sub)
            if sent is None:
                return
        self._subscribers.add(sub)
        try:
            await self._live(ws, sub)
        finally:
            self._subscribers.discard(sub)

    async def _replay(self, ws: web.WebSocketResponse, after: int, sub: _Subscriber) -> int | None:
        """Send stored events after ``after`` until caught up with the live stream.
        Registers ``sub`` for live events at the exact point where replay ends."""
        last = after
        while True:
            rows = await self.storage.events_after(last, _REPLAY_BATCH)
            for seq, frame in rows:
                await ws.send_bytes(frame)
                last = seq
            if ws.closed:
                return None
            # No await between this check and registering: nothing can slip between.
            if len(rows) < _REPLAY_BATCH and last >= self.last_seq:
                return last

    async def _live(self, ws: web.WebSocketResponse, sub: _Subscriber) -> None:
        reader = asyncio.ensure_future(self._drain_incoming(ws))
        slow = asyncio.ensure_future(sub.too_slow.wait())
        try:
            while True:
                getter = asyncio.ensure_future(sub.queue.get())
                done, _ = await asyncio.wait(
                    {getter, reader, slow}, return_when=asyncio.FIRST_COMPLETED
                )
                if getter not in done:
                    getter.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await getter
                if slow in done:
                    await ws.send_bytes(
                        encode_error_frame("ConsumerTooSlow", "subscriber fell too far behind")
                    )
                    await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"ConsumerTooSlow")
                    return
                if reader in done:
                    return
                _, frame = getter.result()
                await ws.send_bytes(frame)
                # Send what is already queued without another round of wait().
                while not sub.queue.empty() and not sub.too_slow.is_set():
                    _, frame = sub.queue.get_nowait()
                    await ws.send_bytes(frame)
        finally:
            for task in (reader, slow):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    @staticmethod
    async def _drain_incoming(ws: web.WebSocketResponse) -> None:
        """Subscribers do not talk; reading notices when they leave."""
        async for _ in ws:
            pass
