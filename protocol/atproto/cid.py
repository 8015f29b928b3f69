"""atproto content identifiers: CIDv1, sha2-256, codec dag-cbor or raw.

These are the "blessed" CIDs of the atproto data model spec: version 1, multicodec
``dag-cbor`` (``0x71``) for data objects (records, tree nodes, commits) or ``raw``
(``0x55``) for blobs, multihash sha2-256 with a 32-byte digest. The binary form is
the 36 bytes ``0x01 || codec || 0x12 0x20 || digest``; the string form is multibase
base32 lower case without padding (prefix ``b``: ``bafyrei...`` for dag-cbor,
``bafkrei...`` for raw).

Refused everywhere (binary and string): CIDv0 (``Qm...``), any other codec or hash,
a digest that is not 32 bytes, trailing bytes, any multibase other than ``b``, upper
case, padding, and a string that does not re-encode to itself.

This is a separate class from skyfed's own :class:`protocol.cid.CID` on purpose:
skyfed CIDs use the msgpack codec, and the two must never compare equal or be mixed
up by a caller.
"""

from __future__ import annotations

import base64
import hashlib

from ..errors import DecodeError, InvalidSyntax

__all__ = ["CID", "CODEC_DAG_CBOR", "CODEC_RAW", "cid_for_dag_cbor", "cid_for_raw"]

CODEC_DAG_CBOR = 0x71
CODEC_RAW = 0x55
_SHA2_256 = 0x12
_PREFIX = {
    CODEC_DAG_CBOR: bytes([0x01, CODEC_DAG_CBOR, _SHA2_256, 32]),
    CODEC_RAW: bytes([0x01, CODEC_RAW, _SHA2_256, 32]),
}
_BY_PREFIX = {v: k for k, v in _PREFIX.items()}
#: "b" + base32 of 36 bytes is 59 characters.
_STR_LENGTH = 59


class CID:
    """An atproto CID; immutable, hashable, ordered by its binary form.

    Held as its 36-byte binary form (:meth:`to_bytes`); ``bytes(cid)`` is the same.
    """

    __slots__ = ("_raw",)
    _raw: bytes

    def __init__(self, codec: int, digest: bytes):
        if codec not in _PREFIX or type(digest) is not bytes or len(digest) != 32:
            raise DecodeError("an atproto CID is CIDv1, dag-cbor or raw, sha2-256")
        object.__setattr__(self, "_raw", _PREFIX[codec] + digest)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("CID is immutable")

    @property
    def codec(self) -> int:
        return _BY_PREFIX[self._raw[:4]]

    @property
    def digest(self) -> bytes:
        return self._raw[4:]

    def __eq__(self, other: object) -> bool:
        return type(other) is CID and self._raw == other._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def __lt__(self, other: CID) -> bool:
        return self._raw < other._raw

    def __bytes__(self) -> bytes:
        # The DAG-CBOR encoder writes a link from this (tag 42 around 0x00 || bytes).
        return self._raw

    def __reduce__(self) -> tuple[object, ...]:
        return (CID.from_bytes, (self._raw,))

    def to_bytes(self) -> bytes:
        return self._raw

    @classmethod
    def from_bytes(cls, data: bytes) -> CID:
        """Parse the 36-byte binary form; anything else is a :class:`DecodeError`."""
        if type(data) is not bytes or len(data) != 36 or data[:4] not in _BY_PREFIX:
            raise DecodeError("not a CIDv1 with dag-cbor or raw codec and a sha2-256 digest")
        cid: CID = object.__new__(cls)
        object.__setattr__(cid, "_raw", data)
        return cid

    def to_str(self) -> str:
        return "b" + base64.b32encode(self._raw).decode("ascii").rstrip("=").lower()

    @classmethod
    def from_str(cls, text: str) -> CID:
        """Parse the base32 string form; anything else is an :class:`InvalidSyntax`."""
        if not isinstance(text, str) or len(text) != _STR_LENGTH or text[0] != "b":
            raise InvalidSyntax("an atproto CID string is 'b' + 58 base32 characters")
        body = text[1:]
        if body != body.lower():
            raise InvalidSyntax("CID string must be lower case")
        try:
            raw = base64.b32decode(body.upper() + "=" * (-len(body) % 8))
        except ValueError as e:
            raise InvalidSyntax("CID string is not valid base32") from e
        try:
            cid = cls.from_bytes(raw)
        except DecodeError as e:
            raise InvalidSyntax(f"invalid CID: {e.message}") from e
        if cid.to_str() != text:  # non-zero padding bits in the last character
            raise InvalidSyntax("CID string is not in canonical form")
        return cid

    def __str__(self) -> str:
        return self.to_str()

    def __repr__(self) -> str:
        return f"CID({self.to_str()!r})"


def cid_for_dag_cbor(block: bytes) -> CID:
    """The CID of an encoded DAG-CBOR block (the hash of exactly these bytes)."""
    return CID(CODEC_DAG_CBOR, hashlib.sha256(block).digest())


def cid_for_raw(blob: bytes) -> CID:
    """The CID of a blob."""
    return CID(CODEC_RAW, hashlib.sha256(blob).digest())
