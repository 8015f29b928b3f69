"""Nodes gossip and reconcile until they agree: in-process multi-node tests."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from node.client import Client
from node.config import NodeConfig
from node.wiring import Node
from protocol.commit import CommitEvent
from protocol.ingest import Verdict
from protocol.keys import SigningKey
from protocol.peerwire import auth_payload, decode_message, encode_message
from protocol.repo import Repo, Write

PASSWORD = "correct horse battery staple"


async def until(predicate: Callable[[], Awaitable[bool]], limit: float = 20.0) -> None:
    """Wait for a condition spread over several nodes (no single event to wait on)."""
    async with asyncio.timeout(limit):
        while not await predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # poll


async def heads(node: Node) -> dict[str, str]:
    return {did: str(head) for did, head, _ in await node.storage.all_heads()}


async def all_agree(nodes: list[Node], count: int | None = None) -> bool:
    views = [await heads(n) for n in nodes]
    if count is not None and len(views[0]) != count:
        return False
    return all(v == views[0] for v in views)


async def start_nodes(tmp_path: Path, n: int, **cfg: Any) -> list[Node]:
    nodes = []
    for i in range(n):
        config = NodeConfig(data_dir=tmp_path / f"node{i}", port=0, reconcile_interval=0.5, **cfg)
        node = Node(config)
        await node.start()
        nodes.append(node)
    return nodes


async def link(nodes: list[Node], edges: list[tuple[int, int]]) -> None:
    for a, b in edges:
        nodes[a].federation.dial(nodes[b].url)

    async def linked() -> bool:
        return all(
            nodes[b].node_did in nodes[a].federation.links
            and nodes[a].node_did in nodes[b].federation.links
            for a, b in edges
        )

    await until(linked)


@pytest.fixture
async def three(tmp_path: Path) -> AsyncIterator[list[Node]]:
    nodes = await start_nodes(tmp_path, 3)
    try:
        await link(nodes, [(1, 0), (2, 1)])
        yield nodes
    finally:
        for node in nodes:
            await node.stop()


async def test_a_post_on_one_node_is_read_from_every_node(three: list[Node]) -> None:
    a, _b, c = three
    async with Client(a.url) as alice, Client(c.url) as reader:
        await alice.create_account("alice.skyfed.test", PASSWORD)
        ref = await alice.post("hello, federation")
        rkey = ref.uri.rsplit("/", 1)[1]

        async def everywhere() -> bool:
            for node in three:
                row = await node.storage.get_record(alice.did, "app.bsky.feed.post", rkey)
                if row is None:
                    return False
            return True

        await until(everywhere)
        got = await reader.get_record(alice.did, "app.bsky.feed.post", rkey)
        assert got["value"]["text"] == "hello, federation"
        assert got["cid"] == ref.cid
        # The identity travelled too: c resolves alice's handle.
        assert await reader.resolve_handle("alice.skyfed.test") == alice.did
        # c's firehose carries the gossiped commit like a local one, and it verifies.
        frames = []
        async for header, body in reader.subscribe(cursor=1):
            frames.append((header, body))
            if header.get("t") == "#commit" and any(
                op["path"].endswith(rkey) for op in body.get("ops", [])
            ):
                break
        assert frames[-1][1]["repo"] == alice.did


async def test_gossip_does_not_flood(three: list[Node]) -> None:
    a, _b, c = three
    async with Client(a.url) as alice:
        await alice.create_account("alice.skyfed.test", PASSWORD)
        for i in range(10):
            await alice.post(f"post {i}")
        await until(lambda: all_agree(three, 1))
        # On a chain each node gets each message once: no redundant copies to prune.
        stats = c.federation.plumtree.stats
        assert stats.duplicates <= 2


async def test_partition_heals_to_identical_heads(tmp_path: Path) -> None:
    nodes = await start_nodes(tmp_path, 4)
    try:
        await link(nodes, [(0, 1), (1, 2), (2, 3), (3, 0)])
        clients = [Client(n.url) for n in nodes]
        try:
            for i, c in enumerate(clients):
                await c.create_account(f"user{i}.skyfed.test", PASSWORD)
            await until(lambda: all_agree(nodes, 4))
            # Partition {0,1} | {2,3}: cut every link across.
            left, right = nodes[:2], nodes[2:]
            for x in left:
                for y in right:
                    x.federation.block(y.node_did)
                    y.federation.block(x.node_did)
            for i, c in enumerate(clients):
                for j in range(3):
                    await c.post(f"written by {i} during the partition, {j}")

            async def sides_agree() -> bool:
                return await all_agree(left, 4) and await all_agree(right, 4)

            await until(sides_agree)
            assert await heads(nodes[0]) != await heads(nodes[2])
            for x in left:
                for y in right:
                    x.federation.unblock(y.node_did)
                    y.federation.unblock(x.node_did)
            await until(lambda: all_agree(nodes, 4))
            for node in nodes:
                for c in clients:
                    page = await node.storage.list_records(
                        c.did, "app.bsky.feed.post", 10, None, False
                    )
                    assert len(page) == 3
        finally:
            for c in clients:
                await c.close()
    finally:
        for node in nodes:
            await node.stop()


async def test_a_node_that_was_down_catches_up_by_negentropy(tmp_path: Path) -> None:
    a = Node(NodeConfig(data_dir=tmp_path / "a", port=0, reconcile_interval=60))
    await a.start()
    try:
        async with Client(a.url) as alice:
            await alice.create_account("alice.skyfed.test", PASSWORD)
            for i in range(5):
                await alice.post(f"before b exists {i}")
            # b starts later and dials a: nothing is pushed to it, it must reconcile.
            b = Node(
                NodeConfig(data_dir=tmp_path / "b", port=0, peers=(a.url,), reconcile_interval=60)
            )
            await b.start()
            try:
                await until(lambda: all_agree([a, b], 1))
                assert b.federation.ingested >= 1
                page = await b.storage.list_records(
                    alice.did, "app.bsky.feed.post", 10, None, False
                )
                assert len(page) == 5
            finally:
                await b.stop()
            # Down again, more writes, then back: caught up from since its rev.
            for i in range(3):
                await alice.post(f"while b is down {i}")
            b2 = Node(
                NodeConfig(data_dir=tmp_path / "b", port=0, peers=(a.url,), reconcile_interval=60)
            )
            await b2.start()
            try:
                await until(lambda: all_agree([a, b2], 1))
                page = await b2.storage.list_records(
                    alice.did, "app.bsky.feed.post", 20, None, False
                )
                assert len(page) == 8
            finally:
                await b2.stop()
    finally:
        await a.stop()


class FakePeer:
    """A hand-driven peer: does the handshake with its own node key, then sends
    whatever the test tells it to."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, key: SigningKey):
        self.ws = ws
        self.key = key

    @classmethod
    async def connect(
        cls, http: aiohttp.ClientSession, node: Node, key: SigningKey | None = None
    ) -> FakePeer:
        key = key or SigningKey.from_seed(secrets.token_bytes(32))
        try:
            ws = await http.ws_connect(node.url + "/xrpc/skyfed.peer.connect")
        except aiohttp.WSServerHandshakeError as e:  # refused before the handshake
            raise ConnectionRefusedError(f"the node refused the link: {e.status}") from e
        peer = cls(ws, key)
        challenge = secrets.token_bytes(32)
        await ws.send_bytes(
            encode_message(
                "hello",
                v=1,
                node=key.did_key(),
                url=None,
                challenge=challenge,
                caps=[],
                share=False,
            )
        )
        hello = decode_message((await ws.receive()).data)
        await ws.send_bytes(
            encode_message(
                "auth", sig=key.sign(auth_payload(hello["challenge"], key.did_key(), hello["node"]))
            )
        )
        msg = await ws.receive()
        if msg.type != aiohttp.WSMsgType.BINARY:
            await ws.close()
            raise ConnectionRefusedError("the node closed the link during the handshake")
        assert decode_message(msg.data)["t"] == "auth"
        return peer

    async def push(self, event: CommitEvent) -> None:
        await self.ws.send_bytes(
            encode_message(
                "push", id=event.commit.to_bytes(), kind="commit", data=event.to_bytes(), round=0
            )
        )


async def _account_key(node: Node, did: str) -> SigningKey:
    row = await node.storage.account_by_did(did)
    assert row is not None
    return SigningKey.from_str(row.signing_key)


async def test_forged_commit_is_rejected_and_the_peer_cut_off(three: list[Node]) -> None:
    a, b, _c = three
    async with Client(a.url) as alice, aiohttp.ClientSession() as http:
        await alice.create_account("alice.skyfed.test", PASSWORD)
        await until(lambda: all_agree(three, 1))
        repo = await b.repos.head(alice.did)
        impostor = SigningKey.from_seed(secrets.token_bytes(32))
        forgeries = []
        for text in ("forged one", "forged two"):
            rev = b.repos._next_rev(repo.rev)
            record = {
                "$type": "app.bsky.feed.post",
                "text": text,
                "createdAt": "2026-11-23T12:00:00Z",
            }
            forgeries.append(
                repo.apply_writes(
                    [Write("create", "app.bsky.feed.post", rev, record)],
                    impostor,
                    rev=rev,
                    time="2026-11-23T12:00:00.000Z",
                ).event
            )
        peer = await FakePeer.connect(http, b)
        await until(lambda: _has_link(b, peer.key.did_key()))
        for forged in forgeries:
            await peer.push(forged)

        async def cut_off() -> bool:
            return b.federation.is_blocked(peer.key.did_key())

        await until(cut_off)
        assert b.federation.rejected >= 2
        for node in three:
            held = await node.storage.get_head(alice.did)
            assert held is not None
            assert held.head not in {f.commit for f in forgeries}
        # Cut off means refused on reconnect too.
        with pytest.raises(ConnectionRefusedError):
            await FakePeer.connect(http, b, peer.key)


async def _has_link(node: Node, did: str) -> bool:
    return did in node.federation.links


async def test_equivocation_converges_to_one_head(three: list[Node]) -> None:
    a, _b, c = three
    async with Client(a.url) as alice:
        await alice.create_account("alice.skyfed.test", PASSWORD)
        await alice.post("the common past")
        await until(lambda: all_agree(three, 1))
        key = await _account_key(a, alice.did)
        base: Repo = await a.repos.head(alice.did)
        rev1 = a.repos._next_rev(base.rev)
        rev2 = a.repos._next_rev(rev1)

        def fork(text: str, rev: str) -> CommitEvent:
            w = Write(
                "create",
                "app.bsky.feed.post",
                rev,
                {"$type": "app.bsky.feed.post", "text": text, "createdAt": "2026-11-23T12:00:00Z"},
            )
            return base.apply_writes([w], key, rev=rev, time="2026-11-23T12:00:00.000Z").event

        one, two = fork("history one", rev1), fork("history two", rev2)
        assert one.since == two.since
        # Each side of the network hears a different history first.
        await asyncio.gather(
            a.federation.ingest_event(one, None), c.federation.ingest_event(two, None)
        )
        a.federation.publish_commit(one)
        c.federation.publish_commit(two)
        await until(lambda: all_agree(three, 1))
        winner = str(two.commit)  # the higher rev wins
        for node in three:
            assert (await heads(node))[alice.did] == winner
        evidence = []
        for node in three:
            evidence += await node.storage.equivocations()
        assert evidence, "some node saw both histories and kept the evidence"


async def test_a_commit_that_arrives_before_its_parent_waits_for_it(
    three: list[Node],
) -> None:
    a, _, c = three
    async with Client(a.url) as alice:
        await alice.create_account("alice.skyfed.test", PASSWORD)
        await until(lambda: all_agree(three, 1))
        key = await _account_key(a, alice.did)
        base: Repo = await a.repos.head(alice.did)
        events = []
        repo = base
        for text in ("first", "second", "third"):
            rev = a.repos._next_rev(repo.rev)
            w = Write(
                "create",
                "app.bsky.feed.post",
                rev,
                {"$type": "app.bsky.feed.post", "text": text, "createdAt": "2026-11-23T12:00:00Z"},
            )
            result = repo.apply_writes([w], key, rev=rev, time="2026-11-23T12:00:00.000Z")
            events.append(result.event)
            repo = result.repo
        # Gossip over several paths: the newest arrives first, then the oldest.
        assert await c.federation.ingest_event(events[2], None) is Verdict.GAP
        assert await c.federation.ingest_event(events[1], None) is Verdict.GAP
        assert await c.federation.ingest_event(events[0], None) is Verdict.APPLY
        head = await c.storage.get_head(alice.did)
        assert head is not None
        assert head.head == events[2].commit
        assert head.active
        page = await c.storage.list_records(alice.did, "app.bsky.feed.post", 10, None, False)
        assert len(page) == 3
