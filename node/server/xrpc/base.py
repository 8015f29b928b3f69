"""What every XRPC handler module shares: JSON answers, errors, input helpers, the node's AppKey."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal, overload

import orjson
from aiohttp import web

from protocol.cid import CID
from protocol.errors import RemoteProtocolError, SkyfedError
from protocol.handles import registration_error
from protocol.syntax import (
    normalize_handle,
    validate_at_uri,
)

from .. import inputs
from ..inputs import InvalidRequest
from ..ratelimit import client_key

if TYPE_CHECKING:
    from ...wiring import Node


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    # orjson: JSON encoding was a sixth of a timeline page's CPU with the stdlib.
    return web.Response(
        body=orjson.dumps(data),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def json_body_response(body: bytes) -> web.Response:
    """200 with a JSON body already encoded (node/appview/render.py)."""
    return web.Response(body=body, content_type="application/json")


def error_response(status: int, error: str, message: str, headers: Any = None) -> web.Response:
    return json_response({"error": error, "message": message}, status, headers)


def bad(message: str) -> InvalidRequest:
    return InvalidRequest(message)


q_str = inputs.query_str
q_int = inputs.query_int
q_bool = inputs.query_bool
read_body = inputs.read_json_object


@overload
def b_str(body: dict[str, Any], name: str, *, required: Literal[True] = True) -> str: ...
@overload
def b_str(body: dict[str, Any], name: str, *, required: bool) -> str | None: ...
def b_str(body: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise bad(f'Input must have the property "{name}"')
        return None
    if not isinstance(value, str):
        raise bad(f"{name} must be a string")
    return value


def b_cid(body: dict[str, Any], name: str) -> CID | None:
    value = b_str(body, name, required=False)
    return None if value is None else CID.from_str(value)


NODE_KEY: web.AppKey[Node] = web.AppKey("node")


def client_addr(request: web.Request) -> str:
    return client_key(request.remote or "unknown")


async def viewer_of(request: web.Request) -> str | None:
    """The reader, if the request carries an access token (views work without)."""
    if "Authorization" not in request.headers:
        return None
    return (await request.app[NODE_KEY].principal(request)).did


q_list = inputs.query_list


def q_uri(request: web.Request, name: str = "uri") -> str:
    uri = q_str(request, name)
    assert uri is not None
    validate_at_uri(uri)
    return uri


async def did_uri(node: Node, uri: str) -> str:
    """``uri`` with a handle authority replaced by its DID, as Bluesky's AppView does
    (links copied from an app name the handle). An unknown handle stays as it is and
    so finds nothing."""
    authority, sep, path = uri[len("at://") :].partition("/")
    if authority.startswith("did:"):
        return uri
    try:
        did = await node.storage.resolve_handle(normalize_handle(authority))
    except SkyfedError:
        return uri
    return uri if did is None else f"at://{did}{sep}{path}"


async def q_post_uri(request: web.Request) -> str:
    return await did_uri(request.app[NODE_KEY], q_uri(request))


def check_new_handle(node: Node, handle: str) -> None:
    """A handle this node may register: one label under one of its handle domains,
    not a reserved name (docs/security.md, Handles)."""
    refused = registration_error(handle, node.config.handle_domains)
    if refused is not None:
        raise RemoteProtocolError(refused[1], error=refused[0])
