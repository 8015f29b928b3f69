"""app.bsky.actor: profiles."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from ...appview.search import MAX_SEARCH_CHARS
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


async def _search_actors(request: web.Request, *, typeahead: bool) -> web.Response:
    node = request.app[NODE_KEY]
    # ``term`` is the lexicon's deprecated name for ``q``.
    q = q_str(request, "q", required=False, max_chars=MAX_SEARCH_CHARS)
    q = q or q_str(request, "term", required=False, max_chars=MAX_SEARCH_CHARS) or ""
    limit = q_int(request, "limit", 10 if typeahead else 25, 1, 100)
    cursor = None if typeahead else q_str(request, "cursor", required=False, max_chars=64)
    viewer = await viewer_of(request)
    return json_response(
        await node.search.actors(q, viewer, limit=limit, cursor=cursor, typeahead=typeahead)
    )


async def search_actors(request: web.Request) -> web.Response:
    """app.bsky.actor.searchActors over handles, display names and descriptions."""
    return await _search_actors(request, typeahead=False)


async def search_actors_typeahead(request: web.Request) -> web.Response:
    """app.bsky.actor.searchActorsTypeahead: every word a prefix, ProfileViewBasic."""
    return await _search_actors(request, typeahead=True)


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
    "app.bsky.actor.searchActors": ("GET", search_actors),
    "app.bsky.actor.searchActorsTypeahead": ("GET", search_actors_typeahead),
    "app.bsky.actor.getProfile": ("GET", get_profile),
    "app.bsky.actor.getProfiles": ("GET", get_profiles),
}
