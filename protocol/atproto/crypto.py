"""atproto keys: ``k256`` (secp256k1) and ``p256`` (NIST P-256) ECDSA over sha-256.

Public keys are written as *multikeys*: ``z`` + base58btc(multicodec varint ||
33-byte compressed point), with the multicodec ``secp256k1-pub`` (``0xe7``, varint
``e7 01``) or ``p256-pub`` (``0x1200``, varint ``80 24``). A ``did:key`` is
``did:key:`` + the multikey. Older DID documents carry a *legacy* verification
method (``EcdsaSecp256k1VerificationKey2019`` / ``EcdsaSecp256r1VerificationKey2019``)
whose ``publicKeyMultibase`` is ``z`` + base58btc of the bare point, compressed or
uncompressed, with the curve named by the type: :func:`parse_legacy_multibase`.

Signatures are the 64-byte "compact" form ``r || s`` (big-endian, 32 bytes each)
over sha-256 of the data, and atproto requires **low-S**: ``s <= n/2``. Refused:
DER-encoded signatures (any length but 64), ``r`` or ``s`` zero or ``>= n``, high-S,
a point not on the curve, a multikey with another codec or trailing bytes, and a
string that does not re-encode to itself.

Signing (:class:`SigningKey`) is here for tests, benchmarks and vectors: it is
deterministic (RFC 6979 nonces), so it draws no randomness, and normalizes to low-S.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from typing import Literal

import base58
from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from ..errors import InvalidSignature, InvalidSyntax, LocalProtocolError

__all__ = [
    "DID_KEY_PREFIX",
    "Curve",
    "PublicKey",
    "SigningKey",
    "parse_did_key",
    "parse_legacy_multibase",
    "parse_multikey",
]

Curve = Literal["k256", "p256"]
DID_KEY_PREFIX = "did:key:"
_CODEC = {"k256": b"\xe7\x01", "p256": b"\x80\x24"}
_BY_CODEC: dict[bytes, Curve] = {b"\xe7\x01": "k256", b"\x80\x24": "p256"}
_CURVES: dict[Curve, ec.EllipticCurve] = {"k256": ec.SECP256K1(), "p256": ec.SECP256R1()}
#: Group orders.
_ORDER = {
    "k256": 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141,
    "p256": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
}
_JWT_ALG = {"k256": "ES256K", "p256": "ES256"}
_MAX_MULTIKEY = 64  # "z" + base58 of 35 bytes is at most 49 characters
_MAX_LEGACY = 100  # "z" + base58 of a 65-byte uncompressed point is about 90


def _b58(text: str, what: str) -> bytes:
    if not text.startswith("z"):
        raise InvalidSyntax(f"{what} must be multibase base58btc ('z...')")
    try:
        return base58.b58decode(text[1:])
    except ValueError as e:
        raise InvalidSyntax(f"{what} is not valid base58btc") from e


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A k256 or p256 public key; :meth:`verify` checks compact low-S signatures."""

    curve: Curve
    compressed: bytes
    _key: ec.EllipticCurvePublicKey = field(repr=False, compare=False, hash=False)

    @classmethod
    def from_compressed(cls, curve: Curve, raw: bytes) -> PublicKey:
        if curve not in _CURVES:
            raise InvalidSyntax(f"unknown curve {curve!r}")
        if type(raw) is not bytes or len(raw) != 33 or raw[0] not in (2, 3):
            raise InvalidSyntax("a compressed point is 33 bytes starting 02 or 03")
        return cls._from_point(curve, raw)

    @classmethod
    def _from_point(cls, curve: Curve, raw: bytes) -> PublicKey:
        try:
            key = ec.EllipticCurvePublicKey.from_encoded_point(_CURVES[curve], raw)
        except ValueError as e:
            raise InvalidSyntax(f"not a point on {curve}") from e
        compressed = key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
        )
        return cls(curve, compressed, key)

    @property
    def jwt_alg(self) -> str:
        """``ES256K`` for k256, ``ES256`` for p256."""
        return _JWT_ALG[self.curve]

    def to_multikey(self) -> str:
        return "z" + base58.b58encode(_CODEC[self.curve] + self.compressed).decode("ascii")

    def to_did_key(self) -> str:
        return DID_KEY_PREFIX + self.to_multikey()

    def verify(self, signature: bytes, data: bytes) -> None:
        """Return if ``signature`` (compact, low-S) signs sha-256 of ``data``; raise
        :class:`InvalidSignature` otherwise."""
        if type(signature) is not bytes or len(signature) != 64:
            raise InvalidSignature("an atproto signature is 64 bytes (r || s), not DER")
        n = _ORDER[self.curve]
        r = int.from_bytes(signature[:32], "big")
        s = int.from_bytes(signature[32:], "big")
        if not 0 < r < n or not 0 < s < n:
            raise InvalidSignature("signature r or s out of range")
        if s > n // 2:
            raise InvalidSignature("high-S signature (atproto requires low-S)")
        try:
            self._key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
        except _CryptoInvalidSignature as e:
            raise InvalidSignature("signature does not verify") from e

    def is_valid(self, signature: bytes, data: bytes) -> bool:
        try:
            self.verify(signature, data)
        except InvalidSignature:
            return False
        return True


def parse_multikey(text: str) -> PublicKey:
    """Parse a multikey (``zQ3s...`` for k256, ``zDna...`` for p256)."""
    if not isinstance(text, str) or len(text) > _MAX_MULTIKEY:
        raise InvalidSyntax("not an atproto multikey")
    raw = _b58(text, "multikey")
    curve = _BY_CODEC.get(raw[:2])
    if curve is None:
        raise InvalidSyntax("multikey is neither secp256k1-pub nor p256-pub")
    key = PublicKey.from_compressed(curve, raw[2:])
    if key.to_multikey() != text:
        raise InvalidSyntax("multikey is not in canonical form")
    return key


@functools.lru_cache(maxsize=4096)
def parse_did_key(did_key: str) -> PublicKey:
    """Parse a ``did:key:z...`` naming a k256 or p256 key (cached: keys repeat)."""
    if not isinstance(did_key, str) or not did_key.startswith(DID_KEY_PREFIX):
        raise InvalidSyntax("a did:key starts with 'did:key:'")
    return parse_multikey(did_key[len(DID_KEY_PREFIX) :])


def parse_legacy_multibase(curve: Curve, text: str) -> PublicKey:
    """Parse a legacy ``publicKeyMultibase``: ``z`` + base58btc of the bare point
    (33 bytes compressed or 65 uncompressed), the curve given by the method type."""
    if not isinstance(text, str) or len(text) > _MAX_LEGACY:
        raise InvalidSyntax("not a legacy publicKeyMultibase")
    raw = _b58(text, "publicKeyMultibase")
    if curve not in _CURVES:
        raise InvalidSyntax(f"unknown curve {curve!r}")
    if not (len(raw) == 33 and raw[0] in (2, 3)) and not (len(raw) == 65 and raw[0] == 4):
        raise InvalidSyntax("legacy key is not a 33-byte or 65-byte encoded point")
    if "z" + base58.b58encode(raw).decode("ascii") != text:
        raise InvalidSyntax("publicKeyMultibase is not in canonical form")
    return PublicKey._from_point(curve, raw)


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A k256 or p256 secret key (for tests and benchmarks). ``repr`` hides it."""

    curve: Curve
    secret: bytes = field(repr=False)
    _key: ec.EllipticCurvePrivateKey = field(repr=False, compare=False, hash=False)
    public: PublicKey = field(compare=False, hash=False)

    @classmethod
    def from_secret(cls, curve: Curve, secret: bytes) -> SigningKey:
        if curve not in _CURVES:
            raise LocalProtocolError(f"unknown curve {curve!r}")
        if type(secret) is not bytes or len(secret) != 32:
            raise LocalProtocolError("a secret key is 32 bytes")
        value = int.from_bytes(secret, "big")
        if not 0 < value < _ORDER[curve]:
            raise LocalProtocolError("secret key out of range")
        key = ec.derive_private_key(value, _CURVES[curve])
        pub = key.public_key()
        raw = pub.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
        )
        return cls(curve, secret, key, PublicKey(curve, raw, pub))

    @classmethod
    def from_seed(cls, curve: Curve, seed: bytes) -> SigningKey:
        """A key derived from any seed bytes (tests and benchmarks want many)."""
        n = _ORDER[curve]
        value = int.from_bytes(hashlib.sha256(b"skyfed-atproto-key" + seed).digest(), "big")
        return cls.from_secret(curve, (value % (n - 1) + 1).to_bytes(32, "big"))

    def sign(self, data: bytes) -> bytes:
        """Compact low-S signature over sha-256 of ``data`` (RFC 6979 nonce)."""
        der = self._key.sign(data, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
        r, s = decode_dss_signature(der)
        n = _ORDER[self.curve]
        if s > n // 2:
            s = n - s
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")
