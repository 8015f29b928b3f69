"""Canonical msgpack: exactly one encoding for every value.

skyfed stores and signs msgpack where atproto uses DAG-CBOR. For content addressing
and signatures to work, every value must have exactly one byte form, so this module
encodes with these rules and its decoder refuses anything else:

* values are ``None``, ``bool``, ``int`` (signed 64-bit), ``str``, ``bytes``, ``list``
  and ``dict`` with ``str`` keys -- no floats, no ext types, no other key types;
* integers in their shortest form (non-negative ones in the positive fixint / uint
  family, negative ones in the negative fixint / int family);
* strings as valid UTF-8 ``str`` (shortest str8/16/32 header), bytes as ``bin``;
* map keys unique and sorted by their UTF-8 bytes;
* no trailing bytes, nesting at most :data:`MAX_DEPTH`, input at most ``max_size``.

Because every accepted input is re-encoded and compared byte for byte,
``encode(decode(b)) == b`` for every ``b`` that :func:`decode` accepts. Signatures
and CIDs are always computed over the bytes carried, never over a re-encoding.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import msgpack

from .errors import DecodeError, LocalProtocolError

__all__ = ["MAX_DEPTH", "MAX_SIZE", "Value", "decode", "decode_unchecked", "encode"]

#: The data model: what a canonical msgpack document may hold.
Value: TypeAlias = bool | int | str | bytes | list["Value"] | dict[str, "Value"] | None

#: Deepest nesting of lists and maps accepted (a record nested deeper is abuse).
MAX_DEPTH = 32
#: Default bound on one encoded document (atproto's record limit is 1 MB; a whole
#: frame may be 5 MB and passes its own bound).
MAX_SIZE = 5 * 1024 * 1024

_INT_MIN = -(2**63)
_INT_MAX = 2**63 - 1


def _sort_key(item: tuple[str, Any]) -> bytes:
    return item[0].encode("utf-8")


# Bytes that can start a float (0xca, 0xcb), an unsigned 64-bit integer (0xcf), an ext
# value (0xc7-0xc9, 0xd4-0xd8), a map
# (0x80-0x8f, 0xde, 0xdf) or an array (0x90-0x9f, 0xdc, 0xdd). Scanning a document for
# them at C speed lets the common case (a flat record) skip the Python walk: if none
# of the first three occur, there is no float and no out-of-range integer; if at most
# one map marker occurs, only the top-level map's key order needs a look; if fewer
# container markers occur than MAX_DEPTH, nesting is within bounds.
_EXT_MARKERS = (0xC7, 0xC8, 0xC9, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8)
_MARKERS = bytes([0xCA, 0xCB, 0xCF, *_EXT_MARKERS, *range(0x80, 0xA0), 0xDC, 0xDD, 0xDE, 0xDF])
_NOT_MARKERS = bytes(b for b in range(256) if b not in _MARKERS)
_MAP_MARKERS = frozenset([*range(0x80, 0x90), 0xDE, 0xDF])
_BAD_MARKERS = frozenset([0xCA, 0xCB, 0xCF, *_EXT_MARKERS])
_SCALARS = frozenset([str, bytes, bool, type(None)])


def _fast_ok(data: bytes, value: Any) -> bool:
    """True when a byte scan alone shows that ``value`` (which ``data`` encodes) is
    within the model and canonical, but for the top-level map's key order, which this
    checks too."""
    markers = data.translate(None, _NOT_MARKERS)
    if not markers:
        return True
    if len(markers) >= MAX_DEPTH or not _BAD_MARKERS.isdisjoint(markers):
        return False
    # The document's first byte is the top-level header; any map marker after it
    # might be a nested map, whose key order only the walk checks.
    if not _MAP_MARKERS.isdisjoint(markers[1:]):
        return False
    if type(value) is not dict:
        return True
    keys = list(value)
    try:
        return keys == sorted(keys) and (not keys or type(keys[0]) is str)
    except TypeError:  # keys of mixed types
        return False


def _canonical(value: Any, depth: int) -> Any:
    """Return ``value`` with every map's keys sorted; refuse what the model lacks."""
    # bool before int: bool is an int subclass but encodes as true/false.
    if value is None or value is True or value is False:
        return value
    t = type(value)
    if t is str or t is bytes:
        return value
    if t is int:
        if not _INT_MIN <= value <= _INT_MAX:
            raise LocalProtocolError(f"integer out of the signed 64-bit range: {value}")
        return value
    if depth >= MAX_DEPTH:
        raise LocalProtocolError(f"value nested deeper than {MAX_DEPTH}")
    if t is list or t is tuple:
        return [_canonical(v, depth + 1) for v in value]
    if t is dict:
        for k in value:
            if type(k) is not str:
                raise LocalProtocolError(f"map key is not a string: {k!r}")
        items = sorted(value.items(), key=_sort_key)
        return {k: _canonical(v, depth + 1) for k, v in items}
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise LocalProtocolError(f"cannot encode a {t.__name__} in canonical msgpack")


def encode(value: Value) -> bytes:
    """Encode ``value`` canonically. Raises LocalProtocolError for unencodable input."""
    if type(value) is dict:
        # Fast path: pack as is, and keep the result if a scan shows it canonical.
        try:
            data: bytes = msgpack.packb(value)
        except (TypeError, ValueError, OverflowError):
            pass
        else:
            if _fast_ok(data, value):
                return data
    return msgpack.packb(_canonical(value, 0))  # type: ignore[no-any-return]


def _refuse_ext(code: int, data: bytes) -> Any:
    raise DecodeError(f"ext type {code} is not allowed")


def _check(value: Any) -> None:
    """Walk a decoded document: types, key order, depth. Iterative, so deep input
    cannot exhaust Python's stack."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    pop = stack.pop
    push = stack.append
    while stack:
        v, depth = pop()
        t = type(v)
        if t is dict:
            if depth >= MAX_DEPTH:
                raise DecodeError(f"nested deeper than {MAX_DEPTH}")
            keys = list(v)
            try:
                ordered = keys == sorted(keys)
            except TypeError:
                ordered = False
            if not ordered or (keys and type(keys[0]) is not str):
                raise DecodeError("map keys are not strings in canonical order")
            items: Any = v.values()
        elif t is list:
            if depth >= MAX_DEPTH:
                raise DecodeError(f"nested deeper than {MAX_DEPTH}")
            items = v
        else:
            items = (v,)
            depth -= 1
        for item in items:
            ti = type(item)
            if ti is dict or ti is list:
                push((item, depth + 1))
            elif ti is int:
                if item > _INT_MAX:
                    raise DecodeError("integer out of the signed 64-bit range")
            elif ti not in _SCALARS:
                # floats, and msgpack's Timestamp (ext -1 skips the ext hook)
                raise DecodeError(f"{ti.__name__} values are not allowed")


def decode(data: bytes, *, max_size: int = MAX_SIZE) -> Value:
    """Decode one canonical document, refusing anything non-canonical.

    Raises :class:`DecodeError` (a remote error) and nothing else.
    """
    value = decode_unchecked(data, max_size=max_size)
    if not _fast_ok(data, value):
        _check(value)
    return value  # type: ignore[no-any-return]


def decode_unchecked(data: bytes, *, max_size: int = MAX_SIZE) -> Any:
    """Decode and require that the value re-encodes to exactly ``data``, but leave
    the model's rules (types, key order, depth) to the caller: for decoders that
    check an exact schema themselves (tree nodes), where a second walk is waste."""
    if type(data) is not bytes:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise DecodeError("expected bytes")
        data = bytes(data)
    if len(data) > max_size:
        raise DecodeError(f"document of {len(data)} bytes exceeds the {max_size}-byte limit")
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            ext_hook=_refuse_ext,
            timestamp=0,
        )
    except DecodeError:
        raise
    except msgpack.ExtraData as e:
        raise DecodeError("trailing bytes after the document") from e
    except (ValueError, TypeError, UnicodeDecodeError, RecursionError) as e:
        # msgpack raises ValueError subclasses (FormatError, StackError, OutOfData
        # is a ValueError too) and UnicodeDecodeError for invalid UTF-8 text.
        raise DecodeError(f"not valid msgpack: {e}") from e
    except Exception as e:  # pragma: no cover - msgpack's exception set is not typed
        raise DecodeError(f"not valid msgpack: {type(e).__name__}") from e
    try:
        again = msgpack.packb(value)
    except (OverflowError, ValueError, TypeError) as e:
        raise DecodeError(f"not representable: {e}") from e
    if again != data:
        # Same value, different bytes: a non-shortest width, a str/bin mix-up, a
        # duplicate key (later one wins in the dict), an unsigned 64-bit integer...
        raise DecodeError("not canonical: the value has a different canonical encoding")
    return value
