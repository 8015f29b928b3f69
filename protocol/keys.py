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

Signing and verification are libsodium's (PyNaCl's bindings): about 1.6 times as fast
as ``cryptography``'s OpenSSL for a verify, and about 3.6 MB of a process's RSS against
10 MB (bench/RESULTS.md, "ed25519 by libsodium"). It is imported at the first
signature made or checked, not with this module: a node that only starts and waits
needs its key's ``did:key`` and nothing else. So a secret key may be made from its
seed *and* the public key stored beside it (``SigningKey.from_seed(seed,
public=raw)``): nothing is derived until the first signature, which derives the
public key from the seed and refuses to sign if it is not the one given. No curve
arithmetic is written here.

Verification is RFC 8032's (cofactorless, ``s`` below the group order, the encoding of
``[s]B - [k]A`` compared with ``R``) and refuses, before the library sees it, a
signature whose ``R`` is a small-order point (the set above). libsodium refuses those
itself and OpenSSL does not; refusing them here makes the rule ours, whichever library
checks the rest, so two implementations never disagree about a signature. An honest
signer's ``R`` is ``[r]B`` for a hash-derived ``r``, never of small order.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import base58

from .errors import InvalidSignature, InvalidSyntax, LocalProtocolError

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
        if int.from_bytes(signature[:32], "little") & _Y_MASK in _SMALL_ORDER_Y:
            raise InvalidSignature("signature's R is a small-order point")
        sodium = _sodium()
        try:
            sodium.crypto_sign_open(signature + data, self.raw)
        except sodium.BadSignatureError as e:
            raise InvalidSignature("signature does not verify") from e

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
    #: libsodium's 64-byte secret key (seed and public key), made at the first sign.
    _expanded: bytes | None = field(default=None, repr=False, compare=False, hash=False)

    @classmethod
    def from_seed(cls, seed: bytes, *, public: bytes | None = None) -> SigningKey:
        """The key of ``seed``. With ``public`` (the public key kept beside the seed),
        ``cryptography`` is not loaded until the first :meth:`sign`, which checks
        that ``public`` is the seed's and raises LocalProtocolError if it is not."""
        if not isinstance(seed, bytes) or len(seed) != 32:
            raise LocalProtocolError("an ed25519 seed is 32 bytes")
        if public is not None:
            return cls(seed, VerifyKey.from_bytes(public))
        expanded, pub = _derive(seed)
        return cls(seed, pub, expanded)

    def to_bytes(self) -> bytes:
        return self.seed

    def to_str(self) -> str:
        """Secret-key export: multibase base58btc of multicodec ed25519-priv."""
        return "z" + base58.b58encode(_PRIV_CODEC + self.seed).decode("ascii")

    @classmethod
    def from_str(cls, text: str, *, public: bytes | None = None) -> SigningKey:
        if not isinstance(text, str) or not text.startswith("z") or len(text) > 64:
            raise InvalidSyntax("not an exported ed25519 secret key ('z...')")
        try:
            raw = base58.b58decode(text[1:])
        except ValueError as e:
            raise InvalidSyntax("secret key is not valid base58btc") from e
        if len(raw) != 34 or raw[:2] != _PRIV_CODEC:
            raise InvalidSyntax("not an ed25519 secret key")
        return cls.from_seed(raw[2:], public=public)

    def did_key(self) -> str:
        return self.public.to_did_key()

    def sign(self, data: bytes) -> bytes:
        expanded = self._expanded
        if expanded is None:
            expanded, pub = _derive(self.seed)
            if pub.raw != self.public.raw:
                raise LocalProtocolError("the public key given is not this seed's")
            object.__setattr__(self, "_expanded", expanded)  # a cache: frozen for callers
        return _sodium().crypto_sign(data, expanded)[:SIGNATURE_LENGTH]


class _Sodium:
    """The three libsodium calls this module makes, loaded at the first use."""

    def __init__(self) -> None:
        import nacl.bindings
        import nacl.exceptions

        self.crypto_sign = nacl.bindings.crypto_sign
        self.crypto_sign_open = nacl.bindings.crypto_sign_open
        self.crypto_sign_seed_keypair = nacl.bindings.crypto_sign_seed_keypair
        self.BadSignatureError = nacl.exceptions.BadSignatureError


@functools.cache
def _sodium() -> _Sodium:
    return _Sodium()


def _derive(seed: bytes) -> tuple[bytes, VerifyKey]:
    """libsodium's 64-byte secret key for ``seed``, and its public key."""
    public, expanded = _sodium().crypto_sign_seed_keypair(seed)
    return expanded, VerifyKey(public)
