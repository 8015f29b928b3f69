"""The Python client library against real nodes on 127.0.0.1:0."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from node.client import (
    AtUri,
    Client,
    NotYourRecordError,
    RecordNotFoundError,
    RecordRef,
    VerificationError,
    XrpcError,
)
from node.config import NodeConfig
from node.wiring import Node
from protocol.car import read_car, write_car
from protocol.cid import CID, cid_for_msgpack
from protocol.commit import Commit
from protocol.errors import InvalidSyntax

from .seeds import seeded_key

PASSWORD = "correct horse battery staple"


@contextlib.asynccontextmanager
async def account(node: Node, name: str) -> AsyncIterator[Client]:
    async with Client(node.url) as c:
        await c.create_account(f"{name}.skyfed.test", PASSWORD)
        yield c


async def until(predicate: Callable[[], Awaitable[bool]], limit: float = 20.0) -> None:
    """Wait for a condition spread over nodes (there is no single event to wait on)."""
    async with asyncio.timeout(limit):
        while not await predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # poll


# -- posting -------------------------------------------------------------------------


async def test_facets_use_utf8_byte_offsets(node: Node) -> None:
    async with account(node, "alice") as alice, account(node, "bob") as bob:
        text = "héllo 🌍 @bob.skyfed.test → https://example.com/ü?q=1 #日本語, @nobody.skyfed.test"
        ref = await alice.post(text, langs=["en", "ja"])
        got = await alice.get_record_by_uri(ref.uri)
        record = got["value"]
        assert record["text"] == text
        assert record["langs"] == ["en", "ja"]
        raw = text.encode("utf-8")
        spans = {}
        for facet in record["facets"]:
            index = facet["index"]
            (feature,) = facet["features"]
            spans[feature["$type"].rsplit("#", 1)[1]] = (
                raw[index["byteStart"] : index["byteEnd"]].decode("utf-8"),
                feature,
            )
        # An unknown handle gets no mention facet; the others sit on their exact bytes.
        assert set(spans) == {"mention", "link", "tag"}
        assert spans["mention"] == (
            "@bob.skyfed.test",
            {"$type": "app.bsky.richtext.facet#mention", "did": bob.did},
        )
        assert spans["link"][0] == "https://example.com/ü?q=1"
        assert spans["tag"] == (
            "#日本語",
            {"$type": "app.bsky.richtext.facet#tag", "tag": "日本語"},
        )
        plain = await alice.post("no facets here: @bob.skyfed.test", facets=False)
        assert "facets" not in (await alice.get_record_by_uri(plain.uri))["value"]


async def test_reply_root_comes_from_the_parent(node: Node) -> None:
    async with account(node, "alice") as alice, account(node, "bob") as bob:
        top = await alice.post("top")
        middle = await bob.post("middle", reply_to=top.uri)  # by AT-URI
        bottom = await alice.post("bottom", reply_to=middle)  # by reference, root looked up
        reply = (await alice.get_record_by_uri(bottom.uri))["value"]["reply"]
        assert reply == {"root": top.to_json(), "parent": middle.to_json()}
        quote = await bob.post("look", quote=top.uri)
        embed = (await bob.get_record_by_uri(quote.uri))["value"]["embed"]
        assert embed == {"$type": "app.bsky.embed.record", "record": top.to_json()}
        with pytest.raises(XrpcError) as info:
            await bob.post("to nothing", reply_to=top.uri.replace(top.uri[-4:], "aaaa"))
        assert info.value.error == "RecordNotFound"


# -- the social verbs and the views --------------------------------------------------


async def test_verbs_and_views(node: Node) -> None:
    async with account(node, "alice") as alice, account(node, "bob") as bob:
        await alice.put_record(
            "app.bsky.actor.profile",
            "self",
            {"$type": "app.bsky.actor.profile", "displayName": "Alice", "description": "hi"},
        )
        follow = await bob.follow("alice.skyfed.test")  # a handle resolves to the DID
        hello = await alice.post("hello")
        reply = await bob.post("hi alice", reply_to=hello)
        like = await bob.like(hello.uri)
        await bob.repost(hello)

        timeline = await bob.timeline()
        entries = [(e["post"]["uri"], e.get("reason", {}).get("$type")) for e in timeline["feed"]]
        assert (hello.uri, "app.bsky.feed.defs#reasonRepost") in entries
        assert (hello.uri, None) in entries
        assert (reply.uri, None) in entries
        replied = next(e for e in timeline["feed"] if e["post"]["uri"] == reply.uri)
        assert replied["reply"]["parent"]["uri"] == hello.uri
        post = next(e["post"] for e in timeline["feed"] if e["post"]["uri"] == hello.uri)
        assert post["author"]["handle"] == "alice.skyfed.test"
        assert post["author"]["displayName"] == "Alice"
        assert (post["replyCount"], post["repostCount"], post["likeCount"]) == (1, 1, 1)
        assert post["viewer"]["like"] == like.uri

        feed = await alice.author_feed("alice.skyfed.test")
        assert [e["post"]["uri"] for e in feed["feed"]] == [hello.uri]
        latest = await Client(node.url, session=alice.http).latest()
        assert {e["post"]["uri"] for e in latest["feed"]} == {hello.uri, reply.uri}

        thread = (await alice.thread(reply.uri))["thread"]
        assert thread["$type"] == "app.bsky.feed.defs#threadViewPost"
        assert thread["post"]["uri"] == reply.uri
        assert thread["parent"]["post"]["uri"] == hello.uri
        top = (await alice.thread(hello.uri, depth=1))["thread"]
        assert [r["post"]["uri"] for r in top["replies"]] == [reply.uri]

        assert [p["uri"] for p in (await bob.posts([reply.uri, hello.uri]))["posts"]] == [
            reply.uri,
            hello.uri,
        ]
        assert [x["actor"]["did"] for x in (await alice.likes(hello.uri))["likes"]] == [bob.did]
        assert [p["did"] for p in (await alice.reposted_by(hello.uri))["repostedBy"]] == [bob.did]
        assert [p["did"] for p in (await alice.followers("alice.skyfed.test"))["followers"]] == [
            bob.did
        ]
        assert [p["did"] for p in (await bob.follows(bob.did))["follows"]] == [alice.did]

        profile = await bob.profile("alice.skyfed.test")
        assert profile["did"] == alice.did
        assert profile["description"] == "hi"
        assert (profile["followersCount"], profile["followsCount"], profile["postsCount"]) == (
            1,
            0,
            1,
        )
        assert profile["viewer"]["following"] == follow.uri
        both = await bob.profiles(["alice.skyfed.test", bob.did])
        assert [p["did"] for p in both["profiles"]] == [alice.did, bob.did]

        # delete() takes any of one's own records by AT-URI, and views follow.
        await bob.delete(like.uri)
        await bob.delete(follow)
        post = (await bob.posts([hello.uri]))["posts"][0]
        assert post["likeCount"] == 0
        assert "like" not in post["viewer"]
        assert "following" not in (await bob.profile(alice.did))["viewer"]
        with pytest.raises(NotYourRecordError, match="you can delete only your own records"):
            await bob.delete(hello.uri)
        with pytest.raises(InvalidSyntax):
            await bob.delete("at://not-a-record")


async def test_block_hides_both_ways(node: Node) -> None:
    async with account(node, "alice") as alice, account(node, "bob") as bob:
        hello = await alice.post("hello")
        block = await bob.block("@alice.skyfed.test")
        assert AtUri.from_str(block.uri).collection == "app.bsky.graph.block"
        assert (await bob.profile(alice.did))["viewer"]["blocking"] == block.uri
        assert (await alice.profile(bob.did))["viewer"]["blockedBy"] is True
        assert (await bob.posts([hello.uri]))["posts"] == []
        await bob.delete(block.uri)
        assert [p["uri"] for p in (await bob.posts([hello.uri]))["posts"]] == [hello.uri]


async def test_paginate_walks_every_page(node: Node) -> None:
    async with account(node, "alice") as alice:
        refs = [await alice.post(f"post {i}") for i in range(5)]
        seen = [
            item["post"]["uri"]
            async for item in alice.paginate(
                "app.bsky.feed.getAuthorFeed", "feed", {"actor": alice.did, "limit": 2}
            )
        ]
        assert seen == [r.uri for r in reversed(refs)]


# -- verification --------------------------------------------------------------------


@pytest.fixture
async def two(tmp_path: Path) -> AsyncIterator[tuple[Node, Node]]:
    """Node A (alice's home) and node B, linked."""
    nodes = []
    try:
        for name in "ab":
            config = NodeConfig(data_dir=tmp_path / name, port=0, reconcile_interval=0.5)
            node = Node(config)
            await node.start()
            nodes.append(node)
        a, b = nodes
        b.federation.dial(a.url)
        yield a, b
    finally:
        for node in nodes:
            await node.stop()


async def _held(node: Node, ref: RecordRef) -> bool:
    at = AtUri.from_str(ref.uri)
    row = await node.storage.get_record(at.authority, at.collection, at.rkey)
    return row is not None and str(row.cid) == ref.cid


async def test_verify_record_on_a_node_that_is_not_home(two: tuple[Node, Node]) -> None:
    a, b = two
    async with account(a, "alice") as alice, Client(b.url) as reader:
        ref = await alice.post("signed at home, checked anywhere")
        gone = await alice.post("soon deleted")
        await until(lambda: _held(b, gone))
        assert await _held(b, ref)

        assert await reader.verify_record(ref.uri) == ref
        assert await reader.verify_record(ref.uri, cid=ref.cid) == ref
        with pytest.raises(VerificationError, match="signed CID is"):
            await reader.verify_record(ref.uri, cid=gone.cid)

        # Absent: deleted at home, and gone from B once the delete arrives.
        await alice.delete(gone.uri)

        async def deleted() -> bool:
            return not await _held(b, gone)

        await until(deleted)
        # Deleted is not tampered: the error says so, as its own kind.
        with pytest.raises(RecordNotFoundError, match="not in its author's signed repository"):
            await reader.verify_record(gone.uri)
        # A repository the node does not hold at all is the node's error to report.
        with pytest.raises(XrpcError):
            await reader.verify_record(
                "at://did:skyfed:aaaaaaaaaaaaaaaaaaaaaaaa/app.bsky.feed.post/3kaaaaaaaaaaa"
            )


Tamper = Callable[[list[CID], dict[CID, bytes], CID], tuple[list[CID], dict[CID, bytes]]]


def _flip_record_byte(
    roots: list[CID], blocks: dict[CID, bytes], record: CID
) -> tuple[list[CID], dict[CID, bytes]]:
    data = bytearray(blocks[record])
    data[-1] ^= 1
    return roots, {**blocks, record: bytes(data)}


def _swap_record(
    roots: list[CID], blocks: dict[CID, bytes], record: CID
) -> tuple[list[CID], dict[CID, bytes]]:
    # A well-formed block under its own (correct) CID, but not the one the tree names.
    other = blocks[record].replace(b"original", b"forged!!")
    out = {k: v for k, v in blocks.items() if k != record}
    out[cid_for_msgpack(other)] = other
    return roots, out


def _resign_commit(
    roots: list[CID], blocks: dict[CID, bytes], record: CID
) -> tuple[list[CID], dict[CID, bytes]]:
    commit = Commit.from_bytes(blocks[roots[0]])
    forged = Commit.sign(commit.did, commit.data, commit.rev, seeded_key(99), prev=commit.prev)
    out = {k: v for k, v in blocks.items() if k != roots[0]}
    out[forged.cid] = forged.to_bytes()
    return [forged.cid], out


def _drop_tree_node(
    roots: list[CID], blocks: dict[CID, bytes], record: CID
) -> tuple[list[CID], dict[CID, bytes]]:
    commit = Commit.from_bytes(blocks[roots[0]])
    return roots, {k: v for k, v in blocks.items() if k != commit.data}


@contextlib.asynccontextmanager
async def serving(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]], route: str = "/xrpc/{nsid}"
) -> AsyncIterator[str]:
    """A local HTTP server on 127.0.0.1, a free port, answering GET ``route``."""
    app = web.Application()
    app.router.add_get(route, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def lying_node(upstream: str, tamper: Tamper) -> AsyncIterator[str]:
    """A node that relays ``upstream`` but alters every record proof it serves."""
    async with Client(upstream) as up:

        async def xrpc(request: web.Request) -> web.StreamResponse:
            nsid = request.match_info["nsid"]
            params = dict(request.query)
            answer = await up.call(nsid, params=params, auth=None)
            if nsid != "com.atproto.sync.getRecord":
                return web.json_response(answer)
            roots, blocks = read_car(answer)
            path = f"{params['collection']}/{params['rkey']}"
            record = _record_cid(roots, blocks, path)
            roots, blocks = tamper(roots, blocks, record)
            body = b"".join(write_car(roots, blocks.items()))
            return web.Response(body=body, content_type="application/vnd.ipld.car")

        async with serving(xrpc) as url:
            yield url


def _record_cid(roots: list[CID], blocks: dict[CID, bytes], path: str) -> CID:
    from protocol.mst import MST, MemoryBlockStore

    commit = Commit.from_bytes(blocks[roots[0]])
    cid = MST.load(MemoryBlockStore(blocks), commit.data).get(path)
    assert cid is not None
    return cid


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        pytest.param(_flip_record_byte, "does not hash", id="flipped-record-byte"),
        pytest.param(_swap_record, "record block does not hash", id="swapped-record"),
        pytest.param(_resign_commit, "signature", id="commit-signed-by-another-key"),
        pytest.param(_drop_tree_node, "missing|block", id="tree-node-withheld"),
    ],
)
async def test_tampered_proof_fails_verification(node: Node, tamper: Tamper, reason: str) -> None:
    async with account(node, "alice") as alice:
        ref = await alice.post("original words")
        async with lying_node(node.url, tamper) as liar, Client(liar) as reader:
            with pytest.raises(VerificationError, match=reason):
                await reader.verify_record(ref.uri)
        # The honest node's proof of the same record checks out.
        async with Client(node.url) as honest:
            assert await honest.verify_record(ref.uri) == ref


async def test_proof_from_another_repo_fails(node: Node) -> None:
    async with account(node, "alice") as alice, account(node, "mallory") as mallory:
        ref = await alice.post("mine")
        at = AtUri.from_str(ref.uri)
        # mallory writes a record at the same path in her own repo and serves her
        # (validly signed) proof as if it were alice's.
        await mallory.create_record(
            at.collection,
            {"$type": "app.bsky.feed.post", "text": "mine", "createdAt": "2026-01-01T00:00:00Z"},
            rkey=at.rkey,
        )

        async with Client(node.url) as up:
            proof = await up.call(
                "com.atproto.sync.getRecord",
                params={"did": mallory.did, "collection": at.collection, "rkey": at.rkey},
            )
        roots, blocks = read_car(proof)

        def substitute(
            _r: list[CID], _b: dict[CID, bytes], _c: CID
        ) -> tuple[list[CID], dict[CID, bytes]]:
            return roots, blocks

        async with lying_node(node.url, substitute) as liar, Client(liar) as reader:
            with pytest.raises(VerificationError, match=f"commit is by {mallory.did}"):
                await reader.verify_record(ref.uri)


@contextlib.asynccontextmanager
async def answering(body: bytes, status: int = 200) -> AsyncIterator[str]:
    """A server that answers every XRPC call with ``body`` as JSON."""

    async def xrpc(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, status=status, content_type="application/json")

    async with serving(xrpc) as url:
        yield url


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="nested-past-the-parser"),
        pytest.param(b'{"feed": [', id="not-json"),
    ],
)
async def test_a_hostile_nodes_answer_is_an_xrpc_error_not_a_crash(body: bytes) -> None:
    # A node's answer comes from anyone running one: the client names the fault
    # instead of raising RecursionError or a bare ValueError into the CLI.
    async with answering(body) as url, Client(url) as client:
        with pytest.raises(XrpcError) as err:
            await client.call("app.bsky.feed.getTimeline", auth=None)
    assert err.value.error == "InvalidResponse"
