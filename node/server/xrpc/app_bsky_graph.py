"""app.bsky.graph: follows, followers and suggested follows."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from .base import (
    NODE_KEY,
    Handler,
    json_response,
    q_int,
    q_str,
    viewer_of,
)

if TYPE_CHECKING:
    pass


async def _follow_list(request: web.Request, *, followers: bool) -> web.Response:
    node = request.app[NODE_KEY]
    actor = q_str(request, "actor")
    assert actor is not None
    limit = q_int(request, "limit", 50, 1, 100)
    cursor = q_str(request, "cursor", required=False)
    viewer = await viewer_of(request)
    return json_response(
        await node.views.follows(actor, viewer, limit, cursor, followers=followers)
    )


async def get_follows(request: web.Request) -> web.Response:
    return await _follow_list(request, followers=False)


async def get_followers(request: web.Request) -> web.Response:
    return await _follow_list(request, followers=True)


async def get_suggested_follows_by_actor(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    actor = q_str(request, "actor")
    assert actor is not None
    viewer = await viewer_of(request)
    return json_response(await node.feeds.views.suggested_follows(actor, viewer))


ROUTES: dict[str, tuple[str, Handler]] = {
    "app.bsky.graph.getFollows": ("GET", get_follows),
    "app.bsky.graph.getFollowers": ("GET", get_followers),
    "app.bsky.graph.getSuggestedFollowsByActor": ("GET", get_suggested_follows_by_actor),
}
