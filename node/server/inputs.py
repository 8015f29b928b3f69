"""What clients send over HTTP, decoded and bounded in one place.

Every XRPC handler (and the web pages) takes its query parameters and JSON bodies
from here, so a hostile value is refused the same way everywhere, before any work is
done on it, as an :class:`InvalidRequest` (HTTP 400) or ``PayloadTooLarge`` (413):

* a query parameter is at most :data:`MAX_PARAM_CHARS` characters;
* an integer parameter is ASCII digits only (an optional ``-`` where the range allows
  it): no ``²``, no ``٣``, no ``+1``, no ``1_000``, no spaces, at most
  :data:`MAX_INT_CHARS` characters, then checked against its range (cursors against
  :data:`INT64_MAX`, what SQLite can hold);
* a JSON body is at most the app's ``max_body`` bytes (aiohttp's ``client_max_size``,
  config ``max_body``), strict UTF-8 with no lone surrogates (``\\ud800`` escapes are
  refused too: such a string cannot be stored, hashed or sent on), no ``NaN``, nested at
  most :data:`MAX_JSON_DEPTH` deep, and an object at the top.

What this module refuses to do: guess. A value that is not exactly what the method
takes is an error for the client, never a default.
"""

from __future__ import annotations

from typing import Any, Final

import orjson
from aiohttp import web

from protocol.errors import RemoteProtocolError

__all__ = [
    "INT64_MAX",
    "MAX_INT_CHARS",
    "MAX_JSON_DEPTH",
    "MAX_PARAM_CHARS",
    "InvalidRequest",
    "check_text",
    "json_depth",
    "parse_int",
    "parse_json_object",
    "query_bool",
    "query_int",
    "query_list",
    "query_optional_int",
    "query_str",
    "read_json_object",
]

#: Longest query parameter value accepted, in characters.
MAX_PARAM_CHARS: Final = 8192
#: Longest integer parameter accepted, in characters (sign included): 2**63 has 19
#: digits, so nothing a node could store is refused for its length.
MAX_INT_CHARS: Final = 20
#: The largest integer SQLite stores (cursors and sequence numbers are compared to it).
INT64_MAX: Final = 2**63 - 1
#: Deepest nesting of arrays and objects accepted in a JSON body. Records themselves
#: are bounded tighter by protocol/jsondata.py; this guards every other body too.
MAX_JSON_DEPTH: Final = 64


class InvalidRequest(RemoteProtocolError):
    """A request is malformed (bad parameter, bad JSON)."""


def check_text(value: str, name: str) -> str:
    """``value`` if it can be encoded as UTF-8; a lone surrogate (from a
    ``surrogateescape``-decoded header, say) is refused."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(f"{name} is not valid UTF-8 text") from None
    return value


# -- query parameters -------------------------------------------------------------------


def query_str(
    request: web.Request, name: str, *, required: bool = True, max_chars: int = MAX_PARAM_CHARS
) -> str | None:
    """A string parameter; absent or empty is None, or an error when ``required``."""
    value = request.query.get(name)
    if value is None or value == "":
        if required:
            raise InvalidRequest(f'Error: Params must have the property "{name}"')
        return None
    if len(value) > max_chars:
        raise InvalidRequest(f"{name} is too long (at most {max_chars} characters)")
    return check_text(value, name)


def parse_int(raw: str, name: str, lo: int, hi: int) -> int:
    """``raw`` as an integer in ``lo..hi``: ASCII digits, optional leading ``-``."""
    digits = raw[1:] if raw.startswith("-") else raw
    if (
        not digits
        or len(raw) > MAX_INT_CHARS
        or not digits.isascii()
        or not digits.isdigit()
        or (raw.startswith("-") and lo >= 0)
    ):
        raise InvalidRequest(f"{name} must be an integer between {lo} and {hi}")
    value = int(raw)
    if not lo <= value <= hi:
        raise InvalidRequest(f"{name} must be between {lo} and {hi}")
    return value


def query_int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    """An integer parameter in ``lo..hi``; absent or empty is ``default``."""
    value = query_optional_int(request, name, lo, hi)
    return default if value is None else value


def query_optional_int(request: web.Request, name: str, lo: int, hi: int) -> int | None:
    """An integer parameter in ``lo..hi``, or None when absent or empty."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    return parse_int(raw, name, lo, hi)


def query_bool(request: web.Request, name: str) -> bool:
    """``true``/``false`` (or ``1``/``0``); absent is false."""
    raw = request.query.get(name, "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise InvalidRequest(f"{name} must be true or false")
    return raw in ("true", "1")


def query_list(request: web.Request, name: str, most: int, *, required: bool = True) -> list[str]:
    """Every value of a repeated parameter: at most ``most`` of them, each bounded."""
    values = request.query.getall(name, [])
    if not values and required:
        raise InvalidRequest(f'Error: Params must have the property "{name}"')
    if len(values) > most:
        raise InvalidRequest(f"{name}: at most {most} values")
    for value in values:
        if len(value) > MAX_PARAM_CHARS:
            raise InvalidRequest(f"{name} is too long (at most {MAX_PARAM_CHARS} characters)")
        check_text(value, name)
    return values


# -- JSON bodies ------------------------------------------------------------------------


def json_depth(value: Any, limit: int) -> int:
    """How deep ``value`` nests (a scalar is 0), counted without recursion and giving
    up (returning ``limit + 1``) as soon as it is deeper than ``limit``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        if depth > limit:
            return limit + 1
        deepest = max(deepest, depth)
        stack.extend((child, depth) for child in children)
    return deepest


def parse_json_object(raw: bytes, *, max_depth: int = MAX_JSON_DEPTH) -> dict[str, Any]:
    """A JSON object from ``raw``, or :class:`InvalidRequest` saying what is wrong."""
    if not raw:
        raise InvalidRequest("request body is required")
    try:
        # orjson is strict: UTF-8 only, no lone surrogates (raw or escaped), no NaN, and
        # its own depth limit keeps the parse itself from recursing without bound.
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise InvalidRequest(f"request body is not valid JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object")
    if json_depth(data, max_depth) > max_depth:
        raise InvalidRequest(f"request body is nested more than {max_depth} deep")
    return data


async def read_json_object(request: web.Request, *, max_bytes: int | None = None) -> dict[str, Any]:
    """The request's body as a JSON object. The app's ``client_max_size`` bounds every
    body; ``max_bytes`` bounds this one tighter (checked on the declared length first)."""
    if max_bytes is not None and (request.content_length or 0) > max_bytes:
        raise RemoteProtocolError("request body is too large", error="PayloadTooLarge", status=413)
    raw = await request.read()
    if max_bytes is not None and len(raw) > max_bytes:
        raise RemoteProtocolError("request body is too large", error="PayloadTooLarge", status=413)
    return parse_json_object(raw)
