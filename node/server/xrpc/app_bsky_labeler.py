"""app.bsky.labeler: labeler services, from their app.bsky.labeler.service records."""

from __future__ import annotations

from aiohttp import web

from protocol.syntax import validate_did

from .base import NODE_KEY, Handler, json_response, q_bool, q_list, viewer_of

#: DIDs one getServices may name (the lexicon sets no limit; Bluesky's app asks for
#: the labelers a reader subscribes to, at most 20 plus Bluesky's own).
MAX_SERVICES = 100


async def get_services(request: web.Request) -> web.Response:
    """app.bsky.labeler.getServices: {views: [LabelerView | LabelerViewDetailed]} for
    the named DIDs that declared themselves labelers; others are left out."""
    node = request.app[NODE_KEY]
    dids = q_list(request, "dids", MAX_SERVICES)
    for did in dids:
        validate_did(did)
    detailed = q_bool(request, "detailed")
    return json_response(await node.graph.labelers(dids, await viewer_of(request), detailed))


ROUTES: dict[str, tuple[str, Handler]] = {
    "app.bsky.labeler.getServices": ("GET", get_services),
}
