"""The memory attacks of issue 13 (findings 3-8), run against a node process.

Each attack is a function that takes the node's URL and its sizes, runs against a
node started with ``python -m node.cli node start`` (node/cluster/process.py) on
127.0.0.1, and returns what the node answered; :class:`Rss` samples the node's
resident memory meanwhile. tests/test_memory_bounds.py runs them small, with small
limits; ``main()`` runs them at the issue's sizes against a node with the default
limits and prints the peak RSS of each against the stated ceiling:

    .venv/bin/python bench/hostile_memory.py [--quick]

The attacks: anonymous ``getRepo`` readers that never read (3), a peer's
``getrepo`` requests it never reads (4), unsolicited ``heads`` floods (5), firehose
subscribers that never read while large writes land (6), ``importRepo`` bodies that
are over the limit, declared huge, or stall (7), and request bodies that are
declared and never sent (8). Every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import secrets
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node.client import Client
from node.cluster.process import NodeProcess, node_process
from protocol.cid import cid_for_msgpack
from protocol.keys import SigningKey
from protocol.peerwire import auth_payload, decode_message, encode_message

PASSWORD = "correct horse battery staple"
MB = 1024 * 1024


# -- measuring -----------------------------------------------------------------------


class Rss:
    """Samples a process's resident memory every ``every`` seconds (a measurement,
    not a wait: nothing waits on it)."""

    def __init__(self, pid: int, every: float = 0.05):
        self.proc = psutil.Process(pid)
        self.every = every
        self.peak = 0
        self.start = self.now()
        self._task: asyncio.Task[None] | None = None

    def now(self) -> int:
        rss: int = self.proc.memory_info().rss
        self.peak = max(self.peak, rss)
        return rss

    async def _run(self) -> None:
        while True:
            self.now()
            await asyncio.sleep(self.every)

    async def __aenter__(self) -> Rss:
        self.peak = self.now()
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.now()


# -- helpers -------------------------------------------------------------------------


def host_port(url: str) -> tuple[str, int]:
    rest = url.split("://", 1)[1]
    host, port = rest.rsplit(":", 1)
    return host, int(port)


async def raw_connection(
    url: str, rcvbuf: int = 4096
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection with a small receive buffer, for clients that never read."""
    host, port = host_port(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    return await asyncio.open_connection(sock=sock, limit=rcvbuf)


async def read_answer(reader: asyncio.StreamReader, limit: float) -> tuple[int | None, int, bool]:
    """Read what the node sent: (HTTP status or None, bytes, whether it closed)."""
    data = bytearray()
    closed = False
    try:
        async with asyncio.timeout(limit):
            while True:
                chunk = await reader.read(1 << 16)
                if not chunk:
                    closed = True
                    break
                data += chunk
    except TimeoutError:
        pass
    except ConnectionError:
        closed = True
    status = None
    if data.startswith(b"HTTP/1.1 "):
        status = int(data[9:12])
    return status, len(data), closed


async def make_repo(url: str, handle: str, records: int, size: int) -> Client:
    """An account whose repo holds ``records`` records of about ``size`` bytes of
    incompressible text each (logged in: the caller closes it)."""
    client = Client(url)
    await client.create_account(handle, PASSWORD)
    for _ in range(records):
        blob = base64.b64encode(os.urandom(size * 3 // 4)).decode()
        await client.create_record("com.example.blob", {"$type": "com.example.blob", "data": blob})
    return client


async def served(url: str) -> float:
    """Time for another client's request (describeServer) to be answered."""
    started = time.monotonic()
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            url + "/xrpc/com.atproto.server.describeServer", timeout=aiohttp.ClientTimeout(10)
        ) as resp,
    ):
        assert resp.status == 200, resp.status
        await resp.read()
    return time.monotonic() - started


# -- 3: getRepo readers that never read ------------------------------------------------


@dataclass
class StreamsResult:
    statuses: list[int | None]
    sizes: list[int]
    closed: list[bool]
    other_client: float


async def get_repo_never_read(url: str, did: str, n: int, hold: float) -> StreamsResult:
    """``n`` getRepo requests whose clients never read; after ``hold`` seconds, read
    what each got."""
    conns = [await raw_connection(url) for _ in range(n)]
    request = (f"GET /xrpc/com.atproto.sync.getRepo?did={did} HTTP/1.1\r\nHost: x\r\n\r\n").encode()
    for _, writer in conns:
        writer.write(request)
        await writer.drain()
    other = await served(url)
    await asyncio.sleep(hold)  # the attackers hold their streams this long
    answers = await asyncio.gather(*(read_answer(r, 5.0) for r, _ in conns))
    for _, writer in conns:
        writer.close()
    return StreamsResult(
        [a[0] for a in answers], [a[1] for a in answers], [a[2] for a in answers], other
    )


# -- 4 and 5: a hostile peer -----------------------------------------------------------


class FakePeer:
    """A peer link driven by hand: handshake with its own node key, then whatever
    the attack sends."""

    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse):
        self.http, self.ws = http, ws
        self.key = SigningKey.from_seed(secrets.token_bytes(32))

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, url: str) -> AsyncIterator[FakePeer]:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(url + "/xrpc/skyfed.peer.connect", max_msg_size=0)
            peer = cls(http, ws)
            challenge = secrets.token_bytes(32)
            did = peer.key.did_key()
            await ws.send_bytes(
                encode_message(
                    "hello", v=1, node=did, url=None, challenge=challenge, caps=[], share=False
                )
            )
            hello = decode_message((await ws.receive()).data)
            sig = peer.key.sign(auth_payload(hello["challenge"], did, hello["node"]))
            await ws.send_bytes(encode_message("auth", sig=sig))
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.BINARY, msg
            try:
                yield peer
            finally:
                await ws.close()

    async def closed_by_node(self, limit: float) -> str | None:
        """Read until the node ends the link (its reason, if it sent one), or None
        if it is still up after ``limit`` seconds."""
        try:
            async with asyncio.timeout(limit):
                while True:
                    msg = await self.ws.receive()
                    if msg.type in (
                        aiohttp.WSMsgType.CLOSE,
                        aiohttp.WSMsgType.CLOSED,
                        aiohttp.WSMsgType.CLOSING,
                        aiohttp.WSMsgType.ERROR,
                    ):
                        return str(msg.extra or msg.type.name)
        except TimeoutError:
            return None


@dataclass
class PeerResult:
    ended: str | None
    other_client: float
    answers: dict[str, int] = field(default_factory=dict)


async def peer_getrepo_never_read(url: str, did: str, n: int, hold: float) -> PeerResult:
    """``n`` getrepo requests over one link whose peer never reads the answers."""
    async with FakePeer.connect(url) as peer:
        for rid in range(1, n + 1):
            await peer.ws.send_bytes(encode_message("getrepo", rid=rid, did=did, since=None))
        other = await served(url)
        await asyncio.sleep(hold)  # the peer reads nothing for this long
        ended = await peer.closed_by_node(hold + 10)
        return PeerResult(ended, other)


async def big_hellos(url: str, n: int, size: int, limit: float) -> PeerResult:
    """``n`` peer connections at once, each sending a ``size``-byte message as its
    hello (no handshake): what every link may be sent before it is authenticated."""
    payload = secrets.token_bytes(size)
    ended = 0
    async with aiohttp.ClientSession() as http:
        sockets = []
        for _ in range(n):
            try:
                ws = await http.ws_connect(url + "/xrpc/skyfed.peer.connect", max_msg_size=0)
            except aiohttp.WSServerHandshakeError:
                continue  # refused before the upgrade: over a cap
            sockets.append(ws)
        await asyncio.gather(*(ws.send_bytes(payload) for ws in sockets), return_exceptions=True)
        other = await served(url)
        for ws in sockets:
            try:
                async with asyncio.timeout(limit):
                    while (await ws.receive()).type == aiohttp.WSMsgType.BINARY:
                        pass  # the node's own hello
                ended += 1
            except TimeoutError:
                pass
            await ws.close()
    return PeerResult(None, other, {"linked": len(sockets), "closed": ended})


def fake_heads(n: int) -> list[dict[str, Any]]:
    """``n`` identity heads no one holds: fresh DIDs, well-formed CIDs of nothing."""
    prefix = cid_for_msgpack(b"").to_bytes()[:-32]
    return [
        {
            "kind": "identity",
            "did": "did:plc:" + secrets.token_hex(12),
            "head": prefix + secrets.token_bytes(32),
        }
        for _ in range(n)
    ]


async def heads_flood(url: str, messages: int, items: int, limit: float) -> PeerResult:
    """Unsolicited ``heads`` messages of ``items`` fake items each; the peer answers
    nothing. Ends when the node ends the link or after ``limit`` seconds."""
    async with FakePeer.connect(url) as peer:
        sent = 0
        try:
            async with asyncio.timeout(limit):
                for _ in range(messages):
                    batch = encode_message("heads", rid=None, items=fake_heads(items))
                    await peer.ws.send_bytes(batch)
                    sent += 1
        except (TimeoutError, ConnectionError):
            pass
        other = await served(url)
        ended = await peer.closed_by_node(limit)
        return PeerResult(ended, other, {"sent": sent})


# -- 6: firehose subscribers that never read -------------------------------------------


@dataclass
class FirehoseResult:
    refused: int
    accepted: int
    reader_frames: int
    other_client: float
    #: Subscribers left once the writes are in, and how many were dropped as slow.
    left: float
    dropped: float


async def metric(url: str, name: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as resp:
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)


async def firehose_never_read(
    url: str, writer: Client, subscribers: int, writes: int, size: int, limit: float
) -> FirehoseResult:
    """``subscribers`` WebSocket subscribers that read their handshake answer and
    nothing after; one honest subscriber that reads everything; ``writes`` records
    of ``size`` bytes written meanwhile."""
    async with aiohttp.ClientSession() as http:
        honest = await http.ws_connect(
            url.replace("http", "ws", 1) + "/xrpc/com.atproto.sync.subscribeRepos",
            max_msg_size=0,
        )
        frames = 0
        got_all = asyncio.Event()

        async def read_all() -> None:
            nonlocal frames
            async for msg in honest:
                if msg.type == aiohttp.WSMsgType.BINARY:
                    frames += 1
                    if frames >= writes:
                        got_all.set()

        reading = asyncio.create_task(read_all())
        conns = []
        refused = accepted = 0
        upgrade = (
            "GET /xrpc/com.atproto.sync.subscribeRepos HTTP/1.1\r\nHost: x\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n\r\n"
        ).encode()
        for _ in range(subscribers):
            reader, w = await raw_connection(url)
            w.write(upgrade)
            await w.drain()
            status = await reader.readuntil(b"\r\n")
            if b" 101 " in status:
                accepted += 1
            else:
                refused += 1
            conns.append(w)
        for _ in range(writes):
            blob = base64.b64encode(os.urandom(size * 3 // 4)).decode()
            await writer.create_record(
                "com.example.blob", {"$type": "com.example.blob", "data": blob}
            )
        other = await served(url)
        # The honest reader gets every write.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(got_all.wait(), limit)
        # The stalled ones are dropped as their buffers fill (or wait too long).
        left = await metric(url, "skyfed_firehose_subscribers")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit):
                while left > 1:
                    await asyncio.sleep(0.1)  # polling another process: no event to wait on
                    left = await metric(url, "skyfed_firehose_subscribers")
        dropped = await metric(url, "skyfed_firehose_dropped_slow")
        for w in conns:
            w.close()
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading
        await honest.close()
        return FirehoseResult(refused, accepted, frames, other, left, dropped)


# -- 7: importRepo ---------------------------------------------------------------------


@dataclass
class ImportResult:
    declared_huge: int | None
    chunked_over: int | None
    stalled: int | None
    stalled_after: float
    next_import: int | None


async def _post(
    url: str, path: str, headers: dict[str, str], body: AsyncIterator[bytes] | bytes
) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            url + path, headers=headers, data=body, timeout=aiohttp.ClientTimeout(60)
        ) as resp,
    ):
        await resp.read()
        return resp.status


async def import_attacks(url: str, token: str, limit_bytes: int, stall: float) -> ImportResult:
    """An import declared over the limit; a chunked one that runs past it; one that
    declares exactly the limit, sends 1 KB and stalls (while another import waits
    for the slot); then one more import, which must get the slot."""
    path = "/xrpc/com.atproto.repo.importRepo"
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/vnd.ipld.car"}
    reader, w = await raw_connection(url)
    w.write(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        "Content-Length: 1073741824\r\n\r\n".encode()
    )
    await w.drain()
    declared_huge, _, _ = await read_answer(reader, 5.0)
    w.close()

    async def chunks() -> AsyncIterator[bytes]:
        piece = os.urandom(1 << 16)
        for _ in range(limit_bytes // len(piece) + 16):
            yield piece

    try:
        chunked_over: int | None = await _post(url, path, auth, chunks())
    except aiohttp.ClientError:
        chunked_over = None  # cut off mid-body: the refusal came before the end

    reader, w = await raw_connection(url)
    w.write(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Length: {limit_bytes}\r\n\r\n".encode()
        + os.urandom(1024)
    )
    await w.drain()
    started = time.monotonic()
    stalled, _, _ = await read_answer(reader, stall)
    stalled_after = time.monotonic() - started
    w.close()
    next_import = await _post(url, path, auth, b"not a block stream")
    return ImportResult(declared_huge, chunked_over, stalled, stalled_after, next_import)


# -- 8: request bodies that never come ---------------------------------------------------


@dataclass
class BodiesResult:
    statuses: dict[int | None, int]
    closed: int
    other_client: float
    elapsed: float


async def stalled_bodies(url: str, n: int, declared: int, limit: float) -> BodiesResult:
    """``n`` connections that declare a ``declared``-byte body for createRecord and
    send nothing; read what each gets within ``limit`` seconds."""
    conns = []
    started = time.monotonic()
    for _ in range(n):
        reader, w = await raw_connection(url)
        w.write(
            "POST /xrpc/com.atproto.repo.createRecord HTTP/1.1\r\nHost: x\r\n"
            f"Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n".encode()
        )
        conns.append((reader, w))
    for _, w in conns:
        await w.drain()
    other = await served(url)
    answers = await asyncio.gather(*(read_answer(r, limit) for r, _ in conns))
    elapsed = time.monotonic() - started
    for _, w in conns:
        w.close()
    statuses: dict[int | None, int] = {}
    for status, _, _ in answers:
        statuses[status] = statuses.get(status, 0) + 1
    return BodiesResult(statuses, sum(1 for a in answers if a[2]), other, elapsed)


# -- the full-size run -------------------------------------------------------------------


async def main(quick: bool) -> None:
    scale = 0.1 if quick else 1.0
    with tempfile.TemporaryDirectory(prefix="hostile-memory-") as tmp:
        async with node_process(Path(tmp) / "node") as node:
            await run_all(node, scale)


async def run_all(node: NodeProcess, scale: float) -> None:
    from node.config import NodeConfig
    from node.limits import memory_budget

    config = NodeConfig()
    ceiling = config.memory_ceiling_mb * MB
    derived = sum(memory_budget(config).values())
    rss = Rss(node.pid)
    print(f"node {node.url} pid {node.pid}: idle RSS {rss.now() / MB:.0f} MiB")
    print(f"stated ceiling {ceiling / MB:.0f} MiB (bounds add up to {derived / MB:.0f} MiB)")
    rows = []

    # A 27 MB repo: 34 records of 800 KB (a record is at most 1 MiB).
    started = time.monotonic()
    big = await make_repo(node.url, "big.skyfed.test", max(1, round(34 * scale)), 800_000)
    print(f"made a {34 * 0.8 * scale:.0f} MB repo in {time.monotonic() - started:.0f}s")
    did = big.did

    async def attack(name: str, coro: Any) -> Any:
        async with Rss(node.pid) as r:
            result = await coro
        rows.append((name, r.start, r.peak, r.now()))
        print(f"{name}: peak {r.peak / MB:.0f} MiB, after {r.now() / MB:.0f} MiB -> {result}")
        return result

    await attack("3 getRepo x40 never read", get_repo_never_read(node.url, did, 40, 25.0))
    await attack("4 peer getrepo x40 never read", peer_getrepo_never_read(node.url, did, 40, 35.0))
    # The same with a repo whose answer fits in a frame (5.6 MB), so answers are built.
    mid = await make_repo(node.url, "mid.skyfed.test", max(1, round(7 * scale)), 800_000)
    await attack(
        "4b peer getrepo x40 never read (5.6 MB repo)",
        peer_getrepo_never_read(node.url, mid.did, 40, 35.0),
    )
    await mid.close()
    await attack("5 unsolicited heads x400 (4096 items)", heads_flood(node.url, 400, 4096, 60.0))
    await attack(
        "5b 32 links sending a 6 MiB hello",
        big_hellos(node.url, config.max_inbound_links, 6 * MB - 1024, 20.0),
    )
    writer = await make_repo(node.url, "writer.skyfed.test", 0, 0)
    await attack(
        "6 firehose x150 never read + 12 large writes",
        firehose_never_read(node.url, writer, 150, 12, 900_000, 60.0),
    )
    assert big.session is not None
    await attack(
        "7 importRepo over-limit / declared / stalled",
        import_attacks(node.url, big.session.access_jwt, NodeConfig().max_import_bytes, 150.0),
    )
    await attack(
        "8 1,000 stalled bodies declaring 1 GB",
        stalled_bodies(node.url, round(1000 * scale), 1 << 30, 30.0),
    )
    await attack(
        "8b 1,000 stalled bodies declaring 1 KB",
        stalled_bodies(node.url, round(1000 * scale), 1024, 40.0),
    )
    await big.close()
    await writer.close()
    peak = max(r[2] for r in rows)
    print()
    print(f"{'attack':50} {'before':>8} {'peak':>8} {'after':>8}  (MiB)")
    for name, before, top, after in rows:
        print(f"{name:50} {before / MB:8.0f} {top / MB:8.0f} {after / MB:8.0f}")
    verdict = "under" if peak < ceiling else "OVER"
    print(f"peak RSS {peak / MB:.0f} MiB: {verdict} the stated ceiling of {ceiling / MB:.0f} MiB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the sizes")
    asyncio.run(main(parser.parse_args().quick))
