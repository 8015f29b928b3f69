"""Canonical msgpack: exactly one encoding for every value.

skyfed stores and signs msgpack where atproto uses DAG-CBOR. For content addressing
and signatures to work, every value must have exactly one byte form, so this module
encodes with these rules and its decoder refuses anything else:

* values are ``None``, ``bool``, ``int`` (signed 64-bit), ``str``, ``bytes``, ``list``
  and ``dict`` with ``str`` keys -- no floats, no ext types, no other key types;
* integers in their shortest form (non-negative ones in the positive fixint / uint
  family, negative ones in the negative fixint / int family);
* strings as valid UTF-8 ``str`` (shortest str8/16/32 header), bytes as ``bin``; a
  Python string holding a lone surrogate (JSON's ``"\ud800"`` escape makes one) is
  not text and is refused, as a map key too;
* map keys unique and sorted by their UTF-8 bytes;
* no trailing bytes, nesting at most :data:`MAX_DEPTH`, input at most ``max_size``.

Because every accepted input is re-encoded and compared byte for byte,
``encode(decode(b)) == b`` for every ``b`` that :func:`decode` accepts. Signatures
and CIDs are always computed over the bytes carried, never over a re-encoding.
"""

from __future__ import annotations

import threading
from typing import Any, TypeAlias

import msgpack
import msgspec

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
# value (0xc7-0xc9, 0xd4-0xd8), a map (0x80-0x8f, 0xde, 0xdf) or an array (0x90-0x9f,
# 0xdc, 0xdd). Scanning a document for them at C speed lets the common case skip the
# Python walk: if none of the first three occur, there is no float, ext value or
# out-of-range integer; if fewer container markers occur than MAX_DEPTH, nesting is
# within bounds. (A marker byte inside a string only sends the document to the walk.)
_EXT_MARKERS = (0xC7, 0xC8, 0xC9, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8)
_MARKERS = bytes([0xCA, 0xCB, 0xCF, *_EXT_MARKERS, *range(0x80, 0xA0), 0xDC, 0xDD, 0xDE, 0xDF])
_NOT_MARKERS = bytes(b for b in range(256) if b not in _MARKERS)
_BAD_MARKERS = frozenset([0xCA, 0xCB, 0xCF, *_EXT_MARKERS])
_SCALARS = frozenset([str, bytes, bool, type(None)])


# msgspec's encoder with ``order="sorted"`` writes every map's keys sorted (by code
# point, which is UTF-8 byte order), refuses non-string keys, and otherwise writes the
# same shortest forms as msgpack; all at C speed. So "the sorted encoding of the
# decoded value equals the input" checks minimal forms and key order in the whole
# document at once. What it does not refuse (floats, unsigned 64-bit integers, deep
# nesting) shows up in the marker scan below. Encoders keep no state between calls,
# so one shared instance is safe across threads.
_SORTED = msgspec.msgpack.Encoder(order="sorted")


def _refuse_ext(code: int, data: memoryview) -> Any:
    raise DecodeError(f"ext type {code} is not allowed")


# msgspec's untyped decoder gives the model's types (and floats, and a datetime for
# the timestamp ext -1, which the checks refuse); every other ext type is refused here.
_DECODER = msgspec.msgpack.Decoder(ext_hook=_refuse_ext)
_PLAIN = msgspec.msgpack.Encoder()
_ENCODE_ERRORS = (TypeError, ValueError, OverflowError, RecursionError)
#: Past this size the scan costs more than the walk (and bin payloads nearly always
#: hold a marker byte by chance), so larger documents go straight to the walk.
_SCAN_MAX = 512
#: Per-thread strict-types packers (see :func:`_gate`); a cache, not shared state.
_local = threading.local()


def _scan_ok(data: bytes) -> bool:
    """True when a byte scan of a sorted-key encoding shows it is within the model:
    no float, unsigned 64-bit integer or ext marker, and fewer container markers
    than MAX_DEPTH (so nesting is within bounds). False means "look closer": the
    marker bytes may just be inside a string, or the document is too large to scan."""
    if len(data) > _SCAN_MAX:
        return False
    markers = data.translate(None, _NOT_MARKERS)
    return not markers or (len(markers) < MAX_DEPTH and _BAD_MARKERS.isdisjoint(markers))


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
    # Fast path: a strict-types msgpack packer refuses every type outside the
    # model's (bar floats and unsigned 64-bit integers); the sorted encoding of what
    # it accepts is canonical once the scan, or failing that the model walk, shows
    # no float, large integer or deep nesting. Anything else (tuples, bytearray,
    # subclasses, errors) takes the exact path, which converts or refuses.
    try:
        _gate().pack(value)
        data: bytes = _SORTED.encode(value)
    except _ENCODE_ERRORS:
        pass
    else:
        if _scan_ok(data):
            return data
        try:
            _check(value)
        except DecodeError:
            pass
        else:
            return data
    try:
        return msgpack.packb(_canonical(value, 0))  # type: ignore[no-any-return]
    except UnicodeEncodeError as e:
        # Sorting map keys by their UTF-8 or packing a string met a lone surrogate.
        raise LocalProtocolError(
            "a string is not valid Unicode text (it holds a lone surrogate)"
        ) from e


def _gate() -> msgpack.Packer:
    """This thread's strict-types packer (a Packer keeps a buffer while it packs, so
    threads do not share one; building one per call costs as much as packing)."""
    packer: msgpack.Packer | None = getattr(_local, "packer", None)
    if packer is None:
        packer = msgpack.Packer(strict_types=True)
        _local.packer = packer
    return packer


def _check(value: Any) -> None:
    """Walk a document whose sorted encoding is known (so every map key is a string,
    in order): refuse floats, integers outside the signed 64-bit range, other types,
    and nesting deeper than MAX_DEPTH. Iterative, so deep input cannot exhaust
    Python's stack."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    pop = stack.pop
    push = stack.append
    while stack:
        v, depth = pop()
        t = type(v)
        if t is dict:
            if depth >= MAX_DEPTH:
                raise DecodeError(f"nested deeper than {MAX_DEPTH}")
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
            if ti is bytes or ti is str:
                continue
            if ti is dict or ti is list:
                push((item, depth + 1))
            elif ti is int:
                if not _INT_MIN <= item <= _INT_MAX:
                    raise DecodeError("integer out of the signed 64-bit range")
            elif ti not in _SCALARS:
                # floats, and msgpack's Timestamp (ext -1 skips the ext hook)
                raise DecodeError(f"{ti.__name__} values are not allowed")


def decode(data: bytes, *, max_size: int = MAX_SIZE) -> Value:
    """Decode one canonical document, refusing anything non-canonical.

    Raises :class:`DecodeError` (a remote error) and nothing else.
    """
    data = _as_bytes(data, max_size)
    value = _unpack(data)
    try:
        again = _SORTED.encode(value)
    except _ENCODE_ERRORS as e:
        # non-string map keys, msgpack's Timestamp, integers out of every range
        raise DecodeError(f"not representable in the model: {e}") from e
    if again != data:
        # Same value, different bytes: keys out of order, a non-shortest width, a
        # str/bin mix-up, a duplicate key (later one wins in the dict)...
        raise DecodeError("not canonical: the value has a different canonical encoding")
    if not _scan_ok(data):
        _check(value)
    return value  # type: ignore[no-any-return]


def _as_bytes(data: bytes, max_size: int) -> bytes:
    if type(data) is not bytes:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise DecodeError("expected bytes")
        data = bytes(data)
    if len(data) > max_size:
        raise DecodeError(f"document of {len(data)} bytes exceeds the {max_size}-byte limit")
    return data


def _unpack(data: bytes) -> Any:
    try:
        return _DECODER.decode(data)
    except DecodeError:
        raise
    except (ValueError, TypeError, RecursionError) as e:
        # msgspec.DecodeError (malformed, truncated, trailing bytes) is a ValueError,
        # and so is UnicodeDecodeError for invalid UTF-8 text.
        raise DecodeError(f"not valid msgpack: {e}") from e
    except Exception as e:  # pragma: no cover - be sure nothing else escapes
        raise DecodeError(f"not valid msgpack: {type(e).__name__}") from e


def decode_unchecked(data: bytes, *, max_size: int = MAX_SIZE) -> Any:
    """Decode and require that the value re-encodes to exactly ``data``, but leave
    the model's rules (types, key order, depth) to the caller: for decoders that
    check an exact schema themselves (commits, events), where a second walk is waste.
    That includes each integer's range: the decoder takes a uint64 (marker ``cf``)
    above 2^63-1, which the data model refuses, so a schema that admits an integer
    must bound it (``Commit`` admits only ``version``, ``CommitEvent`` only ``seq``;
    both are bounded, and ``commit_events.json`` has ``seq-over-int64``). Walking
    every event here for the rare ``cf`` cost about 5% of event verification."""
    data = _as_bytes(data, max_size)
    value = _unpack(data)
    try:
        again = _PLAIN.encode(value)
    except _ENCODE_ERRORS as e:
        raise DecodeError(f"not representable: {e}") from e
    if again != data:
        raise DecodeError("not canonical: the value has a different canonical encoding")
    return value
