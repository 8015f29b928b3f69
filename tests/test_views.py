"""app.bsky views built from a node's own indexes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from node.client import Client, XrpcError
from node.wiring import Node

PASSWORD = "correct horse battery staple"


@pytest.fixture
async def people(node: Node) -> AsyncIterator[tuple[Client, Client, Client]]:
    clients = [Client(node.url) for _ in range(3)]
    for c, name in zip(clients, ("alice", "bob", "carol"), strict=True):
        await c.create_account(f"{name}.skyfed.test", PASSWORD)
    try:
        yield clients[0], clients[1], clients[2]
    finally:
        for c in clients:
            await c.close()


async def _multi(c: Client, nsid: str, name: str, values: list[str]) -> Any:
    """A GET with a repeated query parameter, as the lexicon's arrays are sent."""
    url = f"{c.base_url}/xrpc/{nsid}"
    async with c.http.get(url, params=[(name, v) for v in values]) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


def texts(feed: list[dict[str, Any]]) -> list[str]:
    return [item["post"]["record"]["text"] for item in feed]


async def test_timeline_counts_and_viewer_state(people: tuple[Client, Client, Client]) -> None:
    alice, bob, carol = people
    await bob.follow(alice.did)
    first = await alice.post("first")
    await carol.post("carol is not followed")
    reply = await bob.post("bob replies", reply_to=first)
    await bob.like(first)
    await carol.like(first)
    await carol.repost(first)
    await bob.repost(first)
    tl = await bob.call("app.bsky.feed.getTimeline")
    feed = tl["feed"]
    assert "carol is not followed" not in texts(feed)
    # newest first: bob's repost of first, bob's reply, alice's first
    assert texts(feed)[:2] == ["first", "bob replies"]
    assert feed[0]["reason"]["$type"] == "app.bsky.feed.defs#reasonRepost"
    assert feed[0]["reason"]["by"]["handle"] == "bob.skyfed.test"
    post = next(i["post"] for i in feed if "reason" not in i and i["post"]["uri"] == first.uri)
    assert post["$type"] == "app.bsky.feed.defs#postView"
    assert (post["likeCount"], post["repostCount"], post["replyCount"]) == (2, 2, 1)
    assert post["viewer"]["like"].startswith(f"at://{bob.did}/app.bsky.feed.like/")
    assert post["author"] == {"did": alice.did, "handle": "alice.skyfed.test", "labels": []}
    replied = next(i for i in feed if i["post"]["uri"] == reply.uri)
    assert replied["reply"]["parent"]["uri"] == first.uri
    assert replied["reply"]["root"]["$type"] == "app.bsky.feed.defs#postView"
    likes = await carol.call("app.bsky.feed.getLikes", params={"uri": first.uri})
    assert {lk["actor"]["handle"] for lk in likes["likes"]} == {
        "bob.skyfed.test",
        "carol.skyfed.test",
    }
    by = await carol.call("app.bsky.feed.getRepostedBy", params={"uri": first.uri})
    assert len(by["repostedBy"]) == 2


async def test_thread_parents_and_nested_replies(people: tuple[Client, Client, Client]) -> None:
    alice, bob, carol = people
    root = await alice.post("root")
    r1 = await bob.post("r1", reply_to=root)
    r2 = await carol.post("r2", reply_to=r1, root=root)
    await alice.post("r1b", reply_to=root)
    out = await carol.call("app.bsky.feed.getPostThread", params={"uri": r1.uri})
    thread = out["thread"]
    assert thread["$type"] == "app.bsky.feed.defs#threadViewPost"
    assert thread["post"]["record"]["text"] == "r1"
    assert thread["parent"]["post"]["uri"] == root.uri
    assert [r["post"]["uri"] for r in thread["replies"]] == [r2.uri]
    whole = (await carol.call("app.bsky.feed.getPostThread", params={"uri": root.uri}))["thread"]
    assert [r["post"]["record"]["text"] for r in whole["replies"]] == ["r1", "r1b"]
    assert whole["replies"][0]["replies"][0]["post"]["uri"] == r2.uri
    with pytest.raises(XrpcError) as info:
        await carol.call(
            "app.bsky.feed.getPostThread",
            params={"uri": f"at://{alice.did}/app.bsky.feed.post/3kzzzzzzzzzzz"},
        )
    assert info.value.error == "NotFound"


async def test_deletes_and_edits_show_in_every_view(people: tuple[Client, Client, Client]) -> None:
    alice, bob, _ = people
    ref = await alice.post("typo")
    rkey = ref.uri.rsplit("/", 1)[1]
    await bob.like(ref)
    record = (await alice.get_record(alice.did, "app.bsky.feed.post", rkey))["value"]
    await alice.put_record("app.bsky.feed.post", rkey, {**record, "text": "fixed"})
    feed = (await bob.call("app.bsky.feed.getAuthorFeed", params={"actor": alice.did}))["feed"]
    assert texts(feed) == ["fixed"]
    assert feed[0]["post"]["likeCount"] == 1
    await alice.delete_record("app.bsky.feed.post", rkey)
    for nsid, params in [
        ("app.bsky.feed.getAuthorFeed", {"actor": "alice.skyfed.test"}),
        ("skyfed.feed.getLatest", {}),
    ]:
        assert (await bob.call(nsid, params=params))["feed"] == []
    profile = await bob.call("app.bsky.actor.getProfile", params={"actor": alice.did})
    assert profile["postsCount"] == 0


async def test_blocks_hide_both_ways(people: tuple[Client, Client, Client]) -> None:
    alice, bob, carol = people
    root = await alice.post("alice speaks")
    reply = await bob.post("bob replies", reply_to=root)
    await alice.follow(bob.did)
    await bob.follow(alice.did)
    await bob.create_record(
        "app.bsky.graph.block",
        {
            "$type": "app.bsky.graph.block",
            "subject": alice.did,
            "createdAt": "2026-11-23T12:00:00Z",
        },
    )
    assert "alice speaks" not in texts((await bob.call("app.bsky.feed.getTimeline"))["feed"])
    assert "bob replies" not in texts((await alice.call("app.bsky.feed.getTimeline"))["feed"])
    feed = await alice.call("app.bsky.feed.getAuthorFeed", params={"actor": bob.did})
    assert feed["feed"] == []
    thread = (await alice.call("app.bsky.feed.getPostThread", params={"uri": root.uri}))["thread"]
    # A blocked author's reply is a blockedPost in the thread (ThreadViewPost's union).
    assert [r["$type"] for r in thread["replies"]] == ["app.bsky.feed.defs#blockedPost"]
    assert thread["replies"][0]["uri"] == reply.uri
    seen = (await bob.call("app.bsky.feed.getPostThread", params={"uri": reply.uri}))["thread"]
    assert seen["parent"]["$type"] == "app.bsky.feed.defs#blockedPost"
    # Carol, who blocks no one, sees both.
    latest = texts((await carol.call("skyfed.feed.getLatest"))["feed"])
    assert {"alice speaks", "bob replies"} <= set(latest)
    prof = await bob.call("app.bsky.actor.getProfile", params={"actor": alice.did})
    assert "blocking" in prof["viewer"]


async def test_profiles_and_follow_lists(people: tuple[Client, Client, Client]) -> None:
    alice, bob, carol = people
    await alice.put_record(
        "app.bsky.actor.profile",
        "self",
        {"$type": "app.bsky.actor.profile", "displayName": "Alice", "description": "hi there"},
    )
    await bob.follow(alice.did)
    await carol.follow(alice.did)
    await alice.follow(bob.did)
    await alice.post("one")
    p = await bob.call("app.bsky.actor.getProfile", params={"actor": "alice.skyfed.test"})
    assert (p["displayName"], p["description"]) == ("Alice", "hi there")
    assert (p["followersCount"], p["followsCount"], p["postsCount"]) == (2, 1, 1)
    assert p["viewer"]["following"].startswith(f"at://{bob.did}/app.bsky.graph.follow/")
    assert p["viewer"]["followedBy"].startswith(f"at://{alice.did}/")
    followers = await bob.call("app.bsky.graph.getFollowers", params={"actor": alice.did})
    assert {f["handle"] for f in followers["followers"]} == {"bob.skyfed.test", "carol.skyfed.test"}
    follows = await bob.call("app.bsky.graph.getFollows", params={"actor": alice.did})
    assert [f["handle"] for f in follows["follows"]] == ["bob.skyfed.test"]
    both = await _multi(
        bob, "app.bsky.actor.getProfiles", "actors", [alice.did, "carol.skyfed.test"]
    )
    assert [x["handle"] for x in both["profiles"]] == ["alice.skyfed.test", "carol.skyfed.test"]
    with pytest.raises(XrpcError) as info:
        await bob.call("app.bsky.actor.getProfile", params={"actor": "nobody.skyfed.test"})
    assert info.value.error == "ProfileNotFound"


async def test_pagination_and_quotes(people: tuple[Client, Client, Client]) -> None:
    alice, bob, _ = people
    refs = [await alice.post(f"post {i}") for i in range(7)]
    quote = await bob.post("look at this", quote=refs[0])
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"actor": alice.did, "limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = await bob.call("app.bsky.feed.getAuthorFeed", params=params)
        seen += [i["post"]["uri"] for i in page["feed"]]
        cursor = page.get("cursor")
        if not cursor:
            break
    assert seen == [r.uri for r in reversed(refs)]
    got = await _multi(bob, "app.bsky.feed.getPosts", "uris", [quote.uri, refs[0].uri])
    quoted = got["posts"][0]["embed"]
    assert quoted["$type"] == "app.bsky.embed.record#view"
    assert quoted["record"]["uri"] == refs[0].uri
    assert got["posts"][1]["quoteCount"] == 1


async def test_timelines_rebuilt_from_indexes_match(
    node: Node, people: tuple[Client, Client, Client]
) -> None:
    from node.appview.index import rebuild_feeds

    alice, bob, carol = people
    await bob.follow(alice.did)
    await bob.follow(carol.did)
    first = await alice.post("one")
    await carol.post("two")
    await carol.repost(first)
    await bob.post("mine")
    before = await bob.call("app.bsky.feed.getTimeline")
    await node.storage.write(rebuild_feeds)
    after = await bob.call("app.bsky.feed.getTimeline")
    assert [i["post"]["uri"] for i in after["feed"]] == [i["post"]["uri"] for i in before["feed"]]
    assert len(after["feed"]) == 4
    # Unfollowing takes carol's posts and reposts out again.
    follows = await bob.call("app.bsky.graph.getFollows", params={"actor": bob.did})
    carol_follow = next(
        f["viewer"]["following"] for f in follows["follows"] if f["did"] == carol.did
    )
    await bob.delete_record("app.bsky.graph.follow", carol_follow.rsplit("/", 1)[1])
    texts_left = [
        i["post"]["record"]["text"]
        for i in (await bob.call("app.bsky.feed.getTimeline"))["feed"]
        if "reason" not in i
    ]
    assert texts_left == ["mine", "one"]
