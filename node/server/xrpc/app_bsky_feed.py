"""app.bsky.feed: timelines, author feeds, threads, posts, likes, reposts, quotes, and
feeds from feed generators (node/appview/feedgens/)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from protocol.syntax import (
    validate_at_uri,
    validate_cid,
)

from ...appview.search import MAX_SEARCH_CHARS
from ...appview.views import (
    author_feed_page,
    check_author_feed_filter,
    post_thread_page,
    timeline_page,
)
from ..auth import parse_bearer
from .base import (
    NODE_KEY,
    Handler,
    did_uri,
    json_body_response,
    json_response,
    q_int,
    q_list,
    q_post_uri,
    q_str,
    q_uri,
    viewer_of,
)

if TYPE_CHECKING:
    pass


async def search_posts(request: web.Request) -> web.Response:
    """app.bsky.feed.searchPosts over every post this node holds (node/appview/search.py)."""
    node = request.app[NODE_KEY]
    q = q_str(request, "q", max_chars=MAX_SEARCH_CHARS)
    assert q is not None
    limit = q_int(request, "limit", 25, 1, 100)
    opt = {
        name: q_str(request, name, required=False, max_chars=2048)
        for name in ("cursor", "author", "mentions", "lang", "since", "until", "domain")
    }
    sort = q_str(request, "sort", required=False, max_chars=16) or "latest"
    viewer = await viewer_of(request)
    return json_response(
        await node.search.posts(
            q,
            viewer,
            limit=limit,
            sort=sort,
            cursor=opt["cursor"],
            author=opt["author"],
            mentions=opt["mentions"],
            lang=opt["lang"],
            since=opt["since"],
            until=opt["until"],
            domain=opt["domain"],
        )
    )


async def get_timeline(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    viewer = (await node.principal(request)).did
    limit = q_int(request, "limit", 50, 1, 100)
    cursor = q_str(request, "cursor", required=False)
    return json_body_response(await node.renderer.json(timeline_page, viewer, limit, cursor))


async def get_author_feed(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    actor = q_str(request, "actor")
    assert actor is not None
    limit = q_int(request, "limit", 50, 1, 100)
    cursor = q_str(request, "cursor", required=False)
    filter_ = q_str(request, "filter", required=False) or "posts_with_replies"
    check_author_feed_filter(filter_)
    viewer = await viewer_of(request)
    return json_body_response(
        await node.renderer.json(author_feed_page, viewer, actor, limit, cursor, filter_)
    )


#: getPostThread takes the lexicon's ``depth`` and ``parentHeight`` (0..1000, as
#: Bluesky's) but serves at most this many levels below and above the post, as
#: Bluesky's AppView caps depth by its config. A thread nests two JSON levels per
#: reply level and one per parent, and JSON encoders and parsers stop at a few hundred
#: levels (orjson at 255): 1,000 levels would be a 500 and a hazard to clients.
MAX_THREAD_DEPTH = 100
MAX_THREAD_PARENT_HEIGHT = 200


async def get_post_thread(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    uri = await q_post_uri(request)
    depth = min(q_int(request, "depth", 6, 0, 1000), MAX_THREAD_DEPTH)
    height = min(q_int(request, "parentHeight", 80, 0, 1000), MAX_THREAD_PARENT_HEIGHT)
    viewer = await viewer_of(request)
    return json_body_response(
        await node.renderer.json(post_thread_page, viewer, uri, depth, height)
    )


async def get_posts(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    uris = q_list(request, "uris", 25)
    for uri in uris:
        validate_at_uri(uri)
    uris = [await did_uri(node, uri) for uri in uris]
    return json_response(await node.views.posts(uris, await viewer_of(request)))


async def get_likes(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    uri = await q_post_uri(request)
    limit = q_int(request, "limit", 50, 1, 100)
    cursor = q_str(request, "cursor", required=False)
    return json_response(await node.views.likes(uri, await viewer_of(request), limit, cursor))


async def get_reposted_by(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    uri = await q_post_uri(request)
    limit = q_int(request, "limit", 50, 1, 100)
    cursor = q_str(request, "cursor", required=False)
    return json_response(await node.views.reposted_by(uri, await viewer_of(request), limit, cursor))


async def get_actor_likes(request: web.Request) -> web.Response:
    """Likes are shown only to the account that made them (as Bluesky's AppView)."""
    node = request.app[NODE_KEY]
    viewer = (await node.principal(request)).did
    actor = q_str(request, "actor")
    assert actor is not None
    limit = q_int(request, "limit", 50, 1, 100)
    cursor = q_str(request, "cursor", required=False)
    return json_response(await node.feeds.views.actor_likes(actor, viewer, limit, cursor))


async def get_quotes(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    uri = await q_post_uri(request)
    cid = q_str(request, "cid", required=False)
    if cid is not None:
        validate_cid(cid)
    limit = q_int(request, "limit", 50, 1, 100)
    cursor = q_str(request, "cursor", required=False)
    sort = q_str(request, "sort", required=False) or "latest"
    viewer = await viewer_of(request)
    return json_response(await node.feeds.views.quotes(uri, cid, viewer, limit, cursor, sort))


async def get_feed(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    feed = await did_uri(node, q_uri(request, "feed"))
    limit = q_int(request, "limit", 50, 1, 100)
    cursor = q_str(request, "cursor", required=False)
    viewer = await viewer_of(request)
    return json_response(await node.feeds.get_feed(feed, viewer, limit, cursor))


async def get_feed_generator(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    feed = await did_uri(node, q_uri(request, "feed"))
    return json_response(await node.feeds.generator(feed, await viewer_of(request)))


async def get_feed_generators(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    feeds = q_list(request, "feeds", 100)
    for feed in feeds:
        validate_at_uri(feed)
    feeds = [await did_uri(node, feed) for feed in feeds]
    return json_response(await node.feeds.generators(feeds, await viewer_of(request)))


async def get_actor_feeds(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    actor = q_str(request, "actor")
    assert actor is not None
    limit = q_int(request, "limit", 50, 1, 100)
    cursor = q_str(request, "cursor", required=False)
    viewer = await viewer_of(request)
    return json_response(await node.feeds.views.actor_feeds(actor, viewer, limit, cursor))


async def get_suggested_feeds(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    limit = q_int(request, "limit", 50, 1, 100)
    cursor = q_str(request, "cursor", required=False)
    viewer = await viewer_of(request)
    return json_response(await node.feeds.views.suggested_feeds(viewer, limit, cursor))


async def describe_feed_generator(request: web.Request) -> web.Response:
    return json_response(await request.app[NODE_KEY].feeds.describe())


async def get_feed_skeleton(request: web.Request) -> web.Response:
    """Served for the feeds this node hosts. The caller is another node vouching for
    its reader with a service token, or a reader of this node with its session."""
    node = request.app[NODE_KEY]
    feed = q_uri(request, "feed")
    limit = q_int(request, "limit", 50, 1, 100)
    cursor = q_str(request, "cursor", required=False)
    viewer = None
    header = request.headers.get("Authorization")
    if header is not None:
        token = parse_bearer(header)
        import jwt  # loaded by the first authenticated call, not with the node

        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            claims = {}
        if isinstance(claims, dict) and "lxm" in claims:
            viewer = await node.feeds.caller(token)
        else:
            viewer = await viewer_of(request)
    return json_response(await node.feeds.skeleton(feed, viewer, limit, cursor))


async def get_list_feed(request: web.Request) -> web.Response:
    """app.bsky.feed.getListFeed: {feed: [FeedViewPost], cursor?}, posts by the
    members of a list (node/appview/graph_views.py)."""
    node = request.app[NODE_KEY]
    uri = await did_uri(node, q_uri(request, "list"))
    limit = q_int(request, "limit", 50, 1, 100)
    cursor = q_str(request, "cursor", required=False)
    return json_response(await node.graph.list_feed(uri, await viewer_of(request), limit, cursor))


ROUTES: dict[str, tuple[str, Handler]] = {
    "app.bsky.feed.getListFeed": ("GET", get_list_feed),
    "app.bsky.feed.searchPosts": ("GET", search_posts),
    "app.bsky.feed.getTimeline": ("GET", get_timeline),
    "app.bsky.feed.getAuthorFeed": ("GET", get_author_feed),
    "app.bsky.feed.getPostThread": ("GET", get_post_thread),
    "app.bsky.feed.getPosts": ("GET", get_posts),
    "app.bsky.feed.getLikes": ("GET", get_likes),
    "app.bsky.feed.getRepostedBy": ("GET", get_reposted_by),
    "app.bsky.feed.getActorLikes": ("GET", get_actor_likes),
    "app.bsky.feed.getQuotes": ("GET", get_quotes),
    "app.bsky.feed.getFeed": ("GET", get_feed),
    "app.bsky.feed.getFeedGenerator": ("GET", get_feed_generator),
    "app.bsky.feed.getFeedGenerators": ("GET", get_feed_generators),
    "app.bsky.feed.getActorFeeds": ("GET", get_actor_feeds),
    "app.bsky.feed.getSuggestedFeeds": ("GET", get_suggested_feeds),
    "app.bsky.feed.describeFeedGenerator": ("GET", describe_feed_generator),
    "app.bsky.feed.getFeedSkeleton": ("GET", get_feed_skeleton),
}
