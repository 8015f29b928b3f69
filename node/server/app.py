"""The node's HTTP face: XRPC endpoints under ``/xrpc/<nsid>``, the firehose, metrics.

Handlers are thin: decode and bound the input, call protocol code or the repo
manager, reply with JSON. Errors from the protocol family carry their XRPC name and
status and are answered as ``{"error", "message"}``; anything unexpected becomes a
500 ``InternalServerError`` whose body never holds a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from protocol.errors import RemoteProtocolError

from ..accounts.moderation import MODERATION_KEY, labels_middleware, moderation_routes
from ..accounts.portability import ROUTES as PORTABILITY_ROUTES
from ..limits import (
    AddressSlots,
    body_middleware,
)
from .ratelimit import RateLimited
from .web import add_web_routes
from .web_search import add_search_routes
from .xrpc import (
    app_bsky_actor,
    app_bsky_feed,
    app_bsky_graph,
    app_bsky_labeler,
    app_bsky_notification,
    com_atproto_identity,
    com_atproto_label,
    com_atproto_moderation,
    com_atproto_repo,
    com_atproto_server,
    com_atproto_sync,
    skyfed,
)
from .xrpc.base import NODE_KEY, Handler, error_response
from .xrpc.com_atproto_sync import REPO_STREAMS_KEY
from .xrpc.skyfed import metrics

if TYPE_CHECKING:
    from ..wiring import Node

log = logging.getLogger("skyfed.node")

_server_log = logging.getLogger("aiohttp.server")


class ServerLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's server log, with what a client got wrong on the wire (a malformed or
    over-long request line or header, a connection dropped mid-request) written as one
    line at INFO: aiohttp logs those as errors with a full traceback, so anyone could
    fill the node's log with tracebacks. Everything else passes through unchanged."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info")
        if isinstance(exc, BaseException) and _is_client_fault(exc):
            kwargs.pop("exc_info")
            level = min(level, logging.INFO)
            msg = f"{msg}: %s: %s"
            args = (*args, type(exc).__name__, _one_line(exc))
        super().log(level, msg, *args, **kwargs)


def _is_client_fault(exc: BaseException) -> bool:
    if isinstance(exc, aiohttp.http_exceptions.HttpProcessingError):
        return 400 <= (exc.code or 400) < 500
    return isinstance(exc, ConnectionError)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(getattr(exc, "message", "") or exc).split())
    return text[:200]


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    nsid = request.match_info.get("nsid", request.path)
    try:
        response = await handler(request)
    except RemoteProtocolError as e:
        if isinstance(e, RateLimited):
            node.log_limit.log(
                "ratelimit",
                logging.INFO,
                "rate limited",
                client=request.remote,
                nsid=nsid,
                why=e.message[:200],
            )
        headers = getattr(e, "headers", None)
        if callable(headers):
            headers = headers()
        response = error_response(e.status, e.error, e.message, headers)
    except web.HTTPRequestEntityTooLarge:
        response = error_response(413, "PayloadTooLarge", "request body is too large")
    except web.HTTPException as e:
        if e.status < 400:
            raise
        name = {404: "NotFound", 405: "InvalidRequest"}.get(e.status, "InvalidRequest")
        response = error_response(e.status, name, e.reason)
    except asyncio.CancelledError:
        raise
    except Exception as e:
        if not _client_gone(request, e):
            log.exception("internal error in %s", nsid)
            response = error_response(500, "InternalServerError", "Internal Server Error")
        else:
            # The client hung up mid-request (mid-body, or while we wrote the answer):
            # its fault, not ours, and nobody is left to answer. One line, no traceback,
            # counted as nginx's 499 "client closed request", not as a 500.
            node.log_limit.log(
                "client-gone",
                logging.INFO,
                "client went away",
                client=request.remote,
                nsid=nsid,
                why=str(e)[:200],
            )
            node.m_requests.labels(nsid if nsid in _ROUTES else "other", "499").inc()
            return error_response(400, "InvalidRequest", "the connection closed mid-request")
    node.m_requests.labels(nsid if nsid in _ROUTES else "other", str(response.status)).inc()
    return response


def _client_gone(request: web.Request, error: Exception) -> bool:
    """True when ``error`` is the client's connection going away (its transport is
    closed), not a connection of ours to somewhere else failing."""
    if not isinstance(error, ConnectionError | aiohttp.ClientConnectionError):
        return False
    transport = request.transport
    return transport is None or transport.is_closing()


_ROUTES: dict[str, tuple[str, Handler]] = {}
for _namespace in (
    com_atproto_server,
    com_atproto_repo,
    com_atproto_sync,
    com_atproto_identity,
    com_atproto_label,
    app_bsky_feed,
    app_bsky_actor,
    app_bsky_graph,
    app_bsky_labeler,
    com_atproto_moderation,
    app_bsky_notification,
    skyfed,
):
    _ROUTES.update(_namespace.ROUTES)


async def _dispatch(request: web.Request) -> web.StreamResponse:
    nsid = request.match_info["nsid"]
    route = _ROUTES.get(nsid)
    if route is None:
        raise RemoteProtocolError(
            f"{nsid} is not served here", error="MethodNotImplemented", status=501
        )
    method, handler = route
    if request.method != method and not (method == "GET" and request.method == "HEAD"):
        raise RemoteProtocolError(
            f"{nsid} takes {method}, not {request.method}", error="InvalidRequest", status=405
        )
    return await handler(request)


async def _trim_events(node: Node) -> None:
    """Keep the firehose replay window at its configured size."""
    while True:
        await asyncio.sleep(30)
        last = node.firehose.last_seq
        if last > node.config.replay_window:
            with contextlib.suppress(Exception):
                await node.storage.trim_events(last - node.config.replay_window)


async def _background(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(_trim_events(app[NODE_KEY]))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _close_streams(app: web.Application) -> None:
    await app[NODE_KEY].firehose.close_all()


def make_app(node: Node) -> web.Application:
    app = web.Application(
        middlewares=[body_middleware(node.config), _errors, labels_middleware],
        client_max_size=node.config.max_body,
    )
    app[NODE_KEY] = node
    app[REPO_STREAMS_KEY] = AddressSlots(
        node.config.max_repo_streams, node.config.max_repo_streams_per_addr, "repo streams"
    )
    app[MODERATION_KEY] = node.moderation
    app.router.add_route("*", "/xrpc/{nsid}", _dispatch)
    add_web_routes(app, node.views, node_label=lambda: (node.url, node.node_did))
    add_search_routes(app, node.search, node.notifications, node.storage)
    app.router.add_get("/metrics", metrics)
    app.cleanup_ctx.append(_background)
    app.cleanup_ctx.append(node.blobs.gc_context(node.config.blob_gc_interval))
    app.on_shutdown.append(_close_streams)
    return app


_ROUTES.update(PORTABILITY_ROUTES)
_ROUTES.update(moderation_routes())
