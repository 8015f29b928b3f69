"""Feed generators: hosted on a node (built in and plugins), read through getFeed on
the same node or another one (service auth), and what a hostile generator can do."""

from __future__ import annotations

import asyncio
import datetime
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import jwt
import orjson
import pytest
from aiohttp import web

from node.appview.feedgens import FeedHost, PluginError
from node.client import Client, XrpcError
from node.config import NodeConfig
from node.wiring import Node
from protocol.errors import RemoteProtocolError
from protocol.feedgen import Skeleton

from . import feedplugins
from .seeds import seeded_key
from .test_federation import link, start_nodes, until

PASSWORD = "correct horse battery staple"
ROOT = Path(__file__).resolve().parent.parent
GENERATOR = "app.bsky.feed.generator"


T = TypeVar("T")


async def call(fn: Callable[..., T], *args: Any) -> T:
    """Run one blocking SDK call off the event loop the node serves on."""
    return await asyncio.to_thread(fn, *args)


def typed(value: object, cls: type[T]) -> T:
    """``value`` is an instance of the SDK model ``cls`` (not an untyped fallback)."""
    assert isinstance(value, cls), f"expected {cls.__qualname__}, got {type(value)!r}"
    return value


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")


async def declare(c: Client, service: str, rkey: str, name: str = "A feed") -> str:
    """Publish an app.bsky.feed.generator record; returns the feed's AT-URI."""
    ref = await c.create_record(
        GENERATOR,
        {
            "$type": GENERATOR,
            "did": service,
            "displayName": name,
            "description": f"the {rkey} feed",
            "createdAt": _now(),
        },
        rkey=rkey,
    )
    return ref.uri


def texts(out: dict[str, Any]) -> list[str]:
    return [item["post"]["record"]["text"] for item in out["feed"]]


async def feed(c: Client, uri: str, **params: Any) -> dict[str, Any]:
    out: dict[str, Any] = await c.call("app.bsky.feed.getFeed", params={"feed": uri, **params})
    return out


@pytest.fixture
async def plugged(tmp_path: Path) -> AsyncIterator[Node]:
    config = NodeConfig(
        data_dir=tmp_path / "node",
        port=0,
        feed_plugins=feedplugins.ALL,
        feed_timeout=0.5,
        feed_plugin_slots=1,
    )
    feedplugins.RELEASE.clear()
    async with Node(config) as n:
        yield n
    feedplugins.RELEASE.set()


@pytest.fixture
async def accounts(node: Node) -> AsyncIterator[list[Client]]:
    clients = [Client(node.url) for _ in range(4)]
    for c, name in zip(clients, ("alice", "bob", "carol", "dave"), strict=True):
        await c.create_account(f"{name}.skyfed.test", PASSWORD)
    try:
        yield clients
    finally:
        for c in clients:
            await c.close()


async def test_quiet_posters_shows_the_quiet_ones_you_follow(
    node: Node, accounts: list[Client]
) -> None:
    alice, bob, carol, dave = accounts
    await alice.follow(bob.did)
    await alice.follow(carol.did)
    first = await bob.post("bob, rarely")
    await bob.post("a reply is not news", reply_to=first)
    for i in range(11):
        await carol.post(f"carol again {i}")
    await dave.post("dave is not followed")
    await bob.post("bob, once more")
    uri = await declare(alice, node.node_did, "quiet-posters", "Quiet posters")
    out = await feed(alice, uri)
    assert texts(out) == ["bob, once more", "bob, rarely"]
    page = await feed(alice, uri, limit=1)
    assert texts(page) == ["bob, once more"]
    rest = await feed(alice, uri, limit=1, cursor=page["cursor"])
    assert texts(rest) == ["bob, rarely"]
    # Views hide as everywhere else: a mute takes bob out of alice's feed.
    await alice.mute(bob.did)
    assert texts(await feed(alice, uri)) == []
    # Nobody in particular gets an empty feed, not an error.
    anon = await alice.call("app.bsky.feed.getFeed", params={"feed": uri}, auth=None)
    assert anon == {"feed": []}


async def test_mutuals_and_popular_with_follows(node: Node, accounts: list[Client]) -> None:
    alice, bob, carol, dave = accounts
    await alice.follow(bob.did)
    await bob.follow(alice.did)
    await alice.follow(carol.did)  # carol does not follow back
    await bob.post("from a mutual")
    await carol.post("from a one-way follow")
    mutuals = await declare(alice, node.node_did, "mutuals")
    assert texts(await feed(alice, mutuals)) == ["from a mutual"]
    liked_twice = await dave.post("liked by two of alice's follows")
    liked_once = await dave.post("liked by one")
    await bob.like(liked_twice)
    await carol.like(liked_twice)
    await carol.like(liked_once)
    await dave.like(await dave.post("liked by a stranger only"))
    popular = await declare(alice, node.node_did, "follows-popular")
    assert texts(await feed(alice, popular)) == [
        "liked by two of alice's follows",
        "liked by one",
    ]
    page = await feed(alice, popular, limit=1)
    assert page["cursor"] == "1"
    assert texts(await feed(alice, popular, limit=1, cursor="1")) == ["liked by one"]
    with pytest.raises(XrpcError) as e:
        await feed(alice, popular, cursor="not-a-number")
    assert e.value.status == 400


async def test_generator_views_describe_and_unknown_feeds(
    node: Node, accounts: list[Client]
) -> None:
    alice, bob, *_ = accounts
    uri = await declare(alice, node.node_did, "mutuals", "My mutuals")
    # A declaration for a feed this node does not host is held, but not valid.
    stray = await declare(alice, node.node_did, "nothing-here")
    like = await bob.like(uri)
    out = await bob.call("app.bsky.feed.getFeedGenerator", params={"feed": uri})
    view = out["view"]
    assert out["isOnline"] is True
    assert out["isValid"] is True
    assert view["$type"] == "app.bsky.feed.defs#generatorView"
    assert view["uri"] == uri
    assert view["did"] == node.node_did
    assert view["displayName"] == "My mutuals"
    assert view["description"] == "the mutuals feed"
    assert view["creator"]["handle"] == "alice.skyfed.test"
    assert view["likeCount"] == 1
    assert view["viewer"] == {"like": like.uri}
    stray_out = await bob.call("app.bsky.feed.getFeedGenerator", params={"feed": stray})
    assert stray_out["isValid"] is False
    many = await bob.call("app.bsky.feed.getFeedGenerators", params={"feeds": [stray, uri]})
    assert [v["uri"] for v in many["feeds"]] == [stray, uri]
    described = await bob.call("app.bsky.feed.describeFeedGenerator", auth=None)
    assert described == {"did": node.node_did, "feeds": [{"uri": uri}]}
    with pytest.raises(XrpcError) as e:
        await feed(bob, stray)
    assert e.value.error == "UnknownFeed"
    missing = uri.rsplit("/", 1)[0] + "/gone"
    with pytest.raises(XrpcError) as e:
        await feed(bob, missing)
    assert e.value.error == "UnknownFeed"
    with pytest.raises(XrpcError) as e:
        await feed(bob, "at://did:plc:abc/app.bsky.feed.post/xyz")  # not a generator
    assert e.value.error == "UnknownFeed"
    # A deleted declaration is gone.
    await alice.delete(uri)
    gone = await bob.call("app.bsky.feed.getFeedGenerators", params={"feeds": [uri]})
    assert gone["feeds"] == []
    # A creator who blocks the reader is hidden from it.
    await alice.block(bob.did)
    hidden = await bob.call("app.bsky.feed.getFeedGenerators", params={"feeds": [stray]})
    assert hidden["feeds"] == []


async def test_a_plugin_feed_and_every_way_a_plugin_misbehaves(plugged: Node) -> None:
    async with Client(plugged.url) as alice:
        await alice.create_account("alice.skyfed.test", PASSWORD)
        await alice.post("one")
        await alice.post("two")
        feeds = {
            name: await declare(alice, plugged.node_did, name)
            for name in (
                "everything",
                "raises",
                "blocks",
                "sleeps",
                "garbage",
                "not-a-skeleton",
                "too-many",
                "greedy",
            )
        }
        feedplugins.SEEN.clear()
        assert texts(await feed(alice, feeds["everything"])) == ["two", "one"]
        assert [alice.did] == feedplugins.SEEN
        for name in ("raises", "garbage", "not-a-skeleton", "too-many", "greedy"):
            with pytest.raises(XrpcError) as e:
                await feed(alice, feeds[name])
            assert (e.value.status, e.value.error) == (502, "UpstreamFailure"), name
            assert "secret" not in e.value.message
        started = time.monotonic()
        with pytest.raises(XrpcError) as e:
            await feed(alice, feeds["sleeps"])
        assert (e.value.status, e.value.error) == (504, "UpstreamTimeout")
        assert time.monotonic() - started < 3
        # A plugin that blocks its thread: the reader gets a timeout, the node keeps
        # serving, and the stuck thread holds the only plugin slot until it returns.
        with pytest.raises(XrpcError) as e:
            await feed(alice, feeds["blocks"])
        assert e.value.error == "UpstreamTimeout"
        with pytest.raises(XrpcError) as e:
            await feed(alice, feeds["everything"])
        assert e.value.error == "UpstreamFailure"
        assert "busy" in e.value.message
        assert (await alice.profile(alice.did))["handle"] == "alice.skyfed.test"
        feedplugins.RELEASE.set()

        async def served() -> bool:
            try:
                return texts(await feed(alice, feeds["everything"])) == ["two", "one"]
            except XrpcError:
                return False

        await until(served, 10)
        assert plugged.feeds.host.timeouts == 2
        # The plugin's feeds are described like the built-in ones.
        described = await alice.call("app.bsky.feed.describeFeedGenerator")
        assert {f["uri"] for f in described["feeds"]} == set(feeds.values())


def test_bad_plugins_stop_the_node_at_start(tmp_path: Path) -> None:
    for path, why in (
        ("feedplugins", "dotted path"),
        ("tests.feedplugins", "name must be"),
        ("tests.no_such_module:Feed", "cannot import"),
        ("tests.feedplugins:Nope", "has no"),
        ("tests.feedplugins:SEEN", "name must be"),
    ):
        with pytest.raises(PluginError, match=why):
            Node(NodeConfig(data_dir=tmp_path / "n", port=0, feed_plugins=(path,)))
    with pytest.raises(PluginError, match="already hosted"):
        Node(
            NodeConfig(
                data_dir=tmp_path / "n",
                port=0,
                feed_plugins=("tests.feedplugins:Everything", "tests.feedplugins:Everything"),
            )
        )


async def test_host_checks_a_skeleton_as_it_would_a_remote_one(node: Node) -> None:
    host: FeedHost = node.feeds.host
    with pytest.raises(RemoteProtocolError) as e:
        await host.skeleton("no-such-feed", None, 10, None)
    assert e.value.error == "UnknownFeed"
    out = await host.skeleton("mutuals", None, 10, None)
    assert out == Skeleton(())


# -- federation ----------------------------------------------------------------------


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[list[Node]]:
    nodes = await start_nodes(tmp_path, 2, dial_policy="loopback", feed_timeout=2.0)
    try:
        await link(nodes, [(0, 1)])
        yield nodes
    finally:
        for n in nodes:
            await n.stop()


async def test_a_feed_hosted_on_another_node_is_read_through_service_auth(
    pair: list[Node],
) -> None:
    a, b = pair
    async with Client(a.url) as alice, Client(b.url) as bob, Client(b.url) as carol:
        await alice.create_account("alice.skyfed.test", PASSWORD)
        await bob.create_account("bob.skyfed.test", PASSWORD)
        await carol.create_account("carol.skyfed.test", PASSWORD)
        await alice.follow(carol.did)
        await carol.follow(alice.did)
        await alice.follow(bob.did)  # bob does not follow back
        await carol.post("carol on node b")
        await bob.post("bob on node b")
        # bob publishes a feed that node b answers for.
        uri = await declare(bob, b.node_did, "mutuals", "Mutuals on b")

        async def spread() -> bool:
            return (
                await a.feeds.views.generator_service(uri) is not None
                and len((await a.views.latest(None, 10, None))["feed"]) == 2
                and len(await b.storage.identity_ops(alice.did)) > 0
                and len(
                    (await b.views.follows(alice.did, None, 10, None, followers=True))["followers"]
                )
                == 1
            )

        await until(spread)
        # alice reads it on node a: node a asks node b, vouching for alice.
        out = await feed(alice, uri)
        assert texts(out) == ["carol on node b"]
        assert out["feed"][0]["post"]["author"]["handle"] == "carol.skyfed.test"
        info = await alice.call("app.bsky.feed.getFeedGenerator", params={"feed": uri})
        assert (info["isOnline"], info["isValid"]) == (True, True)
        assert info["view"]["did"] == b.node_did
        # Read anonymously, the feed is built for nobody.
        anon = await alice.call("app.bsky.feed.getFeed", params={"feed": uri}, auth=None)
        assert anon == {"feed": []}

        # Node b's side of the service auth: one use, for this method, to this node.
        lxm = "app.bsky.feed.getFeedSkeleton"
        token = await alice.service_auth(b.node_did, lxm, lifetime=60)
        skeleton = await _skeleton(b, uri, token)
        assert skeleton == (200, {"feed": [{"post": out["feed"][0]["post"]["uri"]}]})
        replay = await _skeleton(b, uri, token)
        assert replay[0] == 401
        wrong_method = await alice.service_auth(b.node_did, "app.bsky.feed.getTimeline")
        assert (await _skeleton(b, uri, wrong_method))[0] == 401
        wrong_node = await alice.service_auth(a.node_did, lxm)
        assert (await _skeleton(b, uri, wrong_node))[0] == 401
        # Node a does not answer for b's feed.
        status, body = await _skeleton(a, uri, None)
        assert (status, body["error"]) == (400, "UnknownFeed")


async def _skeleton(n: Node, feed_uri: str, token: str | None) -> tuple[int, Any]:
    async with Client(n.url) as c:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        url = f"{n.url}/xrpc/app.bsky.feed.getFeedSkeleton"
        async with c.http.get(url, params={"feed": feed_uri}, headers=headers) as resp:
            return resp.status, await resp.json()


# -- hostile generators on the network -------------------------------------------------

Answer = Callable[[web.Request], Awaitable[web.StreamResponse]]
DESCRIBED: web.AppKey[list[str]] = web.AppKey("described")
#: The feeds the hostile server's describeFeedGenerator lists.
DESCRIBED_FEEDS: list[str] = []


@pytest.fixture
async def hostile(tmp_path: Path) -> AsyncIterator[tuple[Node, Client, list[Answer], list[Any]]]:
    """``seen`` gets the Authorization header of each skeleton request, and
    ``"describe"`` for each describeFeedGenerator request."""
    """A node whose feed's service is a server under the test's control."""
    n = Node(
        NodeConfig(
            data_dir=tmp_path / "node",
            port=0,
            dial_policy="loopback",
            feed_timeout=0.5,
            feed_remote_bytes=64 * 1024,
        )
    )
    answers: list[Answer] = []
    seen: list[Any] = []
    described = DESCRIBED_FEEDS
    described.clear()

    async def skeleton(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.get("Authorization"))
        return await answers[0](request)

    async def describe(request: web.Request) -> web.StreamResponse:
        seen.append("describe")
        feeds = [{"uri": u} for u in request.app[DESCRIBED]]
        return web.json_response({"did": "did:key:z", "feeds": feeds})

    app = web.Application()
    app[DESCRIBED] = described
    app.router.add_get("/xrpc/app.bsky.feed.getFeedSkeleton", skeleton)
    app.router.add_get("/xrpc/app.bsky.feed.describeFeedGenerator", describe)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    await n.start()
    n.remote_feeds.address_of = lambda did: f"http://127.0.0.1:{port}"
    client = Client(n.url)
    try:
        await client.create_account("alice.skyfed.test", PASSWORD)
        yield n, client, answers, seen
    finally:
        await client.close()
        await n.stop()
        await runner.cleanup()


def _json(value: Any) -> Answer:
    async def answer(request: web.Request) -> web.StreamResponse:
        return web.Response(body=orjson.dumps(value), content_type="application/json")

    return answer


async def test_hostile_skeletons_are_refused(
    hostile: tuple[Node, Client, list[Answer], list[Any]],
) -> None:
    n, alice, answers, seen = hostile
    service = seeded_key(7).did_key()
    uri = await declare(alice, service, "remote")
    post = await alice.post("held here")

    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(2)  # poll: a slow generator, past the 0.5 s bound
        return web.Response()

    async def huge_declared(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"{" + b" " * (1024 * 1024) + b"}")

    async def huge_streamed(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for _ in range(200):
            await resp.write(b" " * 8192)
        return resp

    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("http://127.0.0.1:1/xrpc/app.bsky.feed.getFeedSkeleton")

    async def not_json(request: web.Request) -> web.StreamResponse:
        return web.Response(text="<html>hello</html>")

    hostile_answers: dict[str, Answer] = {
        "garbage uri": _json({"feed": [{"post": "javascript:alert(1)"}]}),
        "not a post": _json({"feed": [{"post": f"at://{service}/app.bsky.feed.like/x"}]}),
        "not an object": _json([1, 2, 3]),
        "no feed": _json({"cursor": "x"}),
        "too many": _json({"feed": [{"post": post.uri}] * 51}),
        "long cursor": _json({"feed": [], "cursor": "c" * 5000}),
        "bad repost": _json(
            {
                "feed": [
                    {
                        "post": post.uri,
                        "reason": {
                            "$type": "app.bsky.feed.defs#skeletonReasonRepost",
                            "repost": "nope",
                        },
                    }
                ]
            }
        ),
        "deep": _json(None),
        "slow": slow,
        "huge declared": huge_declared,
        "huge streamed": huge_streamed,
        "redirect": redirect,
        "not json": not_json,
        "error status": _json({"error": "InternalServerError"}),
    }

    async def deep(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b'{"feed":' + b"[" * 5000 + b"]" * 5000 + b"}")

    hostile_answers["deep"] = deep
    for name, answer in hostile_answers.items():
        answers[:] = [answer]
        started = time.monotonic()
        with pytest.raises(XrpcError) as e:
            await feed(alice, uri)
        assert e.value.error in ("UpstreamFailure", "UpstreamTimeout"), name
        assert time.monotonic() - started < 3, name
    # What the generator names but this node does not hold is left out; what it
    # holds is hydrated, with the generator's context passed through.
    answers[:] = [
        _json(
            {
                "feed": [
                    {"post": "at://did:plc:unknown/app.bsky.feed.post/abc"},
                    {
                        "post": post.uri,
                        "feedContext": "ctx-1",
                        "reason": {"$type": "app.bsky.feed.defs#skeletonReasonPin"},
                    },
                    {"post": post.uri},  # a duplicate
                ],
                "cursor": "next",
            }
        )
    ]
    out = await feed(alice, uri)
    assert out["cursor"] == "next"
    assert len(out["feed"]) == 1
    assert out["feed"][0]["post"]["uri"] == post.uri
    assert out["feed"][0]["feedContext"] == "ctx-1"
    assert out["feed"][0]["reason"] == {"$type": "app.bsky.feed.defs#reasonPin"}
    # The call vouched for alice with a token for that service and method alone.
    token = seen[-1].removeprefix("Bearer ")
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == alice.did
    assert claims["aud"] == service
    assert claims["lxm"] == "app.bsky.feed.getFeedSkeleton"
    assert claims["exp"] - claims["iat"] <= 60
    # A client's own cursor is bounded before it is passed on.
    with pytest.raises(XrpcError) as e:
        await feed(alice, uri, cursor="c" * 2000)
    assert e.value.status == 400
    assert n.remote_feeds.failures >= len(hostile_answers)


async def test_the_dial_policy_applies_to_feed_services(tmp_path: Path) -> None:
    async with Node(NodeConfig(data_dir=tmp_path / "node", port=0)) as n:  # "public"
        n.remote_feeds.address_of = lambda did: "http://127.0.0.1:9"
        async with Client(n.url) as alice:
            await alice.create_account("alice.skyfed.test", PASSWORD)
            uri = await declare(alice, seeded_key(7).did_key(), "remote")
            with pytest.raises(XrpcError) as e:
                await feed(alice, uri)
            assert e.value.error == "UpstreamFailure"
            # A service no link vouches for is never dialled.
            n.remote_feeds.address_of = lambda did: None
            info = await alice.call("app.bsky.feed.getFeedGenerator", params={"feed": uri})
            assert (info["isOnline"], info["isValid"]) == (False, False)
            with pytest.raises(XrpcError) as e:
                await feed(alice, uri)
            assert e.value.error == "UpstreamFailure"


# -- the Python atproto SDK parses every answer ----------------------------------------


async def test_the_atproto_sdk_parses_feeds_and_the_new_views(node: Node) -> None:
    from atproto import Client as SdkClient
    from atproto import models

    async with Client(node.url) as alice, Client(node.url) as bob:
        await alice.create_account("alice.skyfed.test", PASSWORD)
        await bob.create_account("bob.skyfed.test", PASSWORD)
        await alice.follow(bob.did)
        await bob.follow(alice.did)
        original = await bob.post("hello from bob")
        await alice.post("quoting bob", quote=original)
        await alice.like(original)
        uri = await declare(alice, node.node_did, "mutuals", "Mutuals")
        await bob.like(uri)

    def session() -> tuple[Any, ...]:
        sdk = SdkClient(base_url=node.url)
        try:
            sdk.login("alice.skyfed.test", PASSWORD)
            f = sdk.app.bsky.feed
            return (
                f.get_feed({"feed": uri}),
                f.get_feed_generator({"feed": uri}),
                f.get_feed_generators({"feeds": [uri]}),
                f.describe_feed_generator(),
                f.get_feed_skeleton({"feed": uri}),
                f.get_actor_likes({"actor": "alice.skyfed.test"}),
                f.get_quotes({"uri": original.uri}),
                sdk.app.bsky.actor.get_suggestions(),
                sdk.app.bsky.graph.get_suggested_follows_by_actor({"actor": "bob.skyfed.test"}),
                f.get_actor_feeds({"actor": "alice.skyfed.test"}),
                f.get_suggested_feeds(),
                sdk.app.bsky.actor.get_profile({"actor": "alice.skyfed.test"}),
            )
        finally:
            sdk.request.close()

    answers = await call(session)
    got, gen, gens, described, skel, likes, quotes, sugg, similar, mine, liked, me = answers
    Defs = models.AppBskyFeedDefs
    typed(got, models.AppBskyFeedGetFeed.Response)
    assert [typed(i, Defs.FeedViewPost).post.record.text for i in got.feed] == ["hello from bob"]
    typed(gen, models.AppBskyFeedGetFeedGenerator.Response)
    view = typed(gen.view, Defs.GeneratorView)
    assert (gen.is_online, gen.is_valid, view.like_count) == (True, True, 1)
    typed(view.creator, models.AppBskyActorDefs.ProfileView)
    assert [typed(v, Defs.GeneratorView).uri for v in gens.feeds] == [uri]
    typed(described, models.AppBskyFeedDescribeFeedGenerator.Response)
    assert [
        typed(f, models.AppBskyFeedDescribeFeedGenerator.Feed).uri for f in described.feeds
    ] == [uri]
    assert [typed(i, Defs.SkeletonFeedPost).post for i in skel.feed] == [got.feed[0].post.uri]
    assert [typed(i, Defs.FeedViewPost).post.uri for i in likes.feed] == [original.uri]
    assert [typed(p, Defs.PostView).record.text for p in quotes.posts] == ["quoting bob"]
    typed(sugg, models.AppBskyActorGetSuggestions.Response)
    typed(similar, models.AppBskyGraphGetSuggestedFollowsByActor.Response)
    assert [typed(v, Defs.GeneratorView).uri for v in mine.feeds] == [uri]
    assert [typed(v, Defs.GeneratorView).like_count for v in liked.feeds] == [1]
    profile = typed(me, models.AppBskyActorDefs.ProfileViewDetailed)
    assert typed(profile.associated, models.AppBskyActorDefs.ProfileAssociated).feedgens == 1


async def test_an_older_database_indexes_its_generator_records_on_upgrade(
    tmp_path: Path,
) -> None:
    import sqlite3

    from node.store.sqlite import _FEEDGEN_SCHEMA

    config = NodeConfig(data_dir=tmp_path / "node", port=0)
    async with Node(config) as n, Client(n.url) as alice:
        await alice.create_account("alice.skyfed.test", PASSWORD)
        uri = await declare(alice, n.node_did, "mutuals", "From before")
    # Back to the schema before feed generators were indexed.
    conn = sqlite3.connect(config.db_path)
    conn.execute("DROP TABLE feed_generators")
    conn.execute("DROP INDEX likes_actor_time")
    conn.execute(f"PRAGMA user_version = {_FEEDGEN_SCHEMA}")
    conn.commit()
    conn.close()
    async with Node(config) as n, Client(n.url) as reader:
        out = await reader.call("app.bsky.feed.getFeedGenerator", params={"feed": uri}, auth=None)
        assert out["view"]["displayName"] == "From before"
        assert out["isValid"] is True


async def test_the_example_plugin_runs_as_a_user_would_run_it() -> None:
    root = ROOT
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "examples/feed_plugin.py",
        cwd=root,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 50)
    text = out.decode()
    assert proc.returncode == 0, text
    assert "online=True, valid=True" in text
    assert text.endswith(
        "bob reads the Cats feed:\n"
        "  @bob.skyfed.test: Two kittens on the balcony!\n"
        "  @alice.skyfed.test: My cat knocked a glass off the table.\n"
    )


async def test_a_remote_feeds_status_is_asked_once_a_minute(
    hostile: tuple[Node, Client, list[Answer], list[Any]],
) -> None:
    _, alice, _, seen = hostile
    uri = await declare(alice, seeded_key(7).did_key(), "remote")
    DESCRIBED_FEEDS.append(uri)
    for _ in range(3):
        out = await alice.call("app.bsky.feed.getFeedGenerator", params={"feed": uri})
        assert (out["isOnline"], out["isValid"]) == (True, True)
    assert seen.count("describe") == 1


async def test_labels_and_redaction_apply_to_feeds_and_the_new_views(
    node: Node, accounts: list[Client]
) -> None:
    alice, bob, carol, mod = accounts
    await alice.follow(bob.did)
    await bob.follow(alice.did)
    spam = await bob.post("buy now")
    fine = await bob.post("a fine post")
    await carol.post("quoting the spam", quote=spam)
    await mod.label(spam.uri, "spam")
    await mod.label(fine.uri, "!takedown")
    uri = await declare(alice, node.node_did, "mutuals")
    header = {"atproto-accept-labelers": mod.did}
    out = await alice.call("app.bsky.feed.getFeed", params={"feed": uri}, headers=header)
    labels = {
        i["post"]["record"]["text"]: [lb["val"] for lb in i["post"]["labels"]] for i in out["feed"]
    }
    assert labels == {"buy now": ["spam"], "a fine post": ["!takedown"]}
    redact = {"atproto-accept-labelers": f"{mod.did};redact"}
    out = await alice.call("app.bsky.feed.getFeed", params={"feed": uri}, headers=redact)
    assert texts(out) == ["buy now"]
    quotes = await alice.call("app.bsky.feed.getQuotes", params={"uri": spam.uri}, headers=header)
    assert quotes["posts"][0]["embed"]["record"]["labels"][0]["val"] == "spam"


async def test_feed_context_reads_are_bounded_per_account(
    node: Node, accounts: list[Client]
) -> None:
    alice, bob, carol, _ = accounts
    posts = [await bob.post(f"p{i}") for i in range(3)]
    for p in posts:
        await alice.like(p)
    await carol.like(posts[0])
    ctx = node.feeds.host.ctx
    # Only alice's newest like counts with per_account=1; carol's one like too.
    ranked = await ctx.liked_by([alice.did, carol.did], per_account=1)
    assert sorted(ranked) == sorted([(posts[2].uri, 1), (posts[0].uri, 1)])
    everything = await ctx.liked_by([alice.did, carol.did])
    assert everything[0] == (posts[0].uri, 2)
    assert len(everything) == 3
    # Text, counts and posts are read, bounded, through the same interface.
    assert (await ctx.texts([posts[1].uri, "at://did:plc:x/app.bsky.feed.post/y"])) == {
        posts[1].uri: "p1"
    }
    assert (await ctx.like_counts([posts[0].uri]))[posts[0].uri] == 2
    assert (await ctx.post_counts([bob.did, carol.did])) == {bob.did: 3, carol.did: 0}
    newest = await ctx.recent_posts([bob.did], limit=2)
    assert [p.uri for p in newest] == [posts[2].uri, posts[1].uri]
    older = await ctx.recent_posts([bob.did], limit=2, before=newest[-1].sort_at)
    assert [p.uri for p in older] == [posts[0].uri]
    assert await ctx.recent_posts(None, limit=0) == []


async def test_the_command_line_reads_a_custom_feed(node: Node, tmp_path: Path) -> None:
    from .test_cli import new_account, ok, skyfed

    alice = await new_account(tmp_path, node, "alice")
    async with Client(node.url) as bob:
        await bob.create_account("bob.skyfed.test", PASSWORD)
        await bob.post("bob writes rarely")
        async with Client(node.url) as me:
            await me.login("alice.skyfed.test", PASSWORD)
            await me.follow(bob.did)
            ref = await me.declare_feed(
                "quiet-posters", service=node.node_did, display_name="Quiet"
            )
            assert (await me.custom_feed(ref.uri))["feed"][0]["post"]["author"]["did"] == bob.did
    out = ok(await skyfed(alice, "feed", "--generator", ref.uri)).out
    assert "@bob.skyfed.test" in out
    assert "bob writes rarely" in out
    as_json = ok(await skyfed(alice, "feed", "--generator", ref.uri, "--json")).json()
    assert [i["post"]["record"]["text"] for i in as_json["feed"]] == ["bob writes rarely"]


async def test_actor_feeds_suggested_feeds_and_handle_uris(
    node: Node, accounts: list[Client]
) -> None:
    alice, bob, carol, _ = accounts
    first = await declare(alice, node.node_did, "mutuals", "First")
    second = await declare(alice, node.node_did, "quiet-posters", "Second")
    other = await declare(bob, node.node_did, "follows-popular", "Bob's")
    page = await carol.call(
        "app.bsky.feed.getActorFeeds", params={"actor": "alice.skyfed.test", "limit": 1}
    )
    assert [f["uri"] for f in page["feeds"]] == [second]
    rest = await carol.call(
        "app.bsky.feed.getActorFeeds",
        params={"actor": alice.did, "limit": 1, "cursor": page["cursor"]},
    )
    assert [f["uri"] for f in rest["feeds"]] == [first]
    await bob.like(first)
    await carol.like(first)
    await carol.like(other)
    suggested = await carol.call("app.bsky.feed.getSuggestedFeeds", params={"limit": 2})
    assert [f["uri"] for f in suggested["feeds"]] == [first, other]
    more = await carol.call(
        "app.bsky.feed.getSuggestedFeeds", params={"limit": 2, "cursor": suggested["cursor"]}
    )
    assert [f["uri"] for f in more["feeds"]] == [second]
    # The profile says how many feeds its account declared (apps show a Feeds tab).
    profile = await carol.call("app.bsky.actor.getProfile", params={"actor": alice.did})
    assert profile["associated"] == {"feedgens": 2}
    assert "associated" not in await carol.call(
        "app.bsky.actor.getProfile", params={"actor": carol.did}
    )
    # A feed URI naming its creator by handle works as Bluesky's AppView allows.
    by_handle = first.replace(alice.did, "alice.skyfed.test")
    out = await carol.call("app.bsky.feed.getFeedGenerator", params={"feed": by_handle})
    assert out["view"]["uri"] == first
    # A creator who blocks the reader is hidden from its feed lists.
    await alice.block(carol.did)
    hidden = await carol.call("app.bsky.feed.getActorFeeds", params={"actor": alice.did})
    assert hidden["feeds"] == []


async def test_a_generator_node_that_dialled_us_is_reached_at_the_address_it_gave(
    tmp_path: Path,
) -> None:
    # share_peers=False: a keeps b's address as b gave it, but does not dial it.
    a, b = await start_nodes(tmp_path, 2, dial_policy="loopback", share_peers=False)
    try:
        await link([a, b], [(1, 0)])  # b dialled a: a never dialled b
        assert not any(did == b.node_did for did, _ in a.federation.verified.values())
        assert a.federation.address_of(b.node_did) == b.url
        async with Client(a.url) as alice, Client(b.url) as carol:
            await alice.create_account("alice.skyfed.test", PASSWORD)
            await carol.create_account("carol.skyfed.test", PASSWORD)
            await alice.follow(carol.did)
            await carol.follow(alice.did)
            await carol.post("from b")
            uri = await declare(carol, b.node_did, "mutuals")

            async def ready() -> bool:
                if await a.feeds.views.generator_service(uri) is None:
                    return False
                try:
                    return texts(await feed(alice, uri)) == ["from b"]
                except XrpcError:
                    return False  # b does not hold alice's follow or identity yet

            await until(ready)
        # A node cut off is not dialled for its feeds.
        a.federation.block(b.node_did, 60)
        assert a.federation.address_of(b.node_did) is None
    finally:
        await a.stop()
        await b.stop()
