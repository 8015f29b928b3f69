"""app.bsky.notification: what hosted accounts are told, from here and from peers."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from node.client import Client, XrpcError
from node.wiring import Node

from .conftest import TEST_STORAGE
from .test_federation import link, start_nodes, until

PASSWORD = "correct horse battery staple"
LIST = "app.bsky.notification.listNotifications"
UNREAD = "app.bsky.notification.getUnreadCount"
SEEN = "app.bsky.notification.updateSeen"


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


def by_reason(page: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for n in page["notifications"]:
        out.setdefault(n["reason"], []).append(n)
    return out


async def test_every_reason_with_its_subject_and_record(
    people: tuple[Client, Client, Client],
) -> None:
    alice, bob, carol = people
    first = await alice.post("hello from alice")
    like = await bob.like(first)
    await bob.repost(first)
    await carol.follow(alice.did)
    reply = await bob.post("bob replies", reply_to=first)
    await carol.post("carol replies to bob", reply_to=reply)  # alice is the root's author
    await carol.post("carol quotes", quote=first)
    await bob.post("hi @alice.skyfed.test")
    await alice.like(first)  # her own: no notification
    await alice.post("alice replies to herself", reply_to=first)
    page = await alice.call(LIST)
    reasons = by_reason(page)
    assert sorted(reasons) == ["follow", "like", "mention", "quote", "reply", "repost"]
    assert len(reasons["reply"]) == 2  # bob's reply to her post, carol's in her thread
    (liked,) = reasons["like"]
    assert (liked["uri"], liked["cid"]) == (like.uri, like.cid)
    assert liked["reasonSubject"] == first.uri
    assert liked["author"]["handle"] == "bob.skyfed.test"
    assert liked["record"]["$type"] == "app.bsky.feed.like"
    assert liked["isRead"] is False
    assert "reasonSubject" not in reasons["follow"][0]
    assert reasons["quote"][0]["reasonSubject"] == first.uri
    assert reasons["mention"][0]["record"]["text"] == "hi @alice.skyfed.test"
    times = [n["indexedAt"] for n in page["notifications"]]
    assert times == sorted(times, reverse=True)
    # carol's reply notifies bob (parent) and alice (root), not carol herself
    assert [n["reason"] for n in (await bob.call(LIST))["notifications"]] == ["reply"]
    assert (await carol.call(LIST))["notifications"] == []
    # reasons filter
    only = await alice.call(LIST, params={"reasons": ["like", "follow"]})
    assert sorted(n["reason"] for n in only["notifications"]) == ["follow", "like"]
    none = await alice.call(LIST, params={"reasons": ["verified"]})
    assert none["notifications"] == []


async def test_unread_count_and_update_seen(people: tuple[Client, Client, Client]) -> None:
    alice, bob, carol = people
    first = await alice.post("count me")
    await bob.like(first)
    await carol.like(first)
    assert (await alice.call(UNREAD))["count"] == 2
    page = await alice.call(LIST)
    assert "seenAt" not in page
    await alice.call(SEEN, data={"seenAt": page["notifications"][0]["indexedAt"]})
    assert (await alice.call(UNREAD))["count"] == 0
    page = await alice.call(LIST)
    assert all(n["isRead"] for n in page["notifications"])
    assert page["seenAt"] == page["notifications"][0]["indexedAt"]
    await bob.repost(first)
    assert (await alice.call(UNREAD))["count"] == 1
    assert [n["isRead"] for n in (await alice.call(LIST))["notifications"]] == [
        False,
        True,
        True,
    ]
    # a seenAt in the future is clamped to now: later notifications are still unread
    future = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=365)
    await alice.call(SEEN, data={"seenAt": future.isoformat()})
    assert (await alice.call(UNREAD))["count"] == 0
    await carol.repost(first)
    assert (await alice.call(UNREAD))["count"] == 1
    # getUnreadCount's own seenAt
    old = "2000-01-01T00:00:00Z"
    assert (await alice.call(UNREAD, params={"seenAt": old}))["count"] == 4


async def test_deleted_records_take_their_notifications(
    people: tuple[Client, Client, Client],
) -> None:
    alice, bob, _ = people
    first = await alice.post("short lived likes")
    like = await bob.like(first)
    follow = await bob.follow(alice.did)
    assert len((await alice.call(LIST))["notifications"]) == 2
    await bob.delete(like)
    await bob.delete(follow)
    assert (await alice.call(LIST))["notifications"] == []
    assert (await alice.call(UNREAD))["count"] == 0


async def test_mutes_and_blocks_hide_notifications(
    people: tuple[Client, Client, Client],
) -> None:
    alice, bob, carol = people
    first = await alice.post("who may tell me")
    await bob.like(first)
    await carol.like(first)
    await alice.mute(bob.did)
    await carol.block(alice.did)  # blocked by: hidden too
    page = await alice.call(LIST)
    assert page["notifications"] == []
    assert (await alice.call(UNREAD))["count"] == 0
    await alice.unmute(bob.did)
    assert [n["author"]["did"] for n in (await alice.call(LIST))["notifications"]] == [bob.did]


async def test_cursor_pages_through_everything(people: tuple[Client, Client, Client]) -> None:
    alice, bob, _ = people
    posts = [await alice.post(f"post {i}") for i in range(7)]
    for p in posts:
        await bob.like(p)
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        page = await alice.call(LIST, params={"limit": 3, "cursor": cursor})
        seen += [n["uri"] for n in page["notifications"]]
        cursor = page.get("cursor")
        if not cursor:
            break
    assert len(seen) == 7 == len(set(seen))


async def test_hostile_inputs(people: tuple[Client, Client, Client]) -> None:
    alice, _, _ = people
    for params in (
        {"limit": 0},
        {"limit": 101},
        {"limit": "x"},
        {"cursor": "no-separator"},
        {"cursor": "x" * 9000},
        {"seenAt": "2024-01-01T00:00:00Z"},
        {"reasons": ["like"] * 33},
    ):
        with pytest.raises(XrpcError) as e:
            await alice.call(LIST, params=params)
        assert e.value.status == 400, params
    # a cursor that parses but names nothing: an empty page, not an error
    page = await alice.call(LIST, params={"cursor": "\U0010ffff::x"})
    assert page["notifications"] == []
    for data in ({}, {"seenAt": 5}, {"seenAt": "yesterday"}, {"seenAt": "2024-01-01T00:00:00"}):
        with pytest.raises(XrpcError) as e:
            await alice.call(SEEN, data=data)
        assert e.value.status == 400, data
    with pytest.raises(XrpcError) as e:
        await alice.call(UNREAD, params={"seenAt": "garbage"})
    assert e.value.status == 400
    anon = Client(alice.base_url)
    try:
        for nsid in (LIST, UNREAD):
            with pytest.raises(XrpcError) as e:
                await anon.call(nsid)
            assert e.value.status == 401
    finally:
        await anon.close()


async def test_register_push_is_not_offered(people: tuple[Client, Client, Client]) -> None:
    alice, _, _ = people
    body = {"serviceDid": "did:web:push.example", "token": "t", "platform": "web", "appId": "x"}
    for nsid in ("app.bsky.notification.registerPush", "app.bsky.notification.unregisterPush"):
        with pytest.raises(XrpcError) as e:
            await alice.call(nsid, data=body)
        assert (e.value.status, e.value.error) == (501, "MethodNotImplemented")
        assert "push" in e.value.message


async def test_a_reply_and_like_on_another_node_notify_the_author_here(
    tmp_path: Path,
) -> None:
    here, there = await start_nodes(tmp_path, 2)
    try:
        await link([here, there], [(1, 0)])
        async with Client(here.url) as alice, Client(there.url) as bob:
            await alice.create_account("alice.skyfed.test", PASSWORD)
            await bob.create_account("bob.skyfed.test", PASSWORD)
            first = await alice.post("hosted here")

            async def arrived() -> bool:
                return bool(await there.storage.get_record(*first.uri[5:].split("/")))

            await until(arrived)
            await bob.like(first)
            await bob.post("a reply from afar", reply_to=first)

            async def notified() -> bool:
                page = await alice.call(LIST)
                return len(page["notifications"]) == 2

            await until(notified)
            reasons = by_reason(await alice.call(LIST))
            assert sorted(reasons) == ["like", "reply"]
            assert reasons["reply"][0]["author"]["did"] == bob.did
            assert reasons["reply"][0]["record"]["text"] == "a reply from afar"
            # bob is not hosted on alice's node: it keeps no notifications for him
            rows = await here.storage.read(
                lambda c: c.execute(
                    "SELECT count(*) FROM notifications WHERE recipient = ?", (bob.did,)
                ).fetchone()
            )
            assert rows[0] == 0
    finally:
        await here.stop()
        await there.stop()


async def test_the_command_line_shows_and_marks_notifications(node: Node, tmp_path: Path) -> None:
    from .test_cli import new_account, ok, skyfed

    alice = await new_account(tmp_path, node, "alice")
    bob = await new_account(tmp_path, node, "bob")
    hello = ok(await skyfed(alice, "post", "hello notifications", "--json")).json()
    ok(await skyfed(bob, "like", hello["uri"]))
    ok(await skyfed(bob, "follow", "alice.skyfed.test"))
    ok(await skyfed(bob, "post", "hi back", "--reply", hello["uri"]))
    assert ok(await skyfed(alice, "notifications", "--unread")).out == "3 unread\n"
    text = ok(await skyfed(alice, "notifications", "--mark-read")).out
    lines = [line.rsplit(" · ", 1)[0] for line in text.splitlines()]  # without the time
    assert lines.index("● @bob.skyfed.test replied to you") < lines.index("hi back")
    assert "● @bob.skyfed.test followed you" in lines
    liked = lines.index("● @bob.skyfed.test liked your post")
    assert lines[liked + 1] == hello["uri"]
    assert ok(await skyfed(alice, "notifications", "--unread", "--json")).json() == {"count": 0}
    data = ok(await skyfed(alice, "notifications", "--json", "--reason", "like")).json()
    assert [n["reason"] for n in data["notifications"]] == ["like"]
    assert data["notifications"][0]["isRead"] is True
    assert "(no notifications)" in ok(await skyfed(bob, "notifications")).out


async def test_unread_count_stops_at_its_cap(
    people: tuple[Client, Client, Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    import node.appview.notifications as notifications

    alice, bob, _ = people
    for i in range(3):
        await bob.like(await alice.post(f"post {i}"))
    assert (await alice.call(UNREAD))["count"] == 3
    monkeypatch.setattr(notifications, "MAX_UNREAD_COUNT", 2)
    assert (await alice.call(UNREAD))["count"] == 2


async def test_the_atproto_sdk_parses_notifications_and_search(node: Node) -> None:
    """The stock Python SDK's own models, not a dict fallback, for every answer."""
    from atproto import AsyncClient, models
    from atproto_client.exceptions import RequestErrorBase

    from .test_atproto_sdk import typed

    alice, bob = AsyncClient(base_url=node.url), AsyncClient(base_url=node.url)
    try:
        for sdk, handle in ((alice, "alice.skyfed.test"), (bob, "bob.skyfed.test")):
            await sdk.com.atproto.server.create_account(
                models.ComAtprotoServerCreateAccount.Data(handle=handle, password=PASSWORD)
            )
            await sdk.login(handle, PASSWORD)
        assert alice.me is not None
        post = await alice.send_post("sdk searchable words")
        await bob.like(post.uri, post.cid)
        await bob.follow(alice.me.did)
        ref = models.create_strong_ref(post)
        reply_ref = models.AppBskyFeedPost.ReplyRef(root=ref, parent=ref)
        await bob.send_post("sdk reply", reply_to=reply_ref)
        page = typed(
            await alice.app.bsky.notification.list_notifications(),
            models.AppBskyNotificationListNotifications.Response,
        )
        assert sorted(n.reason for n in page.notifications) == ["follow", "like", "reply"]
        for n in page.notifications:
            typed(n, models.AppBskyNotificationListNotifications.Notification)
            typed(n.author, models.AppBskyActorDefs.ProfileView)
            assert n.is_read is False
        liked = next(n for n in page.notifications if n.reason == "like")
        typed(liked.record, models.AppBskyFeedLike.Record)
        assert liked.reason_subject == post.uri
        unread = await alice.app.bsky.notification.get_unread_count()
        assert typed(unread, models.AppBskyNotificationGetUnreadCount.Response).count == 3
        await alice.app.bsky.notification.update_seen(
            models.AppBskyNotificationUpdateSeen.Data(seen_at=alice.get_current_time_iso())
        )
        assert (await alice.app.bsky.notification.get_unread_count()).count == 0
        filtered = await alice.app.bsky.notification.list_notifications(
            models.AppBskyNotificationListNotifications.Params(reasons=["like"])
        )
        assert [n.reason for n in filtered.notifications] == ["like"]
        if TEST_STORAGE == "postgresql":
            # No search on PostgreSQL (docs/postgresql.md): the SDK gets the 501.
            with pytest.raises(RequestErrorBase) as e:
                await bob.app.bsky.feed.search_posts(
                    models.AppBskyFeedSearchPosts.Params(q="searchable")
                )
            assert e.value.response is not None
            assert e.value.response.status_code == 501
        else:
            found = typed(
                await bob.app.bsky.feed.search_posts(
                    models.AppBskyFeedSearchPosts.Params(q="searchable", sort="top")
                ),
                models.AppBskyFeedSearchPosts.Response,
            )
            uris = [typed(p, models.AppBskyFeedDefs.PostView).uri for p in found.posts]
            assert uris == [post.uri]
            people = typed(
                await bob.app.bsky.actor.search_actors(
                    models.AppBskyActorSearchActors.Params(q="ali")
                ),
                models.AppBskyActorSearchActors.Response,
            )
            assert [typed(a, models.AppBskyActorDefs.ProfileView).did for a in people.actors] == [
                alice.me.did
            ]
            ahead = await bob.app.bsky.actor.search_actors_typeahead(
                models.AppBskyActorSearchActorsTypeahead.Params(q="ali")
            )
            basic = models.AppBskyActorDefs.ProfileViewBasic
            assert [typed(a, basic).did for a in ahead.actors] == [alice.me.did]
        with pytest.raises(RequestErrorBase) as e:
            await alice.app.bsky.notification.register_push(
                models.AppBskyNotificationRegisterPush.Data(
                    app_id="x", platform="web", service_did="did:web:push.example", token="t"
                )
            )
        assert e.value.response is not None
        assert e.value.response.status_code == 501
    finally:
        for sdk in (alice, bob):
            await sdk.request.close()


async def test_a_muted_thread_sends_no_notifications(
    people: tuple[Client, Client, Client],
) -> None:
    alice, bob, carol = people
    root = await alice.post("a thread I will mute")
    other = await alice.post("a thread I keep")
    reply = await bob.post("in the muted thread", reply_to=root)
    await carol.like(root)
    await carol.like(reply)  # not alice's post: no notification anyway
    await carol.post("deep in it @alice.skyfed.test", reply_to=reply)
    await bob.like(other)
    await alice.call("app.bsky.graph.muteThread", data={"root": root.uri})
    page = await alice.call(LIST)
    assert [(n["reason"], n.get("reasonSubject")) for n in page["notifications"]] == [
        ("like", other.uri)
    ]
    await alice.call("app.bsky.graph.unmuteThread", data={"root": root.uri})
    assert len((await alice.call(LIST))["notifications"]) == 4
