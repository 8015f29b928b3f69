"""app.bsky.notification: listNotifications, getUnreadCount, updateSeen; registerPush
and unregisterPush answer that this node offers no push (node/appview/notifications.py
computes what they list)."""

from __future__ import annotations

from aiohttp import web

from protocol.errors import RemoteProtocolError

from ...appview.index import normalize_time
from ...appview.notifications import REASONS, notifications_page
from ...store.repos import iso_now
from .base import (
    NODE_KEY,
    Handler,
    b_str,
    bad,
    json_body_response,
    json_response,
    q_int,
    q_list,
    q_str,
    read_body,
)

#: ``reasons`` values taken at most (the lexicon names 13 reasons).
MAX_REASONS = 32


def _datetime(value: str, name: str) -> str:
    t = normalize_time(value)
    if t is None:
        raise bad(f"{name} must be a datetime with a time zone")
    return t


async def list_notifications(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    viewer = (await node.principal(request)).did
    limit = q_int(request, "limit", 50, 1, 100)
    cursor = q_str(request, "cursor", required=False)
    reasons = q_list(request, "reasons", MAX_REASONS, required=False)
    if q_str(request, "seenAt", required=False) is not None:
        # The lexicon: "unsupported and will cause an error".
        raise bad("seenAt is not supported here: use app.bsky.notification.updateSeen")
    q_str(request, "priority", required=False)  # deprecated, ignored
    return json_body_response(
        await node.renderer.json(notifications_page, viewer, viewer, limit, cursor, reasons)
    )


async def get_unread_count(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    viewer = (await node.principal(request)).did
    seen = q_str(request, "seenAt", required=False, max_chars=64)
    seen_at = None if seen is None else _datetime(seen, "seenAt")
    return json_response({"count": await node.notifications.unread_count(viewer, seen_at)})


async def update_seen(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    viewer = (await node.principal(request)).did
    body = await read_body(request, max_bytes=4096)
    seen = b_str(body, "seenAt")
    # Not past now: a client must not mark notifications that have not come yet read.
    seen_at = min(_datetime(seen, "seenAt"), iso_now(node.wall_clock()))
    await node.notifications.update_seen(viewer, seen_at)
    return json_response({})


async def register_push(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    await node.principal(request)
    raise RemoteProtocolError(
        "this node does not offer push notifications: poll"
        " app.bsky.notification.getUnreadCount or listNotifications",
        error="MethodNotImplemented",
        status=501,
    )


ROUTES: dict[str, tuple[str, Handler]] = {
    "app.bsky.notification.listNotifications": ("GET", list_notifications),
    "app.bsky.notification.getUnreadCount": ("GET", get_unread_count),
    "app.bsky.notification.updateSeen": ("POST", update_seen),
    "app.bsky.notification.registerPush": ("POST", register_push),
    "app.bsky.notification.unregisterPush": ("POST", register_push),
}

__all__ = ["REASONS", "ROUTES"]
