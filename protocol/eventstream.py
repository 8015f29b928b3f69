"""Event stream frames, as ``com.atproto.sync.subscribeRepos`` carries them.

A frame is two canonical msgpack documents back to back (atproto uses two DAG-CBOR
objects): a header, then a body. A message frame's header is ``{"op": 1, "t":
"#commit"}`` (or ``#identity``, ``#account``, ``#sync``, ``#info``); an error frame's
header is ``{"op": -1}`` and its body ``{"error", "message"}``. :func:`decode_frame`
refuses a frame that is not exactly two such maps, or whose header is malformed.
"""

from __future__ import annotations

from typing import Any

import msgpack

from .encoding import MAX_SIZE, Value, decode, encode
from .errors import DecodeError

__all__ = ["decode_frame", "encode_error_frame", "encode_frame"]


def encode_frame(kind: str, body: dict[str, Value]) -> bytes:
    """A message frame: header ``{op: 1, t: kind}`` then the body."""
    return encode({"op": 1, "t": kind}) + encode(body)


def encode_error_frame(error: str, message: str) -> bytes:
    return encode({"op": -1}) + encode({"error": error, "message": message})


def decode_frame(data: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split and check a frame: (header, body). Raises DecodeError."""
    if len(data) > MAX_SIZE:
        raise DecodeError("frame exceeds the 5 MB limit")
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=len(data) + 1)
    try:
        unpacker.feed(data)
        unpacker.skip()
        split = unpacker.tell()
    except (ValueError, msgpack.OutOfData) as e:
        raise DecodeError(f"frame has no complete header: {e}") from e
    header = decode(data[:split])
    body = decode(data[split:])
    if type(header) is not dict or type(body) is not dict:
        raise DecodeError("frame header and body must be maps")
    op = header.get("op")
    if type(op) is not int:  # True == 1 and False == 0 in Python
        raise DecodeError("frame op must be 1 or -1")
    if op == 1:
        if set(header) != {"op", "t"} or type(header["t"]) is not str:
            raise DecodeError("message frame header must be {op: 1, t}")
    elif op == -1:
        if set(header) != {"op"}:
            raise DecodeError("error frame header must be {op: -1}")
    else:
        raise DecodeError("frame op must be 1 or -1")
    return header, body
