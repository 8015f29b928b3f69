"""app.bsky.actor: profiles and suggested accounts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from .base import (
    NODE_KEY,
    Handler,
    json_response,
    q_int,
    q_list,
    q_str,
    viewer_of,
)

if TYPE_CHECKING:
    pass


async def get_profile(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    actor = q_str(request, "actor")
    assert actor is not None
    return json_response(await node.views.profile(actor, await viewer_of(request)))


async def get_profiles(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    actors = q_list(request, "actors", 25)
    return json_response(await node.views.profiles(actors, await viewer_of(request)))


async def get_suggestions(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    limit = q_int(request, "limit", 50, 1, 100)
    cursor = q_str(request, "cursor", required=False)
    viewer = await viewer_of(request)
    return json_response(await node.feeds.views.suggestions(viewer, limit, cursor))


ROUTES: dict[str, tuple[str, Handler]] = {
    "app.bsky.actor.getProfile": ("GET", get_profile),
    "app.bsky.actor.getProfiles": ("GET", get_profiles),
    "app.bsky.actor.getSuggestions": ("GET", get_suggestions),
}
