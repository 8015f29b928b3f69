"""app.bsky.actor: profiles, suggested accounts and preferences."""

from __future__ import annotations

from aiohttp import web

from ...appview.search import MAX_SEARCH_CHARS
from .base import (
    NODE_KEY,
    Handler,
    json_response,
    q_int,
    q_list,
    q_str,
    read_body,
    viewer_of,
)


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


async def get_suggestions(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    limit = q_int(request, "limit", 50, 1, 100)
    cursor = q_str(request, "cursor", required=False)
    viewer = await viewer_of(request)
    return json_response(await node.feeds.views.suggestions(viewer, limit, cursor))


async def get_preferences(request: web.Request) -> web.Response:
    """app.bsky.actor.getPreferences: the session's own account's, and no one else's."""
    node = request.app[NODE_KEY]
    did = (await node.principal(request)).did
    return json_response({"preferences": await node.preferences.get(did)})


async def put_preferences(request: web.Request) -> web.Response:
    """app.bsky.actor.putPreferences {preferences}: replaces them all."""
    node = request.app[NODE_KEY]
    did = (await node.principal(request)).did
    # The body is the preferences plus a few bytes of wrapping.
    body = await read_body(request, max_bytes=node.preferences.max_bytes + 1024)
    await node.preferences.put(did, body.get("preferences"))
    return json_response({})


ROUTES: dict[str, tuple[str, Handler]] = {
    "app.bsky.actor.searchActors": ("GET", search_actors),
    "app.bsky.actor.searchActorsTypeahead": ("GET", search_actors_typeahead),
    "app.bsky.actor.getProfile": ("GET", get_profile),
    "app.bsky.actor.getProfiles": ("GET", get_profiles),
    "app.bsky.actor.getSuggestions": ("GET", get_suggestions),
    "app.bsky.actor.getPreferences": ("GET", get_preferences),
    "app.bsky.actor.putPreferences": ("POST", put_preferences),
}
