"""The stock atproto Python SDK (PyPI ``atproto``, MarshalX/atproto) drives a node.

Nothing here is skyfed code on the client side: the SDK's own ``Client`` and
``AsyncClient`` talk to a real node on 127.0.0.1, and every answer is checked as the
SDK parsed it. The SDK quietly turns a union member it cannot type (a missing or
wrong ``$type``) into an untyped ``DotDict``; that counts as a failure here, so the
checks are ``isinstance`` on the SDK's model classes, not attribute reads that a
dict would also satisfy.

The sync ``Client`` blocks, so it runs in a worker thread (``asyncio.to_thread``)
while the node serves on the test's event loop.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from atproto import AsyncClient, Client, client_utils, models
from atproto_client.exceptions import BadRequestError
from atproto_client.models.dot_dict import DotDict
from atproto_client.models.utils import get_or_create
from atproto_server.auth.jwt import get_jwt_payload

from node.client import Client as SkyfedClient
from node.client import migrate_account
from node.config import NodeConfig
from node.wiring import Node

from .test_federation import link, start_nodes, until

PASSWORD = "correct horse battery staple"

Defs = models.AppBskyFeedDefs
ActorDefs = models.AppBskyActorDefs
Post = models.AppBskyFeedPost

T = TypeVar("T")


async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run one blocking SDK call off the event loop the node serves on."""
    return await asyncio.to_thread(functools.partial(fn, *args, **kwargs))


def typed(value: object, cls: type[T]) -> T:
    """``value`` is an instance of the SDK model ``cls`` (not a DotDict fallback)."""
    assert not isinstance(value, DotDict), f"SDK left an untyped dict: {value!r}"
    assert isinstance(value, cls), f"expected {cls.__qualname__}, got {type(value)!r}"
    return value


def check_post_view(view: object) -> Defs.PostView:
    post = typed(view, Defs.PostView)
    typed(post.author, ActorDefs.ProfileViewBasic)
    typed(post.record, Post.Record)
    if post.viewer is not None:
        typed(post.viewer, Defs.ViewerState)
    return post


def sign_up(url: str, handle: str) -> models.ComAtprotoServerCreateAccount.Response:
    sdk = Client(base_url=url)
    try:
        return sdk.com.atproto.server.create_account(
            models.ComAtprotoServerCreateAccount.Data(handle=handle, password=PASSWORD)
        )
    finally:
        sdk.request.close()


@pytest.fixture
def sdk_clients() -> Iterator[list[Client]]:
    """Logged-in sync clients, closed (with their connection pools) after the test."""
    opened: list[Client] = []
    yield opened
    for sdk in opened:
        sdk.request.close()


async def log_in(opened: list[Client], url: str, handle: str) -> Client:
    sdk = Client(base_url=url)
    opened.append(sdk)
    me = await call(sdk.login, handle, PASSWORD)
    typed(me, ActorDefs.ProfileViewDetailed)
    return sdk


async def test_the_sdk_drives_a_node_through_the_whole_story(
    node: Node, sdk_clients: list[Client]
) -> None:
    created = await call(sign_up, node.url, "alice.skyfed.test")
    typed(created, models.ComAtprotoServerCreateAccount.Response)
    assert created.did.startswith("did:skyfed:")
    await call(sign_up, node.url, "bob.skyfed.test")

    # login(): createSession, then app.bsky.actor.getProfile for `me`.
    alice = await log_in(sdk_clients, node.url, "alice.skyfed.test")
    bob = await log_in(sdk_clients, node.url, "bob.skyfed.test")
    assert alice.me is not None
    assert bob.me is not None
    assert alice.me.did == created.did
    assert alice.me.handle == "alice.skyfed.test"
    # The DID document's PDS endpoint is this node, so the SDK keeps talking to it.
    assert alice.export_session_string().endswith(node.url)
    payload = get_jwt_payload(alice.export_session_string().split(":::")[2])
    assert payload.sub == created.did
    assert isinstance(payload.exp, int)
    # A saved session resumes in a new client (getProfile with the saved token).
    resumed = Client(base_url=node.url)
    sdk_clients.append(resumed)
    me = await call(resumed.login, session_string=alice.export_session_string())
    assert typed(me, ActorDefs.ProfileViewDetailed).did == created.did

    # A profile record: the SDK's profile.create sends no rkey; the node keys it "self".
    about = models.AppBskyActorProfile.Record(display_name="Alice", description="on skyfed")
    made = await call(alice.app.bsky.actor.profile.create, alice.me.did, about)
    assert made.uri.endswith("/app.bsky.actor.profile/self")

    # Post, follow, reply, like.
    first = await call(alice.send_post, "hello from the atproto SDK")
    typed(first, Post.CreateRecordResponse)
    second = await call(alice.send_post, "a post that will not last")
    follow = await call(bob.follow, alice.me.did)
    typed(follow, models.AppBskyGraphFollow.CreateRecordResponse)
    ref = models.create_strong_ref(first)
    reply = await call(
        bob.send_post,
        "a reply, sent by the SDK",
        reply_to=Post.ReplyRef(root=ref, parent=ref),
    )
    like = await call(bob.like, first.uri, first.cid)
    typed(like, models.AppBskyFeedLike.CreateRecordResponse)
    text = client_utils.TextBuilder().text("quoting ").link("a link", "https://example.com")
    quote = await call(bob.send_post, text, embed=models.AppBskyEmbedRecord.Main(record=ref))

    # Bob's timeline: alice's posts and his own reply, with its parent resolved.
    timeline = await call(bob.get_timeline)
    typed(timeline, models.AppBskyFeedGetTimeline.Response)
    by_uri = {item.post.uri: item for item in timeline.feed}
    assert {first.uri, second.uri, reply.uri, quote.uri} <= set(by_uri)
    for item in timeline.feed:
        typed(item, Defs.FeedViewPost)
        check_post_view(item.post)
    liked = by_uri[first.uri].post
    assert liked.like_count == 1
    assert liked.reply_count == 1
    assert liked.viewer is not None
    assert liked.viewer.like == like.uri
    reply_item = by_uri[reply.uri]
    assert reply_item.reply is not None
    typed(reply_item.reply, Defs.ReplyRef)
    assert check_post_view(reply_item.reply.parent).uri == first.uri
    assert check_post_view(reply_item.reply.root).uri == first.uri
    reply_record = typed(reply_item.post.record, Post.Record)
    assert reply_record.reply is not None
    assert reply_record.reply.parent.uri == first.uri
    quoted = check_post_view(by_uri[quote.uri].post)
    embed = typed(quoted.embed, models.AppBskyEmbedRecord.View)
    inner = typed(embed.record, models.AppBskyEmbedRecord.ViewRecord)
    assert inner.uri == first.uri
    assert typed(inner.value, Post.Record).text == "hello from the atproto SDK"
    facets = typed(quoted.record, Post.Record).facets or []
    assert [typed(f.features[0], models.AppBskyRichtextFacet.Link).uri for f in facets] == [
        "https://example.com"
    ]
    assert typed(liked.author, ActorDefs.ProfileViewBasic).display_name == "Alice"

    # Alice's author feed, newest first.
    feed = await call(bob.get_author_feed, "alice.skyfed.test")
    typed(feed, models.AppBskyFeedGetAuthorFeed.Response)
    assert [check_post_view(i.post).uri for i in feed.feed] == [second.uri, first.uri]

    # The thread: the anchor with bob's reply under it; and from the reply, up.
    thread = await call(alice.get_post_thread, first.uri)
    root = typed(thread.thread, Defs.ThreadViewPost)
    assert check_post_view(root.post).like_count == 1
    assert root.replies is not None
    assert len(root.replies) == 1
    child = typed(root.replies[0], Defs.ThreadViewPost)
    assert check_post_view(child.post).uri == reply.uri
    assert typed(child.post.record, Post.Record).text == "a reply, sent by the SDK"
    up = await call(alice.get_post_thread, reply.uri)
    leaf = typed(up.thread, Defs.ThreadViewPost)
    parent = typed(leaf.parent, Defs.ThreadViewPost)
    assert check_post_view(parent.post).uri == first.uri

    # A link copied from an app names the handle; it finds the same thread and post.
    by_handle = first.uri.replace(alice.me.did, "alice.skyfed.test")
    thread = await call(bob.get_post_thread, by_handle)
    assert check_post_view(typed(thread.thread, Defs.ThreadViewPost).post).uri == first.uri
    posts = await call(bob.get_posts, [by_handle])
    assert [check_post_view(p).uri for p in posts.posts] == [first.uri]

    # Likes, profile, followers, follows.
    likes = await call(alice.get_likes, first.uri)
    assert len(likes.likes) == 1
    liker = typed(likes.likes[0], models.AppBskyFeedGetLikes.Like)
    assert typed(liker.actor, ActorDefs.ProfileView).did == bob.me.did
    profile = await call(bob.get_profile, "alice.skyfed.test")
    typed(profile, ActorDefs.ProfileViewDetailed)
    assert profile.display_name == "Alice"
    assert profile.description == "on skyfed"
    assert profile.followers_count == 1
    assert profile.follows_count == 0
    assert profile.posts_count == 2
    assert profile.viewer is not None
    assert profile.viewer.following == follow.uri
    followers = await call(alice.get_followers, "alice.skyfed.test")
    typed(followers.subject, ActorDefs.ProfileView)
    assert [typed(p, ActorDefs.ProfileView).did for p in followers.followers] == [bob.me.did]
    follows = await call(alice.get_follows, bob.me.did)
    assert [typed(p, ActorDefs.ProfileView).did for p in follows.follows] == [alice.me.did]

    # listRecords, then delete one post and see it gone everywhere.
    list_posts = models.ComAtprotoRepoListRecords.Params(
        repo=alice.me.did, collection="app.bsky.feed.post"
    )
    listed = await call(alice.com.atproto.repo.list_records, list_posts)
    records = [typed(r, models.ComAtprotoRepoListRecords.Record) for r in listed.records]
    assert {r.uri for r in records} == {first.uri, second.uri}
    texts = {typed(r.value, Post.Record).text for r in records}
    assert texts == {"hello from the atproto SDK", "a post that will not last"}

    assert await call(alice.delete_post, second.uri) is True
    listed = await call(alice.com.atproto.repo.list_records, list_posts)
    assert [r.uri for r in listed.records] == [first.uri]
    feed = await call(bob.get_author_feed, alice.me.did)
    assert [i.post.uri for i in feed.feed] == [first.uri]
    posts = await call(bob.get_posts, [first.uri, second.uri])
    assert [check_post_view(p).uri for p in posts.posts] == [first.uri]
    assert (await call(bob.get_profile, alice.me.did)).posts_count == 1
    with pytest.raises(BadRequestError):
        await call(alice.get_post_thread, second.uri)

    # Unliking and unfollowing delete the records; the counts follow.
    assert await call(bob.unlike, like.uri) is True
    posts = await call(bob.get_posts, [first.uri])
    assert check_post_view(posts.posts[0]).like_count == 0
    assert await call(bob.unfollow, follow.uri) is True
    profile = await call(bob.get_profile, alice.me.did)
    assert profile.followers_count == 0
    assert profile.viewer is not None
    assert profile.viewer.following is None

    # Every string in these answers passes the SDK's opt-in format checks too
    # (DIDs, handles, AT-URIs, CIDs, datetimes, record keys, language tags).
    for nsid, params, model in (
        ("app.bsky.feed.getTimeline", None, models.AppBskyFeedGetTimeline.Response),
        (
            "app.bsky.feed.getAuthorFeed",
            models.AppBskyFeedGetAuthorFeed.Params(actor=bob.me.did),
            models.AppBskyFeedGetAuthorFeed.Response,
        ),
        (
            "app.bsky.feed.getPostThread",
            models.AppBskyFeedGetPostThread.Params(uri=reply.uri),
            models.AppBskyFeedGetPostThread.Response,
        ),
        (
            "app.bsky.actor.getProfile",
            models.AppBskyActorGetProfile.Params(actor=alice.me.did),
            ActorDefs.ProfileViewDetailed,
        ),
        (
            "app.bsky.graph.getFollowers",
            models.AppBskyGraphGetFollowers.Params(actor=alice.me.did),
            models.AppBskyGraphGetFollowers.Response,
        ),
        ("com.atproto.repo.listRecords", list_posts, models.ComAtprotoRepoListRecords.Response),
        ("com.atproto.server.getSession", None, models.ComAtprotoServerGetSession.Response),
    ):
        response = await call(bob.invoke_query, nsid, params=params)
        typed(get_or_create(response.content, model, strict_string_format=True), model)


async def test_author_feed_pages_and_filters(node: Node, sdk_clients: list[Client]) -> None:
    await call(sign_up, node.url, "fay.skyfed.test")
    await call(sign_up, node.url, "gus.skyfed.test")
    fay = await log_in(sdk_clients, node.url, "fay.skyfed.test")
    gus = await log_in(sdk_clients, node.url, "gus.skyfed.test")
    top = await call(fay.send_post, "a thread of my own")
    top_ref = models.create_strong_ref(top)
    own = await call(
        fay.send_post, "continuing it", reply_to=Post.ReplyRef(root=top_ref, parent=top_ref)
    )
    theirs = await call(gus.send_post, "gus says something")
    gus_ref = models.create_strong_ref(theirs)
    answer = await call(
        fay.send_post, "answering gus", reply_to=Post.ReplyRef(root=gus_ref, parent=gus_ref)
    )

    # Pages of one, linked by the cursor the SDK hands back.
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(4):
        page = await call(fay.get_author_feed, "fay.skyfed.test", cursor=cursor, limit=1)
        seen += [check_post_view(i.post).uri for i in page.feed]
        cursor = page.cursor
        if cursor is None:
            break
    assert seen == [answer.uri, own.uri, top.uri]

    async def uris(filter_: str) -> list[str]:
        feed = await call(fay.get_author_feed, "fay.skyfed.test", filter=filter_)
        return [check_post_view(i.post).uri for i in feed.feed]

    assert await uris("posts_with_replies") == [answer.uri, own.uri, top.uri]
    assert await uris("posts_no_replies") == [top.uri]
    assert await uris("posts_and_author_threads") == [own.uri, top.uri]
    assert await uris("posts_with_media") == []  # none of fay's posts has a picture
    with pytest.raises(BadRequestError):
        await uris("posts_with_video")  # refused, not answered with the wrong posts

    # getRecord through the SDK's record namespace comes back typed.
    got = await call(fay.get_post, own.uri.rsplit("/", 1)[1], fay.me.did if fay.me else None)
    assert typed(got.value, Post.Record).text == "continuing it"


async def test_a_blocked_parent_is_a_blocked_post(node: Node, sdk_clients: list[Client]) -> None:
    for name in ("hal", "ivy", "jo"):
        await call(sign_up, node.url, f"{name}.skyfed.test")
    hal = await log_in(sdk_clients, node.url, "hal.skyfed.test")
    ivy = await log_in(sdk_clients, node.url, "ivy.skyfed.test")
    jo = await log_in(sdk_clients, node.url, "jo.skyfed.test")
    assert hal.me is not None
    assert jo.me is not None
    post = await call(hal.send_post, "hal posts")
    ref = models.create_strong_ref(post)
    reply = await call(ivy.send_post, "ivy answers", reply_to=Post.ReplyRef(root=ref, parent=ref))
    block = models.AppBskyGraphBlock.Record(
        subject=hal.me.did, created_at=jo.get_current_time_iso()
    )
    await call(jo.app.bsky.graph.block.create, jo.me.did, block)

    feed = await call(jo.get_author_feed, "ivy.skyfed.test")
    assert [i.post.uri for i in feed.feed] == [reply.uri]
    context = typed(feed.feed[0].reply, Defs.ReplyRef)
    parent = typed(context.parent, Defs.BlockedPost)
    assert parent.uri == post.uri
    assert typed(parent.author, Defs.BlockedAuthor).did == hal.me.did
    thread = await call(jo.get_post_thread, reply.uri)
    leaf = typed(thread.thread, Defs.ThreadViewPost)
    assert typed(leaf.parent, Defs.BlockedPost).uri == post.uri

    # Once hal deletes it, the parent is a notFoundPost for a reader who blocks no one.
    assert await call(hal.delete_post, post.uri) is True
    thread = await call(ivy.get_post_thread, reply.uri)
    leaf = typed(thread.thread, Defs.ThreadViewPost)
    assert typed(leaf.parent, Defs.NotFoundPost).uri == post.uri
    feed = await call(ivy.get_author_feed, "ivy.skyfed.test")
    assert typed(typed(feed.feed[0].reply, Defs.ReplyRef).root, Defs.NotFoundPost).not_found


async def test_the_sdk_refreshes_a_short_lived_session(
    tmp_path: Path, sdk_clients: list[Client]
) -> None:
    # Under 15 minutes left on the access token: the SDK refreshes before each call.
    config = NodeConfig(data_dir=tmp_path / "node", port=0, access_token_ttl=600)
    async with Node(config) as node:
        await call(sign_up, node.url, "carol.skyfed.test")
        carol = await log_in(sdk_clients, node.url, "carol.skyfed.test")
        before = carol.export_session_string().split(":::")
        post = await call(carol.send_post, "posted after a token refresh")
        after = carol.export_session_string().split(":::")
        assert after[2] != before[2]  # new access token
        assert after[3] != before[3]  # rotated refresh token
        assert get_jwt_payload(after[2]).exp > get_jwt_payload(before[2]).exp - 1
        got = await call(carol.get_posts, [post.uri])
        assert check_post_view(got.posts[0]).uri == post.uri


async def test_the_async_sdk_reads_federated_posts_on_a_node_hosting_no_author(
    tmp_path: Path,
) -> None:
    nodes = await start_nodes(tmp_path, 3)
    home_a, home_b, reader_node = nodes
    # Node C hosts neither author; a reader there needs no account at all.
    dave = AsyncClient(base_url=home_a.url)
    erin = AsyncClient(base_url=home_b.url)
    reader = AsyncClient(base_url=reader_node.url)
    try:
        await link(nodes, [(1, 0), (2, 1)])
        for sdk, handle in ((dave, "dave.skyfed.test"), (erin, "erin.skyfed.test")):
            await sdk.com.atproto.server.create_account(
                models.ComAtprotoServerCreateAccount.Data(handle=handle, password=PASSWORD)
            )
            typed(await sdk.login(handle, PASSWORD), ActorDefs.ProfileViewDetailed)
        assert dave.me is not None
        assert erin.me is not None
        # erin (node B) follows dave (node A): her timeline on B gets his posts.
        await erin.follow(dave.me.did)
        post = await dave.send_post("written on node A, read on node C")
        ref = models.create_strong_ref(post)
        answer = await erin.send_post(
            "answered from node B", reply_to=Post.ReplyRef(root=ref, parent=ref)
        )
        await erin.like(post.uri, post.cid)

        async def arrived() -> bool:
            got = await reader.get_posts([post.uri])
            if not got.posts:
                return False
            view = check_post_view(got.posts[0])
            return view.like_count == 1 and view.reply_count == 1

        await until(arrived)
        thread = await reader.get_post_thread(post.uri)
        root = typed(thread.thread, Defs.ThreadViewPost)
        assert check_post_view(root.post).author.handle == "dave.skyfed.test"
        assert root.replies is not None
        child = typed(root.replies[0], Defs.ThreadViewPost)
        assert check_post_view(child.post).uri == answer.uri
        assert child.post.author.did == erin.me.did
        feed = await reader.get_author_feed("erin.skyfed.test")
        assert [check_post_view(i.post).uri for i in feed.feed] == [answer.uri]
        reply_ref = typed(feed.feed[0].reply, Defs.ReplyRef)
        assert check_post_view(reply_ref.parent).uri == post.uri
        likes = await reader.get_likes(post.uri)
        assert [typed(like.actor, ActorDefs.ProfileView).did for like in likes.likes] == [
            erin.me.did
        ]
        profile = await reader.get_profile("dave.skyfed.test")
        assert typed(profile, ActorDefs.ProfileViewDetailed).posts_count == 1
        assert profile.followers_count == 1

        timeline = await erin.get_timeline()
        assert [check_post_view(i.post).uri for i in timeline.feed] == [answer.uri, post.uri]
        assert timeline.feed[0].post.author.did == erin.me.did
    finally:
        for sdk in (dave, erin, reader):
            await sdk.request.close()
        for n in nodes:
            await n.stop()


async def test_a_session_stays_on_the_node_after_its_url_changed(
    tmp_path: Path, sdk_clients: list[Client]
) -> None:
    # The account's DID document names the URL the node had when it was made. After the
    # node moved, that URL is dead; the session must not follow it there.
    data_dir = tmp_path / "node"
    old_url = "http://127.0.0.1:9"  # the discard port: nothing answers
    async with Node(NodeConfig(data_dir=data_dir, port=0, public_url=old_url)) as before:
        await call(sign_up, f"http://127.0.0.1:{before.port}", "kim.skyfed.test")
    async with Node(NodeConfig(data_dir=data_dir, port=0)) as moved:
        kim = await log_in(sdk_clients, moved.url, "kim.skyfed.test")
        assert old_url not in kim.export_session_string()
        post = await call(kim.send_post, "still here after a move")
        got = await call(kim.get_posts, [post.uri])
        assert check_post_view(got.posts[0]).uri == post.uri


async def test_labels_and_mutes_reach_the_sdk(node: Node, sdk_clients: list[Client]) -> None:
    for name in ("nia", "oli"):
        await call(sign_up, node.url, f"{name}.skyfed.test")
    nia = await log_in(sdk_clients, node.url, "nia.skyfed.test")
    oli = await log_in(sdk_clients, node.url, "oli.skyfed.test")
    assert nia.me is not None
    post = await call(nia.send_post, "a post someone will label")
    # Labelling is skyfed's own method (any account can label), so skyfed's client.
    async with SkyfedClient(node.url) as labeler:
        await labeler.create_account("lab.skyfed.test", PASSWORD)
        await labeler.label(post.uri, "!warn")
        labeler_did = labeler.did
    assert labeler_did is not None

    # A reader who names the labeler (atproto-accept-labelers) sees its label on the
    # post, typed as the SDK's Label.
    reader = oli.with_labelers([labeler_did])  # a clone, with its own connections
    sdk_clients.append(reader)
    got = await call(reader.get_posts, [post.uri])
    view = check_post_view(got.posts[0])
    assert view.labels is not None
    labels = [typed(label, models.ComAtprotoLabelDefs.Label) for label in view.labels]
    assert [(label.src, label.val) for label in labels] == [(labeler_did, "!warn")]
    feed = await call(reader.get_author_feed, nia.me.did)
    assert [lb.val for lb in check_post_view(feed.feed[0].post).labels or []] == ["!warn"]
    # One who names none sees none.
    plain = await call(oli.get_posts, [post.uri])
    assert check_post_view(plain.posts[0]).labels == []

    # muteActor is served: a muted author's posts leave the muter's views.
    assert await call(oli.mute, nia.me.did) is True
    profile = await call(oli.get_profile, nia.me.did)
    assert profile.viewer is not None
    assert profile.viewer.muted is True
    mutes = await call(oli.app.bsky.graph.get_mutes)
    assert [typed(p, ActorDefs.ProfileView).did for p in mutes.mutes] == [nia.me.did]
    assert (await call(oli.get_posts, [post.uri])).posts == []
    assert await call(oli.unmute, nia.me.did) is True
    assert len((await call(oli.get_posts, [post.uri])).posts) == 1


async def test_after_a_move_the_session_names_the_new_node(
    tmp_path: Path, sdk_clients: list[Client]
) -> None:
    nodes = await start_nodes(tmp_path, 2)
    home, new_home = nodes
    try:
        await link(nodes, [(1, 0)])
        created = await call(sign_up, home.url, "pat.skyfed.test")
        pat = await log_in(sdk_clients, home.url, "pat.skyfed.test")
        first = await call(pat.send_post, "posted at the first home")
        rkey = first.uri.rsplit("/", 1)[1]

        async def replicated() -> bool:
            row = await new_home.storage.get_record(created.did, "app.bsky.feed.post", rkey)
            return row is not None

        await until(replicated)
        async with SkyfedClient(home.url) as old, SkyfedClient(new_home.url) as new:
            await old.login("pat.skyfed.test", PASSWORD)
            await migrate_account(new, created.did, PASSWORD, old=old)

        # The DID document now names the new node, and the SDK follows it there.
        moved = await log_in(sdk_clients, new_home.url, "pat.skyfed.test")
        assert moved.export_session_string().endswith(new_home.url)
        second = await call(moved.send_post, "posted after the move")
        feed = await call(moved.get_author_feed, created.did)
        assert [check_post_view(i.post).uri for i in feed.feed] == [second.uri, first.uri]

        # Logging in at the old home still works, says the account is not active there,
        # and keeps the session there (its tokens mean nothing to the new home).
        stale = await log_in(sdk_clients, home.url, "pat.skyfed.test")
        assert stale.export_session_string().endswith(f"{home.url}/xrpc")
        session = await call(stale.com.atproto.server.get_session)
        assert (session.active, session.status) == (False, "deactivated")
        with pytest.raises(BadRequestError, match="AccountDeactivated"):
            await call(stale.send_post, "this home is not mine any more")
    finally:
        for n in nodes:
            await n.stop()
