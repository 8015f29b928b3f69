"""A node refuses to stay in one negentropy session past MAX_ROUNDS answers, whatever
a peer keeps sending (issue 12, open point: the round bound wired into federation)."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import aiohttp

from protocol.negentropy import MAX_ROUNDS, Negentropy, NegentropyStorageVector
from protocol.peerwire import decode_message, encode_message

from .test_federation import FakePeer, _has_link, start_nodes, until


def _opener() -> bytes:
    s = NegentropyStorageVector()
    for i in range(500):
        s.insert(i, hashlib.sha256(b"peer" + i.to_bytes(4, "big")).digest())
    s.seal()
    return Negentropy(s).initiate()


async def test_a_peer_cannot_keep_a_node_in_one_session(tmp_path: Path) -> None:
    (node,) = await start_nodes(tmp_path, 1)
    try:
        async with aiohttp.ClientSession() as http:
            peer = await FakePeer.connect(http, node)
            await until(lambda: _has_link(node, peer.key.did_key()))
            opener = _opener()
            answers: asyncio.Queue[bytes] = asyncio.Queue()

            async def read() -> None:
                while True:
                    msg = await peer.ws.receive()
                    if msg.type != aiohttp.WSMsgType.BINARY:
                        return
                    decoded = decode_message(msg.data)
                    if decoded["t"] == "neg":
                        answers.put_nowait(decoded["msg"])

            reader = asyncio.create_task(read())
            try:
                # One message at a time, each after the previous answer, as a client
                # would: the node answers MAX_ROUNDS of them, then ends the session.
                for _ in range(MAX_ROUNDS):
                    await peer.ws.send_bytes(encode_message("neg", sid=7, msg=opener))
                    async with asyncio.timeout(10):
                        await answers.get()
                link = node.federation.links[peer.key.did_key()]
                assert link.score == 0
                await peer.ws.send_bytes(encode_message("neg", sid=7, msg=opener))

                async def penalized() -> bool:
                    return link.score < 0

                await until(penalized)  # old code: answered it, and every one after
                assert answers.empty()
                assert 7 not in link.neg_sessions
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
    finally:
        await node.stop()
