"""Content identifiers: CIDv1 with a sha2-256 multihash.

Two codecs are used: MessagePack (multicodec ``0x0201``) for records, tree nodes,
commits, identity ops and labels, and raw (``0x55``) for blobs. The binary form is
``varint(1) || varint(codec) || 0x12 0x20 || digest``; the string form is multibase
base32 lower-case without padding (prefix ``b``), so every CID we produce passes the
atproto CID syntax. Anything else (CIDv0, other hashes, truncated digests) is refused.
"""

from __future__ import annotations

import base64
import hashlib

from .errors import DecodeError, InvalidSyntax

__all__ = [
    "BINARY_PREFIXES",
    "CID",
    "CODEC_MSGPACK",
    "CODEC_RAW",
    "cid_for_msgpack",
    "cid_for_raw",
]

CODEC_MSGPACK = 0x0201
CODEC_RAW = 0x55
_SHA2_256 = 0x12
_CODECS = frozenset({CODEC_MSGPACK, CODEC_RAW})
# varint(1) + varint(codec) + multihash header, precomputed per codec.
_PREFIX = {
    CODEC_MSGPACK: bytes([0x01, 0x81, 0x04, _SHA2_256, 32]),
    CODEC_RAW: bytes([0x01, CODEC_RAW, _SHA2_256, 32]),
}
_BY_PREFIX = {v: k for k, v in _PREFIX.items()}
#: What precedes the 32-byte digest in the binary form of every CID we accept: a
#: byte string ``b`` is a CID's binary form exactly when ``b[:-32]`` is one of these
#: (so it is 36 or 37 bytes long).
BINARY_PREFIXES = frozenset(_BY_PREFIX)
_MAX_STR = 128


class CID:
    """A CIDv1 with a sha2-256 digest; immutable, hashable, ordered by its binary form.

    Held as its binary form only: trees decode thousands of CIDs per commit, so
    building one from bytes must cost no more than a prefix check.
    """

    # _str (the string form) is set on the first to_str(), left unset until then:
    # one attribute set less for the thousands of CIDs never printed.
    __slots__ = ("_raw", "_str")
    _raw: bytes
    _str: str

    def __init__(self, codec: int, digest: bytes):
        if codec not in _CODECS or type(digest) is not bytes or len(digest) != 32:
            raise DecodeError("CID must be CIDv1, msgpack or raw codec, sha2-256")
        object.__setattr__(self, "_raw", _PREFIX[codec] + digest)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("CID is immutable")

    @property
    def codec(self) -> int:
        return _BY_PREFIX[self._raw[:-32]]

    @property
    def digest(self) -> bytes:
        return self._raw[-32:]

    def __eq__(self, other: object) -> bool:
        return type(other) is CID and self._raw == other._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def __lt__(self, other: CID) -> bool:
        return self._raw < other._raw

    def __reduce__(self) -> tuple[object, ...]:
        return (CID.from_bytes, (self._raw,))

    # -- binary -----------------------------------------------------------------
    def to_bytes(self) -> bytes:
        return self._raw

    @classmethod
    def from_bytes(cls, data: bytes) -> CID:
        return from_bytes(data)

    # -- string -----------------------------------------------------------------
    def to_str(self) -> str:
        # Memoised: views print the same CIDs over and over, and base32 is slow.
        try:
            return self._str
        except AttributeError:
            text = "b" + base64.b32encode(self._raw).decode("ascii").rstrip("=").lower()
            object.__setattr__(self, "_str", text)
            return text

    @classmethod
    def from_str(cls, text: str) -> CID:
        if not isinstance(text, str) or not 2 <= len(text) <= _MAX_STR:
            raise InvalidSyntax("CID string has the wrong length")
        if text[0] != "b":
            raise InvalidSyntax("CID string must be multibase base32 lower case ('b...')")
        body = text[1:].upper()
        try:
            raw = base64.b32decode(body + "=" * (-len(body) % 8))
        except ValueError as e:
            raise InvalidSyntax("CID string is not valid base32") from e
        try:
            cid = cls.from_bytes(raw)
        except DecodeError as e:
            raise InvalidSyntax(f"invalid CID: {e.message}") from e
        if cid.to_str() != text:
            raise InvalidSyntax("CID string is not in canonical form")
        return cid

    def __str__(self) -> str:
        return self.to_str()

    def __repr__(self) -> str:
        return f"CID({self.to_str()!r})"


def from_bytes(
    data: bytes,
    _new: object = object.__new__,
    _set: object = object.__setattr__,
    _prefixes: object = _BY_PREFIX,
) -> CID:
    """:meth:`CID.from_bytes` as a plain function: trees build thousands of CIDs per
    commit, and the method lookup and attribute setting are most of the cost."""
    # data[:-32] is the whole prefix (and only a known one passes): so exactly
    # 36 or 37 bytes.
    if type(data) is not bytes or data[:-32] not in _prefixes:  # type: ignore[operator]
        raise DecodeError("not a CIDv1 with msgpack or raw codec and a sha2-256 digest")
    cid: CID = _new(CID)  # type: ignore[operator]
    _set(cid, "_raw", data)  # type: ignore[operator]
    return cid


def cid_for_msgpack(
    block: bytes,
    _sha256: object = hashlib.sha256,
    _prefix: bytes = _PREFIX[CODEC_MSGPACK],
    _new: object = object.__new__,
    _set: object = object.__setattr__,
) -> CID:
    """The CID of an encoded msgpack block (hash of exactly these bytes)."""
    # Built directly, as from_bytes does (its form is right by construction): every
    # block of a commit event and every node a write builds is hashed here.
    cid: CID = _new(CID)  # type: ignore[operator]
    _set(cid, "_raw", _prefix + _sha256(block).digest())  # type: ignore[operator]
    return cid


def cid_for_raw(blob: bytes) -> CID:
    """The CID of a blob."""
    return CID(CODEC_RAW, hashlib.sha256(blob).digest())
