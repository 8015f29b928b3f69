"""com.atproto.label: labels on subjects."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from protocol.labels import Label
from protocol.syntax import (
    validate_did,
)

from .. import inputs
from .base import (
    NODE_KEY,
    Handler,
    bad,
    json_response,
    q_int,
    q_list,
)

if TYPE_CHECKING:
    pass

_MAX_LABEL_PATTERNS = 64


async def query_labels(request: web.Request) -> web.Response:
    """com.atproto.label.queryLabels: labels on subjects matching any of uriPatterns
    (a trailing ``*`` is a prefix match), optionally only from some labelers."""
    node = request.app[NODE_KEY]
    patterns = q_list(request, "uriPatterns", _MAX_LABEL_PATTERNS)
    for pattern in patterns:
        if not pattern or len(pattern) > 8192 or "*" in pattern[:-1]:
            raise bad("a uriPattern is a URI, or a prefix ending in one '*'")
    sources = request.query.getall("sources", [])
    if len(sources) > _MAX_LABEL_PATTERNS:
        raise bad(f"sources: at most {_MAX_LABEL_PATTERNS} values")
    for source in sources:
        validate_did(source)
    limit = q_int(request, "limit", 50, 1, 250)
    cursor = inputs.query_optional_int(request, "cursor", 0, inputs.INT64_MAX)
    rows = await node.storage.query_labels(patterns, sources, limit, cursor)
    out: dict[str, Any] = {"labels": [Label.from_bytes(data).to_json() for _, data in rows]}
    if len(rows) == limit:
        out["cursor"] = str(rows[-1][0])
    return json_response(out)


ROUTES: dict[str, tuple[str, Handler]] = {
    "com.atproto.label.queryLabels": ("GET", query_labels),
}
