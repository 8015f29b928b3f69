"""Findings 10 and 11 of issue 13, measured on nodes with default settings.

    python bench/admission.py

Prints: how many of 300 peer WebSockets opened at once from one address are
accepted; how many of 3,000 self-signed identities pushed over one link are stored,
and how much the database grows; how many of 100 password guesses at one account
from 100 addresses (127.0.0.x, 127.0.1.x) have their password checked, and whether
the owner, from the address they logged in from before, still gets in. Run it from
an older tree (with this file and tests/test_admission.py copied in) to compare.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node.client import Client
from node.config import NodeConfig
from node.wiring import Node
from protocol.peerwire import decode_message, encode_message
from tests.test_admission import (
    _database_bytes,
    _identity_count,
    _identity_push,
    _login_from,
    _open_many,
)
from tests.test_federation import PASSWORD, FakePeer


async def links(root: Path) -> None:
    node = Node(NodeConfig(data_dir=root / "links", port=0))
    await node.start()
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            t = time.monotonic()
            accepted, refused = await _open_many(http, node, 300)
            print(
                f"300 inbound links at once from one address: {accepted} accepted, "
                f"{refused} refused, in {time.monotonic() - t:.2f} s"
            )
    finally:
        await node.stop()


async def identities(root: Path) -> None:
    node = Node(NodeConfig(data_dir=root / "identities", port=0))
    await node.start()
    try:
        async with aiohttp.ClientSession() as http:
            flood = [_identity_push(i) for i in range(3000)]
            before = await _database_bytes(node)
            peer = await FakePeer.connect(http, node)
            t = time.monotonic()
            for message in flood:
                await peer.ws.send_bytes(message)
            # Answered in order: when this is, every push before it was handled.
            await peer.ws.send_bytes(encode_message("getident", rid=1, did="did:skyfed:x"))
            while True:
                msg = decode_message((await asyncio.wait_for(peer.ws.receive(), 300)).data)
                if msg["t"] == "ident" and msg["rid"] == 1:
                    break
            grown = (await _database_bytes(node) - before) / 1e6
            print(
                f"3,000 self-signed identities over one link: {await _identity_count(node)} "
                f"stored, database +{grown:.1f} MB, in {time.monotonic() - t:.1f} s"
            )
            await peer.ws.close()
    finally:
        await node.stop()


async def logins(root: Path) -> None:
    # No per-address throttle here: one guess per address is what a botnet does.
    cfg = NodeConfig(data_dir=root / "logins", port=0, auth_rate=1000.0, auth_burst=1000)
    node = Node(cfg)
    await node.start()
    try:
        handle = "alice.skyfed.test"
        async with Client(node.url) as alice:
            await alice.create_account(handle, PASSWORD)
        assert await _login_from(node, "127.0.0.1", handle, PASSWORD) == 200
        statuses = [
            await _login_from(node, f"127.0.{i // 250}.{i % 250 + 2}", handle, f"guess {i}")
            for i in range(100)
        ]
        owner = await _login_from(node, "127.0.0.1", handle, PASSWORD)
        print(
            f"100 guesses from 100 addresses: {statuses.count(401)} had the password checked "
            f"(401), {statuses.count(429)} refused (429); the owner afterwards: {owner}"
        )
    finally:
        await node.stop()


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        await links(root)
        await identities(root)
        await logins(root)


if __name__ == "__main__":
    asyncio.run(main())
