"""DAG-CBOR with the strictness of the atproto data model, and its JSON form.

Bytes are parsed by ``cbrrr`` (a C DAG-CBOR codec written for atproto), which already
refuses: map keys that are not text or not in canonical order (length first, then
bytewise) or repeated; integers, lengths and tags that are not minimally encoded;
indefinite lengths; any tag but 42; a tag 42 that is not a byte string starting with
the ``0x00`` multibase prefix; ``undefined`` and the other simple values; half
floats; text that is not UTF-8; truncation and trailing bytes. It builds nested
values with a heap stack, so deep nesting cannot exhaust the C stack.

On top of it this module refuses what the atproto data model forbids and generic
DAG-CBOR allows:

* floats (``cbrrr`` decodes 64-bit floats; atproto has none);
* integers outside the signed 64-bit range (CBOR reaches ``-2^64``..``2^64-1``);
* links that are not atproto CIDs (:mod:`.cid`: v1, dag-cbor or raw, sha2-256);
* input over ``max_size`` bytes (checked before parsing) and nesting deeper than
  ``max_depth`` (checked on the result, with a loop, not recursion).

Why not ``libipld`` (already installed with the ``atproto`` SDK): it decodes a link
to plain ``bytes``, so a link and a byte string look the same to the caller, and its
encoder turns any byte string that parses as a CID into a link; it also accepts
floats, non-minimal integers and integers outside 64 bits.

Values are plain Python: ``None``, ``bool``, ``int``, ``str``, ``bytes``,
:class:`~.cid.CID`, ``list`` and ``dict`` with ``str`` keys (:data:`Value`).

The JSON form (``{"$link": ...}`` for a CID, ``{"$bytes": ...}`` for bytes, unpadded
standard base64) is read by :func:`from_json` and written by :func:`to_json`.
:func:`check_data_model` applies the data-model rules on ``$type`` and blobs that
the interop vectors check (``data-model-valid.json`` / ``-invalid.json``).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from typing import Any, cast

import cbrrr

from ..errors import DecodeError, LocalProtocolError
from .cid import CID, CODEC_RAW

__all__ = [
    "MAX_BLOCK",
    "MAX_DEPTH",
    "Value",
    "check_data_model",
    "decode",
    "decode_many",
    "encode",
    "from_json",
    "to_json",
]

Value = None | bool | int | str | bytes | CID | list["Value"] | dict[str, "Value"]

#: Default bound on one encoded object (a record is at most 1 MiB in atproto; a
#: commit event's whole ``blocks`` field at most 2 MB).
MAX_BLOCK = 2 * 1024 * 1024
#: Default bound on nesting (records nest a handful of levels; 64 is generous).
MAX_DEPTH = 64
_INT_MIN = -(2**63)
_INT_MAX = 2**63 - 1


def _make_cid(raw: bytes) -> CID:
    # cbrrr calls this with the tag-42 bytes after the 0x00 prefix.
    return CID.from_bytes(raw)


def _check(value: object, max_depth: int, remote: bool) -> None:
    """Walk ``value`` (a loop, not recursion): no floats, 64-bit ints, bounded depth."""
    err: type[Exception] = DecodeError if remote else LocalProtocolError
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        t = type(item)
        if t is dict:
            if depth > max_depth:
                raise err(f"nested deeper than {max_depth}")
            for k, v in cast(dict[object, object], item).items():
                if type(k) is not str:
                    raise err("map keys must be strings")
                stack.append((v, depth + 1))
        elif t is list:
            if depth > max_depth:
                raise err(f"nested deeper than {max_depth}")
            stack.extend((v, depth + 1) for v in cast(list[object], item))
        elif t is int:
            if not _INT_MIN <= cast(int, item) <= _INT_MAX:
                raise err("integer outside the signed 64-bit range")
        elif t is str or t is bytes or t is bool or t is CID or item is None:
            continue
        elif t is float:
            raise err("floats are not part of the atproto data model")
        else:
            raise err(f"{t.__name__} is not part of the atproto data model")


def decode(
    data: bytes,
    *,
    max_size: int = MAX_BLOCK,
    max_depth: int = MAX_DEPTH,
    shape_checked: bool = False,
) -> Value:
    """Decode exactly one strict DAG-CBOR object; raise :class:`DecodeError` otherwise.

    ``shape_checked=True`` skips the walk for floats, int64 and depth: only for a
    caller that checks the exact type of every value it accepts (the MST node and
    commit parsers do, and refuse any nested or float value), since the walk is most
    of the cost of decoding a tree node.
    """
    if type(data) is not bytes:
        raise DecodeError("DAG-CBOR input must be bytes")
    if len(data) > max_size:
        raise DecodeError(f"DAG-CBOR object of {len(data)} bytes is over {max_size}")
    try:
        value = cbrrr.decode_dag_cbor(data, cid_ctor=_make_cid)
    except DecodeError:
        raise
    except (ValueError, TypeError, OverflowError) as e:  # CbrrrDecodeError, UTF-8
        raise DecodeError(f"not strict DAG-CBOR: {e}") from e
    if not shape_checked:
        _check(value, max_depth, remote=True)
    return cast(Value, value)


def decode_many(
    data: bytes, count: int, *, max_size: int = MAX_BLOCK, max_depth: int = MAX_DEPTH
) -> list[Value]:
    """Decode exactly ``count`` objects written back to back (a firehose frame is a
    header and a body in one message); nothing may follow the last."""
    if type(data) is not bytes:
        raise DecodeError("DAG-CBOR input must be bytes")
    if len(data) > max_size:
        raise DecodeError(f"DAG-CBOR input of {len(data)} bytes is over {max_size}")
    out: list[Value] = []
    try:
        items: Iterator[Any] = cbrrr.decode_multi_dag_cbor_in_violation_of_the_spec(
            data, cid_ctor=_make_cid
        )
        for value in items:
            if len(out) == count:
                raise DecodeError(f"more than {count} DAG-CBOR objects")
            _check(value, max_depth, remote=True)
            out.append(cast(Value, value))
    except DecodeError:
        raise
    except (ValueError, TypeError, OverflowError, AssertionError) as e:
        raise DecodeError(f"not strict DAG-CBOR: {e}") from e
    if len(out) != count:
        raise DecodeError(f"expected {count} DAG-CBOR objects, got {len(out)}")
    return out


def encode(value: Value, *, max_depth: int = MAX_DEPTH, trusted: bool = False) -> bytes:
    """Encode a data-model value canonically (sorted keys, minimal lengths).

    A value outside the data model (a float, a huge int, a non-string key, any other
    type) is a bug in the caller: :class:`LocalProtocolError`. ``trusted=True``
    skips that walk, for the shapes this package builds itself from checked parts
    (tree nodes, commits): it is most of the cost of encoding a tree node.
    """
    if not trusted:
        _check(value, max_depth, remote=False)
    try:
        return cbrrr.encode_dag_cbor(cast(Any, value), cid_type=CID)
    except (ValueError, TypeError, OverflowError) as e:
        raise LocalProtocolError(f"cannot encode as DAG-CBOR: {e}") from e


# -- the JSON form ---------------------------------------------------------------


def _b64decode(text: str) -> bytes:
    # atproto writes unpadded standard base64; accept exactly that (and re-check).
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as e:
        raise DecodeError("$bytes is not base64") from e
    if base64.b64encode(raw).decode("ascii").rstrip("=") != text:
        raise DecodeError("$bytes is not canonical unpadded base64")
    return raw


def from_json(obj: object, *, max_depth: int = MAX_DEPTH) -> Value:
    """Convert parsed JSON (``json.loads`` output) to a data-model value.

    ``{"$link": "b..."}`` becomes a :class:`CID`, ``{"$bytes": "..."}`` bytes; both
    must have no other key. Floats are refused unless they are integral (the
    vectors call ``123.0`` valid: JavaScript has no separate integer type). The
    result is checked with :func:`check_data_model`.
    """
    value = _from_json(obj, 1, max_depth)
    check_data_model(value)
    return value


def _from_json(obj: object, depth: int, max_depth: int) -> Value:
    if depth > max_depth:
        raise DecodeError(f"nested deeper than {max_depth}")
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        if not _INT_MIN <= obj <= _INT_MAX:
            raise DecodeError("integer outside the signed 64-bit range")
        return obj
    if isinstance(obj, float):
        if not obj.is_integer() or not _INT_MIN <= obj <= _INT_MAX:
            raise DecodeError("floats are not part of the atproto data model")
        return int(obj)
    if isinstance(obj, list):
        return [_from_json(v, depth + 1, max_depth) for v in obj]
    if isinstance(obj, dict):
        if "$link" in obj:
            link = obj["$link"]
            if len(obj) != 1 or not isinstance(link, str):
                raise DecodeError("$link must be the only key and a string")
            try:
                return CID.from_str(link)
            except Exception as e:
                raise DecodeError(f"$link is not an atproto CID: {link[:80]!r}") from e
        if "$bytes" in obj:
            raw = obj["$bytes"]
            if len(obj) != 1 or not isinstance(raw, str):
                raise DecodeError("$bytes must be the only key and a string")
            return _b64decode(raw)
        out: dict[str, Value] = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise DecodeError("object keys must be strings")
            out[k] = _from_json(v, depth + 1, max_depth)
        return out
    raise DecodeError(f"{type(obj).__name__} is not JSON data")


def to_json(value: Value) -> object:
    """The JSON form of a data-model value (for ``json.dumps``)."""
    if isinstance(value, CID):
        return {"$link": value.to_str()}
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode("ascii").rstrip("=")}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    return value


_BLOB_KEYS = frozenset({"$type", "ref", "mimeType", "size"})


def check_data_model(value: Value) -> None:
    """The data-model rules beyond types: the top level is a map; a ``$type`` is a
    non-empty string; a ``$type: "blob"`` map is exactly ``{$type, ref (raw CID),
    mimeType (non-empty string), size (int >= 0)}``. Raises :class:`DecodeError`."""
    if not isinstance(value, dict):
        raise DecodeError("top level must be a map")
    stack: list[Value] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            if "$type" in item:
                t = item["$type"]
                if not isinstance(t, str) or not t:
                    raise DecodeError("$type must be a non-empty string")
                if t == "blob":
                    _check_blob(item)
            stack.extend(item.values())


def _check_blob(blob: dict[str, Value]) -> None:
    if set(blob) != _BLOB_KEYS:
        raise DecodeError("a blob is exactly {$type, ref, mimeType, size}")
    ref, mime, size = blob["ref"], blob["mimeType"], blob["size"]
    if not isinstance(ref, CID) or ref.codec != CODEC_RAW:
        raise DecodeError("a blob's ref must be a raw-codec CID")
    if not isinstance(mime, str) or not mime:
        raise DecodeError("a blob's mimeType must be a non-empty string")
    if type(size) is not int or size < 0:
        raise DecodeError("a blob's size must be a non-negative integer")
