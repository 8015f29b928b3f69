"""Lists, list blocks and mutes, getBlocks, thread mutes: app.bsky.graph beyond follows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from node.appview import graph
from node.client import Client, XrpcError
from node.wiring import Node

from .graphkit import CURATELIST, MODLIST, add_item, block_list, make_list, now, texts

PASSWORD = "correct horse battery staple"
NAMES = ("alice", "bob", "carol", "dave")


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


async def _latest(c: Client) -> list[str]:
    return texts((await c.call("skyfed.feed.getLatest"))["feed"])


async def test_curate_list_views_and_list_feed(people: list[Client]) -> None:
    alice, bob, carol, dave = people
    lst = await make_list(alice, "good posters", CURATELIST, description="people I read")
    await add_item(alice, lst.uri, bob.did)
    await add_item(alice, lst.uri, carol.did)
    await bob.post("bob on the list")
    await carol.post("carol on the list")
    await dave.post("dave is not on it")

    out = await dave.call("app.bsky.graph.getList", params={"list": lst.uri})
    view = out["list"]
    assert view["$type"] == "app.bsky.graph.defs#listView"
    assert (view["uri"], view["cid"], view["name"]) == (lst.uri, lst.cid, "good posters")
    assert (view["purpose"], view["description"], view["listItemCount"]) == (
        CURATELIST,
        "people I read",
        2,
    )
    assert view["creator"]["did"] == alice.did
    assert {i["subject"]["handle"] for i in out["items"]} == {
        "bob.skyfed.test",
        "carol.skyfed.test",
    }
    assert all(i["$type"] == "app.bsky.graph.defs#listItemView" for i in out["items"])

    # Pages of one, by cursor, cover the list once.
    seen = []
    cursor = None
    for _ in range(5):
        page = await dave.call(
            "app.bsky.graph.getList", params={"list": lst.uri, "limit": 1, "cursor": cursor}
        )
        seen += [i["subject"]["did"] for i in page["items"]]
        cursor = page.get("cursor")
        if not cursor:
            break
    assert sorted(seen) == sorted([bob.did, carol.did])

    lists = await dave.call("app.bsky.graph.getLists", params={"actor": "alice.skyfed.test"})
    assert [x["uri"] for x in lists["lists"]] == [lst.uri]
    only_mod = await dave.call(
        "app.bsky.graph.getLists", params={"actor": alice.did, "purposes": "modlist"}
    )
    assert only_mod["lists"] == []

    feed = await dave.call("app.bsky.graph.getListFeed", params={"list": lst.uri})
    assert sorted(texts(feed["feed"])) == ["bob on the list", "carol on the list"]


async def test_list_feed_pages_and_reads_a_bounded_number_of_members(
    people: list[Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    from node.appview import graph_views

    alice, bob, carol, dave = people
    lst = await make_list(alice, "pages", CURATELIST)
    await add_item(alice, lst.uri, bob.did)
    await add_item(alice, lst.uri, carol.did)
    await add_item(alice, lst.uri, carol.did)  # twice on the list, once in the feed
    for i in range(3):
        await bob.post(f"bob {i}")
        await carol.post(f"carol {i}")
    await dave.post("dave is not on the list")
    got: list[str] = []
    cursor = None
    for _ in range(10):
        page = await dave.call(
            "app.bsky.graph.getListFeed", params={"list": lst.uri, "limit": 4, "cursor": cursor}
        )
        got += texts(page["feed"])
        cursor = page.get("cursor")
        if not cursor:
            break
    assert got == [f"{who} {i}" for i in (2, 1, 0) for who in ("carol", "bob")]
    # Only the most recently added members are read (a list of 100,000 accounts costs
    # no more than one of MAX_LIST_FEED_MEMBERS).
    monkeypatch.setattr(graph_views, "MAX_LIST_FEED_MEMBERS", 1)
    page = await dave.call("app.bsky.graph.getListFeed", params={"list": lst.uri})
    assert texts(page["feed"]) == ["carol 2", "carol 1", "carol 0"]


async def test_mod_list_block_hides_both_ways(people: list[Client]) -> None:
    alice, bob, carol, _ = people
    mod = await make_list(alice, "trolls", MODLIST)
    await add_item(alice, mod.uri, carol.did)
    root = await bob.post("bob speaks")
    await carol.post("carol trolls")
    await carol.post("carol replies to bob", reply_to=root)
    await bob.follow(carol.did)
    await carol.follow(bob.did)
    await carol.like(root)
    assert "carol trolls" in await _latest(bob)

    block = await block_list(bob, mod.uri)
    # Bob no longer sees Carol, and Carol no longer sees Bob: everywhere.
    assert "carol trolls" not in await _latest(bob)
    assert "bob speaks" not in await _latest(carol)
    assert "carol trolls" not in texts((await bob.call("app.bsky.feed.getTimeline"))["feed"])
    likes = await bob.call("app.bsky.feed.getLikes", params={"uri": root.uri})
    assert likes["likes"] == []
    follows = await bob.call("app.bsky.graph.getFollowers", params={"actor": bob.did})
    assert follows["followers"] == []
    thread = await bob.call("app.bsky.feed.getPostThread", params={"uri": root.uri})
    assert [r["$type"] for r in thread["thread"]["replies"]] == ["app.bsky.feed.defs#blockedPost"]

    seen_by_bob = await bob.call("app.bsky.actor.getProfile", params={"actor": carol.did})
    by_list = seen_by_bob["viewer"]["blockingByList"]
    assert (by_list["uri"], by_list["$type"]) == (mod.uri, "app.bsky.graph.defs#listViewBasic")
    seen_by_carol = await carol.call("app.bsky.actor.getProfile", params={"actor": bob.did})
    assert seen_by_carol["viewer"]["blockedBy"] is True

    blocks = await bob.call("app.bsky.graph.getListBlocks")
    assert [x["uri"] for x in blocks["lists"]] == [mod.uri]
    assert blocks["lists"][0]["viewer"]["blocked"] == block.uri

    # Alice, who only wrote the list, is not blocked from anyone by it.
    assert {"bob speaks", "carol trolls"} <= set(await _latest(alice))

    await bob.delete(block.uri)
    assert "carol trolls" in await _latest(bob)
    assert "bob speaks" in await _latest(carol)


async def test_a_curate_list_blocks_no_one(people: list[Client]) -> None:
    alice, bob, carol, _ = people
    lst = await make_list(alice, "just friends", CURATELIST)
    await add_item(alice, lst.uri, carol.did)
    await carol.post("carol is fine")
    await block_list(bob, lst.uri)
    assert "carol is fine" in await _latest(bob)


async def test_mute_list_is_private_and_reversible(node: Node, people: list[Client]) -> None:
    alice, bob, carol, dave = people
    mod = await make_list(alice, "noisy", MODLIST)
    await add_item(alice, mod.uri, carol.did)
    await carol.post("carol is noisy")
    await bob.call("app.bsky.graph.muteActorList", data={"list": mod.uri})
    assert "carol is noisy" not in await _latest(bob)
    assert "carol is noisy" in await _latest(dave)  # only bob's setting
    prof = await bob.call("app.bsky.actor.getProfile", params={"actor": carol.did})
    assert prof["viewer"]["muted"] is True
    assert prof["viewer"]["mutedByList"]["uri"] == mod.uri
    mutes = await bob.call("app.bsky.graph.getListMutes")
    assert [x["uri"] for x in mutes["lists"]] == [mod.uri]
    assert mutes["lists"][0]["viewer"]["muted"] is True
    assert (await dave.call("app.bsky.graph.getListMutes"))["lists"] == []
    # The helper the notification and search rooms call agrees.
    hidden = await node.storage.read(lambda conn: graph.hidden_from(conn, bob.did))
    assert carol.did in hidden
    await bob.call("app.bsky.graph.unmuteActorList", data={"list": mod.uri})
    assert "carol is noisy" in await _latest(bob)

    curate = await make_list(alice, "not for muting", CURATELIST)
    with pytest.raises(XrpcError) as e:
        await bob.call("app.bsky.graph.muteActorList", data={"list": curate.uri})
    assert e.value.status == 400
    with pytest.raises(XrpcError):
        await bob.call(
            "app.bsky.graph.muteActorList",
            data={"list": f"at://{alice.did}/app.bsky.graph.list/3kzzzzzzzzzzz"},
        )
    assert (await bob.call("app.bsky.graph.getListMutes"))["lists"] == []


async def test_list_items_pointing_to_garbage_are_ignored(people: list[Client]) -> None:
    alice, bob, carol, dave = people
    lst = await make_list(alice, "mine", MODLIST)
    await add_item(alice, lst.uri, bob.did)
    # Dave adds Carol to *Alice's* list from his own repo: only a list's owner decides.
    await add_item(dave, lst.uri, carol.did)
    # Items naming nothing usable: stored in Alice's repo, never on the list.
    for subject, target in [
        ("not-a-did", lst.uri),
        ("did:plc:" + "z" * 24, lst.uri),  # a DID this node has never seen
        (carol.did, "at://did:plc:nobody/app.bsky.graph.list/3kzzzzzzzzzzz"),
        (carol.did, f"at://{alice.did}/app.bsky.feed.post/3kzzzzzzzzzzz"),
        (carol.did, "garbage"),
    ]:
        await add_item(alice, target, subject)
    await alice.create_record(
        "app.bsky.graph.listitem", {"$type": "app.bsky.graph.listitem", "createdAt": now()}
    )
    out = await bob.call("app.bsky.graph.getList", params={"list": lst.uri})
    assert [i["subject"]["did"] for i in out["items"]] == [bob.did]
    # A listblock of a list that does not exist blocks no one.
    await block_list(dave, f"at://{alice.did}/app.bsky.graph.list/3kzzzzzzzzzzz")
    await carol.post("carol still visible")
    assert "carol still visible" in await _latest(dave)
    # A list with a bad name or purpose is not a list.
    await alice.create_record(
        "app.bsky.graph.list",
        {"$type": "app.bsky.graph.list", "name": "", "purpose": MODLIST, "createdAt": now()},
    )
    await alice.create_record(
        "app.bsky.graph.list",
        {"$type": "app.bsky.graph.list", "name": "x", "purpose": "evil", "createdAt": now()},
    )
    lists = await bob.call("app.bsky.graph.getLists", params={"actor": alice.did})
    assert [x["uri"] for x in lists["lists"]] == [lst.uri]
    for bad in ("garbage", "at://", f"at://{alice.did}/app.bsky.graph.list/3kzzzzzzzzzzz"):
        with pytest.raises(XrpcError) as e:
            await bob.call("app.bsky.graph.getList", params={"list": bad})
        assert e.value.status == 400


async def test_get_blocks_pages_and_needs_a_session(node: Node, people: list[Client]) -> None:
    alice, bob, carol, dave = people
    for other in (bob, carol, dave):
        await alice.block(other.did)
    out = await alice.call("app.bsky.graph.getBlocks")
    assert {p["did"] for p in out["blocks"]} == {bob.did, carol.did, dave.did}
    assert all(p["viewer"].get("blocking") for p in out["blocks"])
    pages: list[str] = []
    cursor = None
    for _ in range(5):
        page = await alice.call("app.bsky.graph.getBlocks", params={"limit": 2, "cursor": cursor})
        pages += [p["did"] for p in page["blocks"]]
        cursor = page.get("cursor")
        if not cursor:
            break
    assert sorted(pages) == sorted([bob.did, carol.did, dave.did])
    assert (await bob.call("app.bsky.graph.getBlocks"))["blocks"] == []
    async with Client(node.url) as anyone:
        with pytest.raises(XrpcError) as e:
            await anyone.call("app.bsky.graph.getBlocks")
        assert e.value.status == 401


async def test_blocks_hide_in_every_view(people: list[Client]) -> None:
    alice, bob, carol, _ = people
    post = await alice.post("alice's post")
    await bob.like(post)
    await bob.repost(post)
    await bob.follow(alice.did)
    quote = await bob.post("bob quotes alice", quote=post)
    await carol.post("carol quotes bob", quote=quote)
    await alice.block(bob.did)

    for viewer in (alice, bob):
        other = bob if viewer is alice else alice
        # Either side: no likes, reposts, follows or posts of the other.
        likes = await viewer.call("app.bsky.feed.getLikes", params={"uri": post.uri})
        assert all(lk["actor"]["did"] != other.did for lk in likes["likes"])
        by = await viewer.call("app.bsky.feed.getRepostedBy", params={"uri": post.uri})
        assert all(p["did"] != other.did for p in by["repostedBy"])
        follows = await viewer.call("app.bsky.graph.getFollows", params={"actor": bob.did})
        assert all(p["did"] != other.did for p in follows["follows"])
    likes = await alice.call("app.bsky.feed.getLikes", params={"uri": post.uri})
    assert likes["likes"] == []
    # Carol quotes Bob: Alice sees the quoted post as blocked, per the embed union.
    views = await alice.call("app.bsky.feed.getPosts", params={"uris": [quote.uri]})
    assert views["posts"] == []
    carols = await alice.call("app.bsky.feed.getAuthorFeed", params={"actor": carol.did})
    embed = carols["feed"][0]["post"]["embed"]["record"]
    assert embed["$type"] == "app.bsky.embed.record#viewBlocked"
    assert (embed["uri"], embed["blocked"], embed["author"]["did"]) == (quote.uri, True, bob.did)
    prof = await bob.call("app.bsky.actor.getProfile", params={"actor": alice.did})
    assert prof["viewer"]["blockedBy"] is True


async def test_mute_thread_is_stored_flagged_and_private(node: Node, people: list[Client]) -> None:
    alice, bob, *_ = people
    root = await alice.post("a thread")
    reply = await bob.post("a reply", reply_to=root)
    await alice.call("app.bsky.graph.muteThread", data={"root": root.uri})
    muted = await node.storage.read(
        lambda conn: graph.muted_threads(conn, alice.did, [root.uri, reply.uri])
    )
    assert muted == {root.uri}
    thread = await alice.call("app.bsky.feed.getPostThread", params={"uri": root.uri})
    assert thread["thread"]["post"]["viewer"]["threadMuted"] is True
    assert thread["thread"]["replies"][0]["post"]["viewer"]["threadMuted"] is True
    theirs = await bob.call("app.bsky.feed.getPostThread", params={"uri": root.uri})
    assert "threadMuted" not in theirs["thread"]["post"]["viewer"]
    await alice.call("app.bsky.graph.unmuteThread", data={"root": root.uri})
    thread = await alice.call("app.bsky.feed.getPostThread", params={"uri": root.uri})
    assert "threadMuted" not in thread["thread"]["post"]["viewer"]
    for bad in ({"root": "nope"}, {}, {"root": 5}):
        with pytest.raises(XrpcError) as e:
            await alice.call("app.bsky.graph.muteThread", data=bad)
        assert e.value.status == 400


async def test_thread_mutes_are_bounded(
    node: Node, people: list[Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    from node.appview import graph_views

    alice = people[0]
    monkeypatch.setattr(graph_views, "MAX_THREAD_MUTES", 3)
    for i in range(3):
        uri = f"at://{alice.did}/app.bsky.feed.post/3kzzzzzzzzz{i}a"
        await alice.call("app.bsky.graph.muteThread", data={"root": uri})
    with pytest.raises(XrpcError) as e:
        await alice.call(
            "app.bsky.graph.muteThread",
            data={"root": f"at://{alice.did}/app.bsky.feed.post/3kzzzzzzzzz9a"},
        )
    assert "at most 3" in e.value.message


def _sdk_parses(out: dict[str, Any], model: Any) -> Any:
    return model.model_validate(out)


async def test_graph_answers_parse_as_the_atproto_sdk_models(people: list[Client]) -> None:
    from atproto_client import models

    alice, bob, *_ = people
    lst = await make_list(alice, "parse me", MODLIST)
    await add_item(alice, lst.uri, bob.did)
    await block_list(bob, lst.uri)
    await bob.call("app.bsky.graph.muteActorList", data={"list": lst.uri})
    await alice.block(bob.did)
    got = await bob.call("app.bsky.graph.getList", params={"list": lst.uri})
    parsed = _sdk_parses(got, models.AppBskyGraphGetList.Response)
    assert parsed.list.viewer.muted is True
    _sdk_parses(
        await bob.call("app.bsky.graph.getLists", params={"actor": alice.did}),
        models.AppBskyGraphGetLists.Response,
    )
    _sdk_parses(
        await bob.call("app.bsky.graph.getListBlocks"), models.AppBskyGraphGetListBlocks.Response
    )
    _sdk_parses(
        await bob.call("app.bsky.graph.getListMutes"), models.AppBskyGraphGetListMutes.Response
    )
    _sdk_parses(await alice.call("app.bsky.graph.getBlocks"), models.AppBskyGraphGetBlocks.Response)
    prof = _sdk_parses(
        await alice.call("app.bsky.actor.getProfile", params={"actor": bob.did}),
        models.AppBskyActorDefs.ProfileViewDetailed,
    )
    assert prof.viewer.blocking is not None
    _sdk_parses(
        await bob.call("app.bsky.graph.getListFeed", params={"list": lst.uri}),
        models.AppBskyFeedGetFeed.Response,
    )


async def test_an_older_database_indexes_the_graph_records_it_already_holds(tmp_path: Path) -> None:
    import sqlite3

    from node.appview.graph import GRAPH_SCHEMA
    from node.config import NodeConfig
    from node.store.sqlite import _GRAPH_SCHEMA, SCHEMA_VERSION

    config = NodeConfig(data_dir=tmp_path / "node", port=0)
    async with Node(config) as node, Client(node.url) as alice, Client(node.url) as bob:
        await alice.create_account("alice.skyfed.test", PASSWORD)
        await bob.create_account("bob.skyfed.test", PASSWORD)
        lst = await make_list(alice, "from before", MODLIST)
        await add_item(alice, lst.uri, bob.did)
        await block_list(alice, lst.uri)
        await bob.post("bob before the upgrade")

    # Back to the version before the graph tables (v8 when they came).
    conn = sqlite3.connect(config.db_path)
    for statement in GRAPH_SCHEMA.split(";"):
        words = statement.split()
        if words[:2] == ["CREATE", "TABLE"]:
            conn.execute(f"DROP TABLE {words[5]}")
    conn.execute(f"PRAGMA user_version = {_GRAPH_SCHEMA - 1}")
    conn.commit()
    conn.close()

    async with Node(config) as node, Client(node.url) as alice:
        await alice.login("alice.skyfed.test", PASSWORD)
        out = await alice.call("app.bsky.graph.getList", params={"list": lst.uri})
        assert [i["subject"]["did"] for i in out["items"]] == [bob.did]
        assert "bob before the upgrade" not in await _latest(alice)  # the listblock holds
    conn = sqlite3.connect(config.db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()
