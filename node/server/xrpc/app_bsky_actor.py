"""app.bsky.actor: profiles."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from .base import (
    NODE_KEY,
    Handler,
    json_response,
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


ROUTES: dict[str, tuple[str, Handler]] = {
    "app.bsky.actor.getProfile": ("GET", get_profile),
    "app.bsky.actor.getProfiles": ("GET", get_profiles),
}
