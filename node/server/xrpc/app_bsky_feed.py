"""app.bsky.feed: timelines, author feeds, threads, posts, likes, reposts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from protocol.errors import RemoteProtocolError
from protocol.syntax import (
    validate_at_uri,
)

from ...appview.search import MAX_SEARCH_CHARS
from .base import (
    NODE_KEY,
    Handler,
    did_uri,
    json_response,
    q_int,
    q_list,
    q_post_uri,
    q_str,
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
    return json_response(
        await node.views.timeline(viewer, limit, q_str(request, "cursor", required=False))
    )


async def get_author_feed(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    actor = q_str(request, "actor")
    assert actor is not None
    limit = q_int(request, "limit", 50, 1, 100)
    cursor = q_str(request, "cursor", required=False)
    filter_ = q_str(request, "filter", required=False) or "posts_with_replies"
    viewer = await viewer_of(request)
    return json_response(await node.views.author_feed(actor, viewer, limit, cursor, filter_))


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
    out = await node.views.thread(uri, await viewer_of(request), depth, height)
    if out["thread"].get("notFound"):
        raise RemoteProtocolError(f"Post not found: {uri}", error="NotFound")
    return json_response(out)


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


ROUTES: dict[str, tuple[str, Handler]] = {
    "app.bsky.feed.searchPosts": ("GET", search_posts),
    "app.bsky.feed.getTimeline": ("GET", get_timeline),
    "app.bsky.feed.getAuthorFeed": ("GET", get_author_feed),
    "app.bsky.feed.getPostThread": ("GET", get_post_thread),
    "app.bsky.feed.getPosts": ("GET", get_posts),
    "app.bsky.feed.getLikes": ("GET", get_likes),
    "app.bsky.feed.getRepostedBy": ("GET", get_reposted_by),
}
