"""Threadgates and postgates: honoured in views, and enforced on accounts hosted here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from node.client import Client, RecordRef, XrpcError
from node.config import NodeConfig
from node.wiring import Node

from .graphkit import CURATELIST, add_item, make_list, now, postgate, rkey, threadgate
from .test_federation import link, until

PASSWORD = "correct horse battery staple"
NAMES = ("alice", "bob", "carol", "dave")
FOLLOWING = {"$type": "app.bsky.feed.threadgate#followingRule"}
MENTION = {"$type": "app.bsky.feed.threadgate#mentionRule"}
FOLLOWER = {"$type": "app.bsky.feed.threadgate#followerRule"}


@pytest.fixture
async def people(node: Node) -> AsyncIterator[list[Client]]:
    clients = [Client(node.url) for _ in NAMES]
    for c, name in zip(clients, NAMES, strict=True):
        await c.create_account(f"{name}.skyfed.test", PASSWORD)
    try:
        yield clients
    finally:
        for c in clients:
            await c.close()


async def _thread(c: Client, uri: str) -> dict[str, Any]:
    out: dict[str, Any] = await c.call("app.bsky.feed.getPostThread", params={"uri": uri})
    return out


def _reply_texts(thread: dict[str, Any]) -> list[str]:
    return [r["post"]["record"]["text"] for r in thread["thread"].get("replies", [])]


async def test_nobody_may_reply_but_the_author(people: list[Client]) -> None:
    alice, bob, *_ = people
    root = await alice.post("no replies please")
    early = await bob.post("bob got in first", reply_to=root)
    gate = await threadgate(alice, root, [])
    with pytest.raises(XrpcError) as e:
        await bob.post("bob tries anyway", reply_to=root)
    assert (e.value.status, e.value.error) == (400, "ReplyNotAllowed")
    assert "threadgate" in e.value.message
    # A reply to a reply is in the same thread: the root's gate decides.
    with pytest.raises(XrpcError):
        await bob.post("nested", reply_to=early, root=root)
    # Through applyWrites too.
    with pytest.raises(XrpcError) as e:
        await bob.call(
            "com.atproto.repo.applyWrites",
            data={
                "repo": bob.did,
                "writes": [
                    {
                        "$type": "com.atproto.repo.applyWrites#create",
                        "collection": "app.bsky.feed.post",
                        "value": {
                            "$type": "app.bsky.feed.post",
                            "text": "sneaky",
                            "createdAt": now(),
                            "reply": {"root": root.to_json(), "parent": root.to_json()},
                        },
                    }
                ],
            },
        )
    assert e.value.error == "ReplyNotAllowed"
    # Naming another thread's root, or the root by handle, changes nothing: the
    # parent's thread and the DID behind the handle decide.
    elsewhere = await bob.post("an ungated post of bob's")
    by_handle = RecordRef(root.uri.replace(alice.did, "alice.skyfed.test"), root.cid)
    for claimed_root, parent in ((elsewhere, root), (by_handle, by_handle), (elsewhere, early)):
        with pytest.raises(XrpcError) as e:
            await bob.post("false root", reply_to=parent, root=claimed_root)
        assert e.value.error == "ReplyNotAllowed"
    await alice.post("the author may", reply_to=root)

    thread = await _thread(bob, root.uri)
    # The reply made before the gate stays (gates are not retroactive).
    assert _reply_texts(thread) == ["bob got in first", "the author may"]
    assert thread["threadgate"]["uri"] == gate.uri
    assert thread["threadgate"]["record"]["allow"] == []
    post = thread["thread"]["post"]
    assert post["threadgate"]["uri"] == gate.uri
    assert post["viewer"]["replyDisabled"] is True
    assert (await _thread(alice, root.uri))["thread"]["post"]["viewer"]["replyDisabled"] is False
    # Without the gate, anyone may reply again.
    await alice.delete(gate.uri)
    await bob.post("bob is back", reply_to=root)


async def test_following_follower_mention_and_list_rules(people: list[Client]) -> None:
    alice, bob, carol, dave = people
    await alice.follow(carol.did)  # following rule lets carol in
    await dave.follow(alice.did)  # follower rule lets dave in
    root = await alice.post("hello @bob.skyfed.test")  # mention rule lets bob in
    await threadgate(alice, root, [FOLLOWING])
    await carol.post("carol is followed", reply_to=root)
    for outsider in (bob, dave):
        with pytest.raises(XrpcError):
            await outsider.post("not allowed", reply_to=root)
    await threadgate(alice, root, [MENTION])
    await bob.post("bob was mentioned", reply_to=root)
    with pytest.raises(XrpcError):
        await carol.post("carol is not mentioned", reply_to=root)
    await threadgate(alice, root, [FOLLOWER])
    await dave.post("dave follows alice", reply_to=root)
    lst = await make_list(alice, "repliers", CURATELIST)
    await add_item(alice, lst.uri, carol.did)
    await threadgate(alice, root, [{"$type": "app.bsky.feed.threadgate#listRule", "list": lst.uri}])
    await carol.post("carol is on the list", reply_to=root)
    with pytest.raises(XrpcError):
        await dave.post("dave is not", reply_to=root)
    thread = await _thread(dave, root.uri)
    assert [x["uri"] for x in thread["threadgate"]["lists"]] == [lst.uri]
    assert thread["thread"]["post"]["viewer"]["replyDisabled"] is True
    assert (await _thread(carol, root.uri))["thread"]["post"]["viewer"]["replyDisabled"] is False


async def test_hidden_replies_ride_in_the_threadgate(people: list[Client]) -> None:
    alice, bob, *_ = people
    root = await alice.post("root")
    rude = await bob.post("rude reply", reply_to=root)
    await threadgate(alice, root, None, hidden=(rude.uri,))
    thread = await _thread(bob, root.uri)
    # As Bluesky's getPostThread: the reply is there, and the gate lists it hidden
    # for the client to fold away; anyone may still reply (no allow rules).
    assert thread["threadgate"]["record"]["hiddenReplies"] == [rude.uri]
    assert "replyDisabled" not in thread["thread"]["post"]["viewer"]
    await bob.post("another", reply_to=root)


async def test_a_gate_in_someone_elses_repo_is_ignored(people: list[Client]) -> None:
    alice, bob, carol, _ = people
    root = await alice.post("alice's thread")
    # Carol writes a gate naming Alice's post, under the same record key, in her repo.
    await carol.put_record(
        "app.bsky.feed.threadgate",
        rkey(root.uri),
        {"$type": "app.bsky.feed.threadgate", "post": root.uri, "allow": [], "createdAt": now()},
    )
    # And Alice's own gate under the wrong record key gates nothing either.
    await alice.put_record(
        "app.bsky.feed.threadgate",
        "3kzzzzzzzzzzz",
        {"$type": "app.bsky.feed.threadgate", "post": root.uri, "allow": [], "createdAt": now()},
    )
    await bob.post("bob may reply", reply_to=root)
    thread = await _thread(bob, root.uri)
    assert _reply_texts(thread) == ["bob may reply"]
    assert "threadgate" not in thread


async def test_postgate_disables_quotes_and_detaches_existing_ones(people: list[Client]) -> None:
    alice, bob, carol, _ = people
    post = await alice.post("quote me not")
    quote = await bob.post("bob quotes", quote=post)
    await postgate(alice, post, disable=True, detached=[quote.uri])
    with pytest.raises(XrpcError) as e:
        await carol.post("carol quotes", quote=post)
    assert (e.value.status, e.value.error) == (400, "QuoteNotAllowed")
    by_handle = RecordRef(post.uri.replace(alice.did, "alice.skyfed.test"), post.cid)
    with pytest.raises(XrpcError) as e:
        await carol.post("carol quotes by handle", quote=by_handle)
    assert e.value.error == "QuoteNotAllowed"
    await alice.post("alice may quote herself", quote=post)

    views = await carol.call("app.bsky.feed.getPosts", params={"uris": [post.uri, quote.uri]})
    by_uri = {v["uri"]: v for v in views["posts"]}
    assert by_uri[post.uri]["viewer"]["embeddingDisabled"] is True
    embed = by_uri[quote.uri]["embed"]["record"]
    assert embed == {
        "$type": "app.bsky.embed.record#viewDetached",
        "uri": post.uri,
        "detached": True,
    }
    # Detaching alone (quotes still allowed): a new quote is accepted and shown.
    other = await alice.post("quote me, but not bob")
    old = await bob.post("bob quotes again", quote=other)
    await postgate(alice, other, detached=[old.uri])
    fresh = await carol.post("carol quotes fine", quote=other)
    views = await carol.call("app.bsky.feed.getPosts", params={"uris": [old.uri, fresh.uri]})
    kinds = {v["uri"]: v["embed"]["record"]["$type"] for v in views["posts"]}
    assert kinds == {
        old.uri: "app.bsky.embed.record#viewDetached",
        fresh.uri: "app.bsky.embed.record#viewRecord",
    }


async def test_gated_views_parse_as_sdk_models(people: list[Client]) -> None:
    from atproto_client import models

    alice, bob, *_ = people
    root = await alice.post("gated")
    await threadgate(alice, root, [FOLLOWING])
    out = await _thread(bob, root.uri)
    parsed = models.AppBskyFeedGetPostThread.Response.model_validate(out)
    assert parsed.threadgate is not None
    assert parsed.thread.post.viewer.reply_disabled is True


# -- a reply arriving from another node ---------------------------------------------------


@pytest.fixture
async def two(tmp_path: Path) -> AsyncIterator[list[Node]]:
    nodes = []
    for i in range(2):
        config = NodeConfig(data_dir=tmp_path / f"node{i}", port=0, reconcile_interval=0.5)
        node = Node(config)
        await node.start()
        nodes.append(node)
    try:
        yield nodes
    finally:
        for node in nodes:
            await node.stop()


async def test_a_gossiped_reply_to_a_gated_thread_is_kept_but_hidden(two: list[Node]) -> None:
    a, b = two
    async with Client(a.url) as alice, Client(b.url) as mallory, Client(b.url) as friend:
        await alice.create_account("alice.skyfed.test", PASSWORD)
        await mallory.create_account("mallory.skyfed.test", PASSWORD)
        await friend.create_account("friend.skyfed.test", PASSWORD)
        root = await alice.post("only people I follow")
        await alice.follow(friend.did)
        await threadgate(alice, root, [FOLLOWING])
        # Node B has not heard of Alice's thread yet, so nothing stops Mallory there
        # (a node that does not enforce gates would do the same at any time).
        ref = RecordRef(root.uri, root.cid)
        bad = await mallory.post("mallory barges in", reply_to=ref, root=ref)
        # And once more naming a thread of her own as the root: the parent decides.
        decoy = await mallory.post("mallory's decoy thread")
        false_root = await mallory.post("mallory with a false root", reply_to=ref, root=decoy)
        good = await friend.post("friend replies", reply_to=ref, root=ref)
        await link(two, [(0, 1)])

        async def arrived() -> bool:
            return (
                await a.storage.get_record(mallory.did, "app.bsky.feed.post", rkey(false_root.uri))
                is not None
                and await a.storage.get_record(friend.did, "app.bsky.feed.post", rkey(good.uri))
                is not None
                and await b.storage.get_record(
                    alice.did, "app.bsky.feed.threadgate", rkey(root.uri)
                )
                is not None
            )

        await until(arrived)
        # Node A holds Mallory's signed reply (it is her record) but no thread shows it.
        async with Client(a.url) as reader_a, Client(b.url) as reader_b:
            held = await reader_a.get_record_by_uri(bad.uri)
            assert held["value"]["text"] == "mallory barges in"
            for reader in (reader_a, reader_b, alice):
                thread = await _thread(reader, root.uri)
                assert _reply_texts(thread) == ["friend replies"], reader.base_url
            # Nor any feed: not the latest posts, not her author feed (but her own).
            for reader in (reader_a, reader_b):
                latest = await reader.call("skyfed.feed.getLatest")
                shown = [i["post"]["record"]["text"] for i in latest["feed"]]
                assert "mallory barges in" not in shown
                assert "mallory with a false root" not in shown
                assert "mallory's decoy thread" in shown
                theirs = await reader.call(
                    "app.bsky.feed.getAuthorFeed", params={"actor": mallory.did}
                )
                assert [i["post"]["uri"] for i in theirs["feed"]] == [decoy.uri]
            own = await mallory.call("app.bsky.feed.getAuthorFeed", params={"actor": mallory.did})
            assert len(own["feed"]) == 3
            # Now that B knows the gate, it refuses Mallory's next try.
            with pytest.raises(XrpcError) as e:
                await mallory.post("again", reply_to=ref, root=ref)
            assert e.value.error == "ReplyNotAllowed"
