"""The JSON form of the data model, as atproto's HTTP APIs carry records.

JSON and canonical msgpack hold the same values with one difference: JSON has no
byte strings, so bytes travel as ``{"$bytes": "<base64, no padding>"}``. Links
(``{"$link": "<cid>"}``) are plain maps in both forms. Refuses what the data model
lacks: floats (JSON numbers with a fraction or exponent arrive as floats), integers
outside the signed 64-bit range, malformed ``$bytes`` objects, nesting deeper than
:data:`~protocol.encoding.MAX_DEPTH`.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from .encoding import MAX_DEPTH, Value
from .errors import InvalidRecord

__all__ = ["from_json", "to_json"]

_INT_MIN = -(2**63)
_INT_MAX = 2**63 - 1


def from_json(value: Any, *, path: str = "", depth: int = 0) -> Value:
    """Convert decoded JSON to the data model. Raises InvalidRecord naming the path."""
    if value is None or value is True or value is False or type(value) is str:
        return value
    if type(value) is int:
        if not _INT_MIN <= value <= _INT_MAX:
            raise InvalidRecord("integer out of the signed 64-bit range", field=path)
        return value
    if type(value) is float:
        raise InvalidRecord("floats are not allowed in records", field=path)
    if depth >= MAX_DEPTH:
        raise InvalidRecord(f"nested deeper than {MAX_DEPTH}", field=path)
    if type(value) is list:
        return [from_json(v, path=f"{path}[{i}]", depth=depth + 1) for i, v in enumerate(value)]
    if type(value) is dict:
        if "$bytes" in value:
            raw = value["$bytes"]
            if len(value) != 1 or type(raw) is not str:
                raise InvalidRecord("a $bytes object has exactly one string field", field=path)
            try:
                return base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
            except (binascii.Error, ValueError) as e:
                raise InvalidRecord("$bytes is not valid base64", field=path) from e
        out: dict[str, Value] = {}
        for k, v in value.items():
            out[k] = from_json(v, path=f"{path}.{k}" if path else k, depth=depth + 1)
        return out
    raise InvalidRecord(f"unsupported JSON value of type {type(value).__name__}", field=path)


def to_json(value: Value) -> Any:
    """Convert a data-model value to JSON-ready Python values."""
    if type(value) is bytes:
        return {"$bytes": base64.b64encode(value).decode("ascii").rstrip("=")}
    if type(value) is list:
        return [to_json(v) for v in value]
    if type(value) is dict:
        return {k: to_json(v) for k, v in value.items()}
    return value
