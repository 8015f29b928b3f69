"""ed25519 keys, their ``did:key`` form, signing and verification.

skyfed signs everything with ed25519 (atproto uses p256 / secp256k1). A public key is
written as ``did:key:z<base58btc(0xed 0x01 || 32-byte key)>`` (multicodec
``ed25519-pub``), a secret key as ``z<base58btc(0x80 0x26 || 32-byte seed)>``
(multicodec ``ed25519-priv``). Signatures are the 64-byte ed25519 signatures over the
exact bytes given.

This module never draws randomness: a new key is made from a 32-byte seed the caller
supplies (``SigningKey.from_seed(os.urandom(32))`` in the IO shell).

What it refuses, wherever a public key is parsed (:meth:`VerifyKey.from_bytes`, so
every ``did:key``): a key that is not 32 bytes; a **non-canonical** encoding (the
255-bit ``y`` is ``p = 2^255 - 19`` or more); and the eight **small-order** points
(``y`` is 0, 1, ``p - 1`` or one of the two order-8 values), with either sign bit.
RFC 8032 verification accepts the signature ``R = identity, s = 0`` from a
small-order key for *every* message, so such a key set as a rotation, signing or
node key could be signed for by anyone. Honest keys are never small-order (they are
a clamped scalar times the base point). The check is a few integer operations.

``cryptography`` (about 10 MB of a process's RSS: its Rust extension carries its own
OpenSSL) is imported at the first signature made or checked, not with this module: a
node that only starts and waits needs its key's ``did:key`` and nothing else. The public
key of a seed is derived here in pure Python (RFC 8032 section 5.1.5, a fixed-schedule
Montgomery ladder, about 2 ms), or by ``cryptography`` once it is loaded anyway.
"""

from __future__ import annotations

import functools
import hashlib
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import base58

from .errors import InvalidSignature, InvalidSyntax, LocalProtocolError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

__all__ = ["DID_KEY_PREFIX", "SIGNATURE_LENGTH", "SigningKey", "VerifyKey", "verify_key"]

DID_KEY_PREFIX = "did:key:z"
SIGNATURE_LENGTH = 64
_PUB_CODEC = b"\xed\x01"
_PRIV_CODEC = b"\x80\x26"
_MAX_DID_KEY = 64

_P = 2**255 - 19
_Y_MASK = (1 << 255) - 1
#: The ``y`` of the eight small-order points of edwards25519 (with x or -x): the
#: order-4 pair (y = 0), the identity (1), the order-2 point (p - 1) and the two
#: order-8 pairs. libsodium refuses the same set (its ``has_small_order`` table).
_SMALL_ORDER_Y = frozenset(
    {
        0,
        1,
        _P - 1,
        2707385501144840649318225287225658788936804267575313519463743609750303402022,
        55188659117513257062467267217118295137698188065244968500265048394206261417927,
    }
)


# edwards25519 (RFC 8032 section 5.1): d, and the base point B in extended coordinates.
_D = -121665 * pow(121666, -1, _P) % _P
_BY = 4 * pow(5, -1, _P) % _P
_BX = 15112221349535400772501151409588531511454012693041857206046113283949847762202
_BASE = (_BX, _BY, 1, _BX * _BY % _P)
_CRYPTOGRAPHY = "cryptography.hazmat.primitives.asymmetric.ed25519"


_Point = tuple[int, int, int, int]


def _swap(bit: int, r0: _Point, r1: _Point) -> tuple[_Point, _Point]:
    """``(r1, r0)`` if ``bit`` is 1, else ``(r0, r1)``: by arithmetic, not a branch."""
    d = [(a - b) * bit for a, b in zip(r0, r1, strict=True)]
    return (
        (r0[0] - d[0], r0[1] - d[1], r0[2] - d[2], r0[3] - d[3]),
        (r1[0] + d[0], r1[1] + d[1], r1[2] + d[2], r1[3] + d[3]),
    )


def _add(r: _Point, q: _Point) -> _Point:
    """RFC 8032 5.1.4's addition in extended coordinates (complete: it doubles too)."""
    p = _P
    a = (r[1] - r[0]) * (q[1] - q[0]) % p
    b = (r[1] + r[0]) * (q[1] + q[0]) % p
    c = 2 * r[3] * q[3] % p * _D % p
    d = 2 * r[2] * q[2] % p
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % p, g * h % p, f * g % p, e * h % p)


def _public_from_seed(seed: bytes) -> bytes:
    """The 32-byte public key of an ed25519 seed (RFC 8032 5.1.5), without
    ``cryptography``: a Montgomery ladder that runs the same additions for every
    scalar (255 steps, operands swapped by arithmetic where the scalar's bit changes)."""
    h = hashlib.sha512(seed).digest()
    s = int.from_bytes(h[:32], "little")
    s = (s & ((1 << 254) - 8)) | (1 << 254)
    r0: _Point = (0, 1, 1, 0)  # the identity
    r1: _Point = _BASE
    prev = 0
    for i in range(254, -1, -1):
        bit = (s >> i) & 1
        r0, r1 = _swap(bit ^ prev, r0, r1)
        prev = bit
        r0, r1 = _add(r0, r0), _add(r0, r1)
    r0, r1 = _swap(prev, r0, r1)
    zinv = pow(r0[2], -1, _P)
    x, y = r0[0] * zinv % _P, r0[1] * zinv % _P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def _check_point(raw: bytes) -> None:
    """Refuse a non-canonical or small-order public key encoding (see the module doc)."""
    y = int.from_bytes(raw, "little") & _Y_MASK
    if y >= _P:
        raise InvalidSyntax("ed25519 public key is not canonically encoded (y >= p)")
    if y in _SMALL_ORDER_Y:
        raise InvalidSyntax("ed25519 public key is a small-order point")


@dataclass(frozen=True, slots=True)
class VerifyKey:
    """An ed25519 public key."""

    raw: bytes
    #: ``cryptography``'s key, made at the first :meth:`verify`.
    _key: Ed25519PublicKey | None = field(default=None, repr=False, compare=False, hash=False)

    @classmethod
    def from_bytes(cls, raw: bytes) -> VerifyKey:
        if not isinstance(raw, bytes) or len(raw) != 32:
            raise InvalidSyntax("an ed25519 public key is 32 bytes")
        _check_point(raw)
        return cls(raw)

    @classmethod
    def from_did_key(cls, did_key: str) -> VerifyKey:
        return verify_key(did_key)

    def to_did_key(self) -> str:
        return DID_KEY_PREFIX + base58.b58encode(_PUB_CODEC + self.raw).decode("ascii")

    def verify(self, signature: bytes, data: bytes) -> None:
        """Return if ``signature`` signs ``data``; raise InvalidSignature otherwise."""
        if not isinstance(signature, bytes) or len(signature) != SIGNATURE_LENGTH:
            raise InvalidSignature("an ed25519 signature is 64 bytes")
        key = self._key
        if key is None:
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

            # cryptography checks the point only when it verifies (not here).
            key = Ed25519PublicKey.from_public_bytes(self.raw)
            object.__setattr__(self, "_key", key)  # a cache: frozen for callers
        try:
            key.verify(signature, data)
        except Exception as e:
            # Imported here, not above: a signature that verifies pays no import.
            from cryptography.exceptions import InvalidSignature as CryptoInvalidSignature

            if isinstance(e, CryptoInvalidSignature):
                raise InvalidSignature("signature does not verify") from e
            raise

    def is_valid(self, signature: bytes, data: bytes) -> bool:
        try:
            self.verify(signature, data)
        except InvalidSignature:
            return False
        return True


@functools.lru_cache(maxsize=4096)
def verify_key(did_key: str) -> VerifyKey:
    """Parse a ``did:key`` naming an ed25519 public key (cached: keys repeat a lot)."""
    if not isinstance(did_key, str) or len(did_key) > _MAX_DID_KEY:
        raise InvalidSyntax("not an ed25519 did:key")
    if not did_key.startswith(DID_KEY_PREFIX):
        raise InvalidSyntax("a did:key must start with 'did:key:z'")
    try:
        raw = base58.b58decode(did_key[len("did:key:") + 1 :])
    except ValueError as e:
        raise InvalidSyntax("did:key is not valid base58btc") from e
    if len(raw) != 34 or raw[:2] != _PUB_CODEC:
        raise InvalidSyntax("did:key does not name an ed25519 public key")
    key = VerifyKey.from_bytes(raw[2:])
    if key.to_did_key() != did_key:
        raise InvalidSyntax("did:key is not in canonical form")
    return key


@dataclass(frozen=True, slots=True)
class SigningKey:
    """An ed25519 secret key. ``repr`` never shows the secret."""

    seed: bytes = field(repr=False)
    public: VerifyKey = field(compare=False, hash=False)
    #: ``cryptography``'s key, made at the first :meth:`sign`.
    _key: Ed25519PrivateKey | None = field(default=None, repr=False, compare=False, hash=False)

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        if not isinstance(seed, bytes) or len(seed) != 32:
            raise LocalProtocolError("an ed25519 seed is 32 bytes")
        ed25519 = sys.modules.get(_CRYPTOGRAPHY)
        if ed25519 is None:  # not loaded yet: derive the public key without it
            return cls(seed, VerifyKey(_public_from_seed(seed)))
        from cryptography.hazmat.primitives import serialization

        key = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
        pub = key.public_key()
        raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return cls(seed, VerifyKey(raw, pub), key)

    def to_bytes(self) -> bytes:
        return self.seed

    def to_str(self) -> str:
        """Secret-key export: multibase base58btc of multicodec ed25519-priv."""
        return "z" + base58.b58encode(_PRIV_CODEC + self.seed).decode("ascii")

    @classmethod
    def from_str(cls, text: str) -> SigningKey:
        if not isinstance(text, str) or not text.startswith("z") or len(text) > 64:
            raise InvalidSyntax("not an exported ed25519 secret key ('z...')")
        try:
            raw = base58.b58decode(text[1:])
        except ValueError as e:
            raise InvalidSyntax("secret key is not valid base58btc") from e
        if len(raw) != 34 or raw[:2] != _PRIV_CODEC:
            raise InvalidSyntax("not an ed25519 secret key")
        return cls.from_seed(raw[2:])

    def did_key(self) -> str:
        return self.public.to_did_key()

    def sign(self, data: bytes) -> bytes:
        key = self._key
        if key is None:
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

            key = Ed25519PrivateKey.from_private_bytes(self.seed)
            object.__setattr__(self, "_key", key)  # a cache: frozen for callers
        return key.sign(data)
