"""Replay a captured atproto firehose to nodes, at a chosen speed.

A capture file is the binary WebSocket messages of a ``subscribeRepos`` stream, each
prefixed by its length (4 bytes, big-endian), as ``skyfed cluster atproto-capture``
writes them. ``skyfed cluster atproto-replay`` serves one as
``com.atproto.sync.subscribeRepos`` on a local port, so nodes started with
``--atproto-source`` that URL (and ``--dial-policy loopback``) read it as they would
a PDS or relay: the cursor is honoured (frames with a ``seq`` at or below it are
skipped), and the gaps between the events' ``time`` fields are kept, divided by
``speed`` (0: as fast as the reader takes them; a gap is never waited more than
:data:`MAX_WAIT` seconds). Frames are checked with ``decode_frame`` when the file is
loaded, and one over ``MAX_FRAME`` ends the load: the file is the operator's, but a
capture is a stranger's bytes.

A replay serves no getRepo: a node that finds a gap (an account first seen
mid-history) resyncs from the PDS the account's DID document names, as when live,
and where it cannot reach it, counts and logs a failed resync and goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import struct
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

from protocol.atproto.firehose import MAX_FRAME, decode_frame
from protocol.errors import SkyfedError

__all__ = ["MAX_WAIT", "ReplayFrame", "ReplayServer", "capture", "read_frames"]

#: The longest wait between two replayed frames, in seconds, whatever the capture says.
MAX_WAIT = 5.0


@dataclass(frozen=True, slots=True)
class ReplayFrame:
    seq: int | None
    at: float | None  # the event's time, seconds since the epoch
    data: bytes


def _time(value: str) -> float | None:
    try:
        return datetime.datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def read_frames(path: Path) -> list[ReplayFrame]:
    """The frames of a capture file; raises ValueError on a malformed one."""
    raw = path.read_bytes()
    out: list[ReplayFrame] = []
    i = 0
    while i < len(raw):
        if i + 4 > len(raw):
            raise ValueError(f"{path}: truncated length at byte {i}")
        (size,) = struct.unpack(">I", raw[i : i + 4])
        if size > MAX_FRAME or i + 4 + size > len(raw):
            raise ValueError(f"{path}: frame at byte {i} is too long or truncated")
        data = raw[i + 4 : i + 4 + size]
        i += 4 + size
        try:
            frame = decode_frame(data)
        except SkyfedError as e:
            raise ValueError(f"{path}: frame {len(out)} does not decode: {e}") from e
        seq = getattr(frame, "seq", None)
        when = getattr(frame, "time", None)
        out.append(ReplayFrame(seq, _time(when) if isinstance(when, str) else None, data))
    return out


def frame_record(data: bytes) -> bytes:
    """One frame as a capture file holds it."""
    return struct.pack(">I", len(data)) + data


class ReplayServer:
    """Serves ``frames`` as subscribeRepos on 127.0.0.1 (``url`` once started)."""

    def __init__(self, frames: list[ReplayFrame], *, speed: float = 1.0, host: str = "127.0.0.1"):
        self.frames = frames
        self.speed = speed
        self.host = host
        self.url = ""
        self.sent = 0
        self._runner: web.AppRunner | None = None

    async def _stream(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        try:
            cursor = int(request.query.get("cursor", "-1"))
        except ValueError:
            cursor = -1
        last: float | None = None
        with contextlib.suppress(ConnectionError):
            for frame in self.frames:
                if frame.seq is not None and frame.seq <= cursor:
                    continue
                if self.speed > 0 and last is not None and frame.at is not None:
                    await asyncio.sleep(min(MAX_WAIT, max(0.0, frame.at - last) / self.speed))
                last = frame.at if frame.at is not None else last
                await ws.send_bytes(frame.data)
                self.sent += 1
            # The capture is over: stay open (a live host would), until the reader goes.
            async for _ in ws:
                pass
        await ws.close()
        return ws

    async def start(self, port: int = 0) -> str:
        app = web.Application()
        app.router.add_get("/xrpc/com.atproto.sync.subscribeRepos", self._stream)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, port)
        await site.start()
        server = site._server
        assert server is not None
        bound = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self.url = f"http://{self.host}:{bound}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


async def capture(
    session: aiohttp.ClientSession, source: str, out: Path, *, count: int, cursor: int | None = None
) -> int:
    """Append ``count`` frames of ``source``'s subscribeRepos to ``out``; returns how
    many were written. ``session`` should be under the dial policy."""
    from ..atproto.bridge import stream_url

    written = 0
    with out.open("ab") as f:
        async with session.ws_connect(stream_url(source, cursor), max_msg_size=MAX_FRAME) as ws:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.BINARY:
                    break
                f.write(frame_record(msg.data))
                written += 1
                if written >= count:
                    break
    return written
