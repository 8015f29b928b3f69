"""app.bsky.graph: follows, followers, suggested follows, blocks, lists, list and
thread mutes.

muteActor / unmuteActor / getMutes are served from node/accounts/moderation.py."""

from __future__ import annotations

from aiohttp import web

from protocol.errors import RemoteProtocolError
from protocol.syntax import validate_at_uri

from .base import (
    NODE_KEY,
    Handler,
    did_uri,
    json_response,
    q_int,
    q_str,
    q_uri,
    read_body,
    viewer_of,
)

#: Bytes a mute/unmute body may take (it carries one AT-URI).
MAX_MUTE_BODY = 16 * 1024


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


async def _session(request: web.Request) -> str:
    return (await request.app[NODE_KEY].principal(request)).did


def _page(request: web.Request) -> tuple[int, str | None]:
    return q_int(request, "limit", 50, 1, 100), q_str(request, "cursor", required=False)


async def get_blocks(request: web.Request) -> web.Response:
    """app.bsky.graph.getBlocks: {blocks: [ProfileView], cursor?} (own session)."""
    viewer = await _session(request)
    limit, cursor = _page(request)
    return json_response(await request.app[NODE_KEY].graph.blocks(viewer, limit, cursor))


async def _list_param(request: web.Request) -> str:
    node = request.app[NODE_KEY]
    return await did_uri(node, q_uri(request, "list"))


async def get_list(request: web.Request) -> web.Response:
    """app.bsky.graph.getList: {list: ListView, items: [ListItemView], cursor?}."""
    node = request.app[NODE_KEY]
    uri = await _list_param(request)
    limit, cursor = _page(request)
    return json_response(await node.graph.get_list(uri, await viewer_of(request), limit, cursor))


async def get_lists(request: web.Request) -> web.Response:
    """app.bsky.graph.getLists: {lists: [ListView], cursor?}."""
    node = request.app[NODE_KEY]
    actor = q_str(request, "actor")
    assert actor is not None
    limit, cursor = _page(request)
    purposes = request.query.getall("purposes", [])
    if len(purposes) > 10:
        raise RemoteProtocolError("purposes: at most 10 values")
    return json_response(
        await node.graph.get_lists(actor, await viewer_of(request), limit, cursor, purposes)
    )


async def get_list_feed(request: web.Request) -> web.Response:
    """app.bsky.graph.getListFeed: {feed: [FeedViewPost], cursor?}, posts by the
    list's members."""
    node = request.app[NODE_KEY]
    uri = await _list_param(request)
    limit, cursor = _page(request)
    return json_response(await node.graph.list_feed(uri, await viewer_of(request), limit, cursor))


async def get_list_mutes(request: web.Request) -> web.Response:
    viewer = await _session(request)
    limit, cursor = _page(request)
    return json_response(await request.app[NODE_KEY].graph.list_mutes(viewer, limit, cursor))


async def get_list_blocks(request: web.Request) -> web.Response:
    viewer = await _session(request)
    limit, cursor = _page(request)
    return json_response(await request.app[NODE_KEY].graph.list_blocks(viewer, limit, cursor))


async def _uri_body(request: web.Request, name: str) -> tuple[str, str]:
    viewer = await _session(request)
    body = await read_body(request, max_bytes=MAX_MUTE_BODY)
    value = body.get(name)
    if not isinstance(value, str):
        raise RemoteProtocolError(f'Input must have the property "{name}"')
    validate_at_uri(value)
    return viewer, await did_uri(request.app[NODE_KEY], value)


async def mute_actor_list(request: web.Request) -> web.Response:
    """app.bsky.graph.muteActorList {list}: private to this node."""
    viewer, uri = await _uri_body(request, "list")
    await request.app[NODE_KEY].graph.mute_list(viewer, uri)
    return json_response({})


async def unmute_actor_list(request: web.Request) -> web.Response:
    viewer, uri = await _uri_body(request, "list")
    await request.app[NODE_KEY].graph.unmute_list(viewer, uri)
    return json_response({})


async def mute_thread(request: web.Request) -> web.Response:
    """app.bsky.graph.muteThread {root}: no notifications from that thread."""
    viewer, uri = await _uri_body(request, "root")
    await request.app[NODE_KEY].graph.mute_thread(viewer, uri)
    return json_response({})


async def unmute_thread(request: web.Request) -> web.Response:
    viewer, uri = await _uri_body(request, "root")
    await request.app[NODE_KEY].graph.unmute_thread(viewer, uri)
    return json_response({})


ROUTES: dict[str, tuple[str, Handler]] = {
    "app.bsky.graph.getFollows": ("GET", get_follows),
    "app.bsky.graph.getFollowers": ("GET", get_followers),
    "app.bsky.graph.getSuggestedFollowsByActor": ("GET", get_suggested_follows_by_actor),
    "app.bsky.graph.getBlocks": ("GET", get_blocks),
    "app.bsky.graph.getList": ("GET", get_list),
    "app.bsky.graph.getLists": ("GET", get_lists),
    "app.bsky.graph.getListFeed": ("GET", get_list_feed),
    "app.bsky.graph.getListMutes": ("GET", get_list_mutes),
    "app.bsky.graph.getListBlocks": ("GET", get_list_blocks),
    "app.bsky.graph.muteActorList": ("POST", mute_actor_list),
    "app.bsky.graph.unmuteActorList": ("POST", unmute_actor_list),
    "app.bsky.graph.muteThread": ("POST", mute_thread),
    "app.bsky.graph.unmuteThread": ("POST", unmute_thread),
}
