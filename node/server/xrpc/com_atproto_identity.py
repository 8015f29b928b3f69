"""com.atproto.identity: handles to DIDs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from protocol.errors import RemoteProtocolError
from protocol.syntax import (
    normalize_handle,
    validate_handle,
)

from .base import (
    NODE_KEY,
    Handler,
    json_response,
    q_str,
)

if TYPE_CHECKING:
    pass


async def resolve_handle(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    handle = q_str(request, "handle")
    assert handle is not None
    validate_handle(handle)
    did = await node.storage.resolve_handle(normalize_handle(handle))
    if did is None:
        raise RemoteProtocolError("Unable to resolve handle", error="HandleNotFound")
    return json_response({"did": did})


ROUTES: dict[str, tuple[str, Handler]] = {
    "com.atproto.identity.resolveHandle": ("GET", resolve_handle),
}
