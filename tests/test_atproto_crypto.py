"""k256 / p256 keys and signatures: interop vectors, high-S, DER and malformed keys."""

from __future__ import annotations

from typing import Any

import base58
import pytest

from protocol.atproto.crypto import (
    PublicKey,
    SigningKey,
    parse_did_key,
    parse_legacy_multibase,
    parse_multikey,
)
from protocol.errors import InvalidSignature, InvalidSyntax, LocalProtocolError

from .atproto_vectors import b64, cases

_N = {
    "k256": 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141,
    "p256": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
}


@pytest.mark.parametrize("vector", cases("crypto/signature-fixtures.json"))
def test_signature_fixture(vector: dict[str, Any]) -> None:
    key = parse_did_key(vector["publicKeyDid"])
    curve = "p256" if vector["algorithm"] == "ES256" else "k256"
    assert key.curve == curve
    assert key.jwt_alg == vector["algorithm"]
    assert parse_legacy_multibase(curve, vector["publicKeyMultibase"]) == key
    message, sig = b64(vector["messageBase64"]), b64(vector["signatureBase64"])
    assert key.is_valid(sig, message) is vector["validSignature"]
    if not vector["validSignature"]:
        with pytest.raises(InvalidSignature):
            key.verify(sig, message)


COMPACT = [
    c for c in cases("crypto/signature-fixtures.json") if "der-encoded" not in c.values[0]["tags"]
]


@pytest.mark.parametrize("vector", COMPACT)
def test_high_s_twin_of_every_fixture_is_refused(vector: dict[str, Any]) -> None:
    """For each compact signature, its twin (r, n - s) verifies under plain ECDSA;
    atproto accepts only the low one of the pair."""
    sig = b64(vector["signatureBase64"])
    assert len(sig) == 64
    key = parse_did_key(vector["publicKeyDid"])
    n = _N[key.curve]
    s = int.from_bytes(sig[32:], "big")
    twin = sig[:32] + (n - s).to_bytes(32, "big")
    message = b64(vector["messageBase64"])
    valid = [key.is_valid(x, message) for x in (sig, twin)]
    assert valid.count(True) == 1
    assert valid == [vector["validSignature"], not vector["validSignature"]]


@pytest.mark.parametrize("vector", cases("crypto/w3c_didkey_K256.json", "publicDidKey"))
def test_k256_did_key(vector: dict[str, Any]) -> None:
    key = SigningKey.from_secret("k256", bytes.fromhex(vector["privateKeyBytesHex"]))
    assert key.public.to_did_key() == vector["publicDidKey"]
    assert parse_did_key(vector["publicDidKey"]) == key.public


@pytest.mark.parametrize("vector", cases("crypto/w3c_didkey_P256.json", "publicDidKey"))
def test_p256_did_key(vector: dict[str, Any]) -> None:
    key = SigningKey.from_secret("p256", base58.b58decode(vector["privateKeyBytesBase58"]))
    assert key.public.to_did_key() == vector["publicDidKey"]
    assert parse_did_key(vector["publicDidKey"]) == key.public


@pytest.mark.parametrize("curve", ["k256", "p256"])
def test_sign_is_deterministic_low_s_and_verifies(curve: Any) -> None:
    key = SigningKey.from_seed(curve, b"seed")
    n = _N[curve]
    for i in range(40):
        msg = b"message %d" % i
        sig = key.sign(msg)
        assert sig == key.sign(msg)
        assert int.from_bytes(sig[32:], "big") <= n // 2
        key.public.verify(sig, msg)
        with pytest.raises(InvalidSignature):
            key.public.verify(sig, msg + b"!")
    assert key.secret.hex() not in repr(key)


def test_signature_shapes_refused() -> None:
    key = SigningKey.from_seed("k256", b"x")
    sig = key.sign(b"m")
    n = _N["k256"]
    bad = {
        "short": sig[:63],
        "long": sig + b"\x00",
        "r-zero": bytes(32) + sig[32:],
        "s-zero": sig[:32] + bytes(32),
        "r-is-n": n.to_bytes(32, "big") + sig[32:],
        "s-is-n": sig[:32] + n.to_bytes(32, "big"),
        "other-key": SigningKey.from_seed("k256", b"y").sign(b"m"),
    }
    for name, s in bad.items():
        with pytest.raises(InvalidSignature):
            key.public.verify(s, b"m")
        assert not key.public.is_valid(s, b"m"), name


def test_cross_curve_confusion() -> None:
    k = SigningKey.from_seed("k256", b"same")
    p = SigningKey.from_seed("p256", b"same")
    assert not p.public.is_valid(k.sign(b"m"), b"m")
    # The same 33 point bytes under the other codec are another key, or no point.
    raw = base58.b58decode(k.public.to_multikey()[1:])
    other = "z" + base58.b58encode(b"\x80\x24" + raw[2:]).decode()
    try:
        q = parse_multikey(other)
    except InvalidSyntax:
        return
    assert not q.is_valid(k.sign(b"m"), b"m")


def _mk(prefix: bytes, body: bytes) -> str:
    return "z" + base58.b58encode(prefix + body).decode()


GOOD = SigningKey.from_seed("k256", b"good").public.compressed
BAD_MULTIKEYS = {
    "ed25519-codec": _mk(b"\xed\x01", bytes(32)),
    "unknown-codec": _mk(b"\xe8\x01", GOOD),
    "uncompressed-in-multikey": _mk(b"\xe7\x01", b"\x04" + bytes(64)),
    "point-not-on-curve": _mk(b"\xe7\x01", b"\x02" + b"\xff" * 32),
    "bad-prefix-byte": _mk(b"\xe7\x01", b"\x05" + GOOD[1:]),
    "trailing-byte": _mk(b"\xe7\x01", GOOD + b"\x00"),
    "short": _mk(b"\xe7\x01", GOOD[:-1]),
    "not-base58btc": "m" + "A" * 40,
    "bad-base58-char": "z0OIl" + "1" * 30,
    "too-long": "z" + "1" * 200,
}


@pytest.mark.parametrize("text", list(BAD_MULTIKEYS.values()), ids=list(BAD_MULTIKEYS))
def test_bad_multikeys(text: str) -> None:
    with pytest.raises(InvalidSyntax):
        parse_multikey(text)
    with pytest.raises(InvalidSyntax):
        parse_did_key("did:key:" + text)


def test_non_canonical_base58_leading_zero_refused() -> None:
    good = SigningKey.from_seed("k256", b"good").public.to_multikey()
    assert parse_multikey(good).to_multikey() == good
    with pytest.raises(InvalidSyntax):
        parse_multikey("z1" + good[1:])  # a leading zero byte


def test_did_key_needs_prefix() -> None:
    good = SigningKey.from_seed("p256", b"good").public.to_multikey()
    with pytest.raises(InvalidSyntax):
        parse_did_key(good)
    with pytest.raises(InvalidSyntax):
        parse_did_key("did:web:" + good)


def test_legacy_uncompressed_point() -> None:
    from cryptography.hazmat.primitives import serialization

    key = SigningKey.from_seed("p256", b"legacy")
    raw = key._key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    text = "z" + base58.b58encode(raw).decode()
    assert parse_legacy_multibase("p256", text) == key.public
    with pytest.raises(InvalidSyntax):
        parse_legacy_multibase("p256", "z" + base58.b58encode(raw[:-1]).decode())


def test_secret_key_bounds() -> None:
    with pytest.raises(LocalProtocolError):
        SigningKey.from_secret("k256", bytes(32))
    with pytest.raises(LocalProtocolError):
        SigningKey.from_secret("k256", _N["k256"].to_bytes(32, "big"))
    with pytest.raises(LocalProtocolError):
        SigningKey.from_secret("k256", b"\x01" * 31)
    with pytest.raises(InvalidSyntax):
        PublicKey.from_compressed("k256", b"\x04" + bytes(32))
