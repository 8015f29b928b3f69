"""More views: getActorLikes, getQuotes, getSuggestions, getSuggestedFollowsByActor."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from node.client import Client, XrpcError
from node.wiring import Node

PASSWORD = "correct horse battery staple"
NAMES = ("alice", "bob", "carol", "dave", "erin")


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


def texts(feed: list[dict[str, Any]]) -> list[str]:
    return [item["post"]["record"]["text"] for item in feed]


def dids(actors: list[dict[str, Any]]) -> list[str]:
    return [a["did"] for a in actors]


async def test_actor_likes_are_the_actors_own_newest_first(people: list[Client]) -> None:
    alice, bob, *_ = people
    posts = [await bob.post(f"post {i}") for i in range(5)]
    for p in posts:
        await alice.like(p)
    first = await alice.call("app.bsky.feed.getActorLikes", params={"actor": alice.did, "limit": 3})
    assert texts(first["feed"]) == ["post 4", "post 3", "post 2"]
    assert all(item["post"]["viewer"]["like"] for item in first["feed"])
    rest = await alice.call(
        "app.bsky.feed.getActorLikes",
        params={"actor": "alice.skyfed.test", "limit": 3, "cursor": first["cursor"]},
    )
    assert texts(rest["feed"]) == ["post 1", "post 0"]
    assert "cursor" not in rest
    # Likes are private to the liker, as on Bluesky.
    with pytest.raises(XrpcError) as e:
        await bob.call("app.bsky.feed.getActorLikes", params={"actor": alice.did})
    assert e.value.status == 400
    with pytest.raises(XrpcError) as e:
        await bob.call("app.bsky.feed.getActorLikes", params={"actor": alice.did}, auth=None)
    assert e.value.status == 401
    # A deleted post leaves the list; a deleted like too.
    await bob.delete(posts[4])
    like = await alice.like(posts[3])  # a second like of the same post is still one post
    await alice.delete(like)
    out = await alice.call("app.bsky.feed.getActorLikes", params={"actor": alice.did})
    assert texts(out["feed"]) == ["post 3", "post 2", "post 1", "post 0"]


async def test_actor_likes_hide_blocked_authors(people: list[Client]) -> None:
    alice, bob, carol, *_ = people
    await alice.like(await bob.post("from bob"))
    await alice.like(await carol.post("from carol"))
    await carol.block(alice.did)
    out = await alice.call("app.bsky.feed.getActorLikes", params={"actor": alice.did})
    assert texts(out["feed"]) == ["from bob"]


async def test_actor_likes_refuse_a_forged_cursor(people: list[Client]) -> None:
    alice = people[0]
    for cursor in ("no-separator", "x" * 9000):
        with pytest.raises(XrpcError) as e:
            await alice.call(
                "app.bsky.feed.getActorLikes", params={"actor": alice.did, "cursor": cursor}
            )
        assert e.value.status == 400


async def test_quotes_of_a_post_with_cid_and_cursor(people: list[Client]) -> None:
    alice, bob, carol, dave, _ = people
    original = await alice.post("quote me")
    await bob.post("bob quotes", quote=original)
    await carol.post("carol quotes", quote=original)
    await dave.post("dave quotes", quote=original)
    await bob.post("not a quote")
    page = await alice.call(
        "app.bsky.feed.getQuotes", params={"uri": original.uri, "limit": 2}, auth=None
    )
    assert page["uri"] == original.uri
    assert [p["record"]["text"] for p in page["posts"]] == ["dave quotes", "carol quotes"]
    assert page["posts"][0]["embed"]["record"]["uri"] == original.uri
    rest = await alice.call(
        "app.bsky.feed.getQuotes",
        params={"uri": original.uri, "limit": 2, "cursor": page["cursor"]},
        auth=None,
    )
    assert [p["record"]["text"] for p in rest["posts"]] == ["bob quotes"]
    # cid filters to quotes of that version of the post.
    same = await alice.call(
        "app.bsky.feed.getQuotes", params={"uri": original.uri, "cid": original.cid}
    )
    assert same["cid"] == original.cid
    assert len(same["posts"]) == 3
    other = (await bob.post("another")).cid
    none = await alice.call("app.bsky.feed.getQuotes", params={"uri": original.uri, "cid": other})
    assert none["posts"] == []
    # A muted quoter is left out for the one who muted it; a blocked one too.
    await alice.mute(dave.did)
    await carol.block(alice.did)
    seen = await alice.call("app.bsky.feed.getQuotes", params={"uri": original.uri})
    assert [p["record"]["text"] for p in seen["posts"]] == ["bob quotes"]
    with pytest.raises(XrpcError):
        await alice.call("app.bsky.feed.getQuotes", params={"uri": original.uri, "cid": "nope"})


async def test_quotes_sorted_by_likes(people: list[Client]) -> None:
    alice, bob, carol, dave, erin = people
    original = await alice.post("quote me")
    quiet = await bob.post("nobody likes this quote", quote=original)
    loved = await carol.post("everybody likes this quote", quote=original)
    liked = await dave.post("one like", quote=original)
    for c in (alice, bob, erin):
        await c.like(loved)
    await erin.like(liked)
    params = {"uri": original.uri, "sort": "top", "limit": 2}
    top = await alice.call("app.bsky.feed.getQuotes", params=params)
    assert [p["uri"] for p in top["posts"]] == [loved.uri, liked.uri]
    assert top["cursor"] == "2"
    rest = await alice.call("app.bsky.feed.getQuotes", params={**params, "cursor": "2"})
    assert [p["uri"] for p in rest["posts"]] == [quiet.uri]
    with pytest.raises(XrpcError) as e:
        await alice.call("app.bsky.feed.getQuotes", params={"uri": original.uri, "sort": "x"})
    assert e.value.status == 400


async def test_suggestions_are_friends_of_friends_then_active_accounts(
    people: list[Client],
) -> None:
    alice, bob, carol, dave, erin = people
    # alice follows bob and carol; both follow dave; bob also follows erin.
    await alice.follow(bob.did)
    await alice.follow(carol.did)
    await bob.follow(dave.did)
    await carol.follow(dave.did)
    await bob.follow(erin.did)
    await bob.follow(alice.did)  # alice herself is never suggested
    for c in people:
        await c.post("hello")
    out = await alice.call("app.bsky.actor.getSuggestions", params={"limit": 10})
    assert dids(out["actors"])[:2] == [dave.did, erin.did]
    assert alice.did not in dids(out["actors"])
    assert bob.did not in dids(out["actors"])
    assert carol.did not in dids(out["actors"])
    assert out["actors"][0]["handle"] == "dave.skyfed.test"
    # Muted and blocked accounts are never suggested, whichever side blocked.
    await alice.mute(dave.did)
    await erin.block(alice.did)
    out = await alice.call("app.bsky.actor.getSuggestions", params={"limit": 10})
    assert dave.did not in dids(out["actors"])
    assert erin.did not in dids(out["actors"])
    # Someone with no follows gets the active accounts, paged.
    fresh = Client(alice.base_url)
    try:
        await fresh.create_account("fresh.skyfed.test", PASSWORD)
        first = await fresh.call("app.bsky.actor.getSuggestions", params={"limit": 2})
        assert len(first["actors"]) == 2
        rest = await fresh.call(
            "app.bsky.actor.getSuggestions", params={"limit": 2, "cursor": first["cursor"]}
        )
        together = dids(first["actors"]) + dids(rest["actors"])
        assert len(set(together)) == len(together) == 4
        assert fresh.did not in together
    finally:
        await fresh.close()
    anon = await alice.call("app.bsky.actor.getSuggestions", auth=None)
    assert len(anon["actors"]) == 5


async def test_suggestion_cursors_are_bounded(people: list[Client]) -> None:
    alice = people[0]
    for cursor in ("-1", "abc", "99999"):
        with pytest.raises(XrpcError) as e:
            await alice.call("app.bsky.actor.getSuggestions", params={"cursor": cursor})
        assert e.value.status == 400
    past = await alice.call("app.bsky.actor.getSuggestions", params={"cursor": "500"})
    assert past["actors"] == []
    assert "cursor" not in past


async def test_suggested_follows_by_actor(people: list[Client]) -> None:
    alice, bob, carol, dave, erin = people
    # carol and dave follow bob; they both follow erin: erin is like bob.
    await carol.follow(bob.did)
    await dave.follow(bob.did)
    await carol.follow(erin.did)
    await dave.follow(erin.did)
    await bob.follow(dave.did)
    await alice.follow(dave.did)  # alice follows dave already: not suggested to her
    out = await alice.call("app.bsky.graph.getSuggestedFollowsByActor", params={"actor": bob.did})
    assert dids(out["suggestions"])[0] == erin.did
    assert dave.did not in dids(out["suggestions"])
    assert bob.did not in dids(out["suggestions"])
    assert alice.did not in dids(out["suggestions"])
    with pytest.raises(XrpcError) as e:
        await alice.call(
            "app.bsky.graph.getSuggestedFollowsByActor", params={"actor": "nobody.skyfed.test"}
        )
    assert e.value.error == "ProfileNotFound"
