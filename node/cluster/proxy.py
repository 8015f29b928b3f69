"""A fault-injecting TCP relay for one peer link, aware of WebSocket frames.

Each directed edge of a cluster (node A dials node B) gets its own :class:`LinkProxy`
on 127.0.0.1: A's peer URL points at the proxy, which forwards to B. The harness
turns faults on and off while traffic flows:

- ``cut`` (a partition): open connections are severed, and new ones are accepted
  but held, forwarding nothing, until ``restore`` (like SYNs lost in a partition: the
  dialler waits, and gets through as soon as the network heals).
- ``sever``: close what is open now; reconnects go through at once.
- ``delay`` with ``jitter``: each unit is delivered ``delay ± jitter`` seconds after
  it arrived, never before the unit ahead of it (TCP keeps order).
- ``bandwidth``: bytes per second in each direction.
- ``drop``: the share of WebSocket data messages dropped whole. The relay parses
  frame boundaries (RFC 6455 section 5.2) and drops only complete, unfragmented text
  or binary frames, so what it passes on is still a valid WebSocket stream; control
  frames (ping, pong, close) and the first messages of each direction (the signed
  hello/auth handshake) always pass. It also strips ``Sec-WebSocket-Extensions`` from
  the upgrade request: with permessage-deflate a dropped frame would corrupt the
  shared compression state.

A target that is down (a killed node) is handled like a cut: the connection is held
and the relay retries upstream until the target is back or ``hold_limit`` passes.

Counts bytes and frames per direction. Refuses nothing else: it is a test tool that
listens on loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import struct
import time
from dataclasses import dataclass, field

__all__ = ["FrameSplitter", "LinkFaults", "LinkProxy", "LinkStats"]

#: Messages per direction never dropped: hello and auth.
log = logging.getLogger("skyfed.cluster.proxy")

_HANDSHAKE_MESSAGES = 2
_CHUNK = 64 * 1024
_MAX_HEAD = 64 * 1024


@dataclass(slots=True)
class LinkFaults:
    """What the link does to traffic right now."""

    cut: bool = False
    delay: float = 0.0
    jitter: float = 0.0
    #: Bytes per second each way; None is unlimited.
    bandwidth: float | None = None
    #: Share of data messages dropped (0..1).
    drop: float = 0.0

    def validate(self) -> None:
        if self.delay < 0 or self.jitter < 0:
            raise ValueError("delay and jitter must not be negative")
        if self.bandwidth is not None and self.bandwidth <= 0:
            raise ValueError("bandwidth must be positive")
        if not 0.0 <= self.drop <= 1.0:
            raise ValueError("drop must be between 0 and 1")


@dataclass(slots=True)
class LinkStats:
    """Counters for one direction of a link."""

    bytes: int = 0
    frames: int = 0
    dropped_frames: int = 0
    dropped_bytes: int = 0


class FrameSplitter:
    """Splits one direction of a WebSocket connection into units to forward.

    First the HTTP upgrade head (up to the blank line), passed as one unit (with the
    extensions header removed when ``strip_extensions``); then one unit per frame.
    Each frame unit comes with whether it may be dropped: a complete, unfragmented
    data frame after the handshake messages.
    """

    def __init__(self, *, strip_extensions: bool = False):
        self._buf = bytearray()
        self._in_head = True
        self._strip = strip_extensions
        self._messages = 0
        self._fragmented = False

    def feed(self, data: bytes) -> list[tuple[bytes, bool]]:
        """Units complete so far, each with ``droppable``."""
        self._buf += data
        out: list[tuple[bytes, bool]] = []
        if self._in_head:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > _MAX_HEAD:
                    raise ValueError("HTTP head too long")
                return out
            head = bytes(self._buf[: end + 4])
            del self._buf[: end + 4]
            self._in_head = False
            if self._strip:
                lines = head.split(b"\r\n")
                head = b"\r\n".join(
                    ln for ln in lines if not ln.lower().startswith(b"sec-websocket-extensions:")
                )
            out.append((head, False))
        while True:
            frame = self._next_frame()
            if frame is None:
                return out
            out.append(frame)

    def _next_frame(self) -> tuple[bytes, bool] | None:
        buf = self._buf
        if len(buf) < 2:
            return None
        fin = buf[0] & 0x80
        opcode = buf[0] & 0x0F
        masked = buf[1] & 0x80
        length = buf[1] & 0x7F
        pos = 2
        if length == 126:
            if len(buf) < 4:
                return None
            (length,) = struct.unpack_from("!H", buf, 2)
            pos = 4
        elif length == 127:
            if len(buf) < 10:
                return None
            (length,) = struct.unpack_from("!Q", buf, 2)
            pos = 10
        if masked:
            pos += 4
        total = pos + length
        if len(buf) < total:
            return None
        frame = bytes(buf[:total])
        del buf[:total]
        droppable = False
        if opcode in (0x1, 0x2) or opcode == 0x0:  # data: text, binary, continuation
            whole = opcode != 0x0 and fin and not self._fragmented
            self._fragmented = not fin
            if whole:
                self._messages += 1
                droppable = self._messages > _HANDSHAKE_MESSAGES
        return frame, droppable


@dataclass(slots=True, eq=False)
class _Conn:
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    def close(self) -> None:
        for w in self.writers:
            w.close()
        for t in self.tasks:
            t.cancel()


class LinkProxy:
    """One directed peer link through a relay the harness controls."""

    def __init__(
        self,
        name: str,
        target_port: int | None,
        *,
        rng: random.Random | None = None,
        hold_limit: float = 120.0,
    ):
        self.name = name
        self.target_port = target_port
        self.faults = LinkFaults()
        self.up = LinkStats()  # dialler -> target
        self.down = LinkStats()  # target -> dialler
        self.port = 0
        self.hold_limit = hold_limit
        self._rng = rng or random.Random(0)
        self._server: asyncio.Server | None = None
        self._conns: set[_Conn] = set()
        self._open = asyncio.Event()  # set when not cut
        self._open.set()
        self._target_up = asyncio.Event()
        if target_port is not None:
            self._target_up.set()
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def connections(self) -> int:
        return len(self._conns)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        self.sever()
        for t in list(self._handlers):
            t.cancel()
        for t in list(self._handlers):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    # -- control -----------------------------------------------------------------
    def set_target(self, port: int | None) -> None:
        """Where to forward (None: the target is down; connections are held)."""
        self.target_port = port
        if port is None:
            self._target_up.clear()
            self.sever()
        else:
            self._target_up.set()

    def cut(self) -> None:
        self.faults.cut = True
        self._open.clear()
        self.sever()

    def restore(self) -> None:
        self.faults.cut = False
        self._open.set()

    def sever(self) -> None:
        for conn in list(self._conns):
            conn.close()
        self._conns.clear()

    def shape(
        self,
        *,
        delay: float | None = None,
        jitter: float | None = None,
        bandwidth: float | None = None,
        drop: float | None = None,
        clear: bool = False,
    ) -> None:
        f = self.faults
        new = LinkFaults(
            cut=f.cut,
            delay=0.0 if clear else f.delay,
            jitter=0.0 if clear else f.jitter,
            bandwidth=None if clear else f.bandwidth,
            drop=0.0 if clear else f.drop,
        )
        if delay is not None:
            new.delay = delay
        if jitter is not None:
            new.jitter = jitter
        if bandwidth is not None:
            new.bandwidth = bandwidth
        if drop is not None:
            new.drop = drop
        new.validate()
        self.faults = new

    # -- relaying ----------------------------------------------------------------
    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Owned by the proxy: close() cancels and awaits every handler.
        handler = asyncio.ensure_future(self._handle(reader, writer))
        self._handlers.add(handler)
        handler.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._handlers.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("proxy %s: connection failed", self.name, exc_info=task.exception())

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers = [writer]
        try:
            upstream = await self._connect_upstream()
            if upstream is None:
                return  # held past hold_limit
            up_reader, up_writer = upstream
            writers.append(up_writer)
            conn = _Conn(writers=list(writers))
            self._conns.add(conn)
            a = asyncio.create_task(self._pump(reader, up_writer, self.up, strip=True))
            b = asyncio.create_task(self._pump(up_reader, writer, self.down, strip=False))
            conn.tasks = [a, b]
            try:
                await asyncio.wait((a, b), return_when=asyncio.FIRST_COMPLETED)
            finally:
                conn.close()
                self._conns.discard(conn)
                for t in (a, b):
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await t
        finally:
            # Also when the proxy closes while the connection is held.
            for w in writers:
                w.close()
            for w in writers:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(w.wait_closed(), 1.0)

    async def _connect_upstream(
        self,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """A connection to the target once the link is open and the target up;
        None after ``hold_limit`` seconds."""
        try:
            async with asyncio.timeout(self.hold_limit):
                while True:
                    await self._open.wait()
                    await self._target_up.wait()
                    port = self.target_port
                    if port is None:
                        continue
                    try:
                        reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    except OSError:
                        await asyncio.sleep(0.1)  # the target is starting or just died
                        continue
                    if self._open.is_set():
                        return reader, writer
                    writer.close()  # cut while we connected: hold on
                    with contextlib.suppress(Exception):
                        await writer.wait_closed()
        except TimeoutError:
            return None

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        stats: LinkStats,
        *,
        strip: bool,
    ) -> None:
        splitter = FrameSplitter(strip_extensions=strip)
        # Units wait here until their delivery time; bounded, so a throttled link
        # pushes back on the sender instead of buffering without limit.
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(256)
        sender = asyncio.create_task(self._deliver(queue, writer, stats))
        last_due = 0.0
        try:
            while True:
                data = await reader.read(_CHUNK)
                if not data:
                    break
                try:
                    units = splitter.feed(data)
                except ValueError:
                    break
                for unit, droppable in units:
                    f = self.faults
                    if droppable and f.drop > 0 and self._rng.random() < f.drop:
                        stats.dropped_frames += 1
                        stats.dropped_bytes += len(unit)
                        continue
                    due = time.monotonic()
                    if f.delay or f.jitter:
                        due += max(0.0, f.delay + self._rng.uniform(-f.jitter, f.jitter))
                    last_due = max(last_due, due)
                    await queue.put((last_due, unit))
            await queue.put(None)
            await sender
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender

    async def _deliver(
        self,
        queue: asyncio.Queue[tuple[float, bytes] | None],
        writer: asyncio.StreamWriter,
        stats: LinkStats,
    ) -> None:
        while True:
            item = await queue.get()
            if item is None:
                with contextlib.suppress(OSError):
                    writer.write_eof()
                return
            due, unit = item
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(unit)
            await writer.drain()
            stats.bytes += len(unit)
            stats.frames += 1
            bandwidth = self.faults.bandwidth
            if bandwidth:
                await asyncio.sleep(len(unit) / bandwidth)
