"""ed25519 keys in did:key form, and CIDs."""

from __future__ import annotations

import contextlib

import base58
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given
from hypothesis import strategies as st

from protocol.cid import CID, cid_for_msgpack, cid_for_raw
from protocol.errors import DecodeError, InvalidSignature, InvalidSyntax, LocalProtocolError
from protocol.keys import SigningKey, VerifyKey, verify_key

from .seeds import seeded_key


def test_did_key_known_answer() -> None:
    # The all-zero seed's public key, as every ed25519 did:key tool writes it.
    key = SigningKey.from_seed(bytes(32))
    assert key.did_key() == "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp"
    assert verify_key(key.did_key()) == key.public


def test_secret_export_round_trip() -> None:
    key = seeded_key(7)
    assert SigningKey.from_str(key.to_str()).did_key() == key.did_key()
    assert "seed" not in repr(key)
    assert key.to_str() not in repr(key)


def test_sign_and_verify() -> None:
    key = seeded_key(3)
    sig = key.sign(b"message")
    key.public.verify(sig, b"message")
    with pytest.raises(InvalidSignature):
        key.public.verify(sig, b"messagE")
    with pytest.raises(InvalidSignature):
        seeded_key(4).public.verify(sig, b"message")
    with pytest.raises(InvalidSignature):
        key.public.verify(sig[:-1], b"message")


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme", id="secp256k1"),
        pytest.param("did:key:z6Mk", id="truncated"),
        pytest.param("did:key:f00", id="not-base58"),
        pytest.param("did:web:example.com", id="other-method"),
        pytest.param("did:key:z0OIl", id="bad-alphabet"),
    ],
)
def test_bad_did_keys_refused(text: str) -> None:
    with pytest.raises(InvalidSyntax):
        VerifyKey.from_did_key(text)


# -- small-order and non-canonical keys (issue 12, finding 7) -------------------------------

_P = 2**255 - 19
_D = -121665 * pow(121666, _P - 2, _P) % _P


def _did_key(raw: bytes) -> str:
    return "did:key:z" + base58.b58encode(b"\xed\x01" + raw).decode()


def _decompress(raw: bytes) -> tuple[int, int] | None:
    """RFC 8032 point decoding, in plain integers (None: not on the curve)."""
    y = int.from_bytes(raw, "little") & ((1 << 255) - 1)
    sign = raw[31] >> 7
    xx = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P) % _P
    x = pow(xx, (_P + 3) // 8, _P)
    if (x * x - xx) % _P:
        x = x * pow(2, (_P - 1) // 4, _P) % _P
    if (x * x - xx) % _P:
        return None
    if x & 1 != sign:
        x = _P - x if x else 0
    return x, y % _P


def _add(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    (x1, y1), (x2, y2) = a, b
    t = _D * x1 * x2 * y1 * y2
    return (
        (x1 * y2 + x2 * y1) * pow(1 + t, _P - 2, _P) % _P,
        (y1 * y2 + x1 * x2) * pow(1 - t, _P - 2, _P) % _P,
    )


def _times8(point: tuple[int, int]) -> tuple[int, int]:
    for _ in range(3):
        point = _add(point, point)
    return point


SMALL_ORDER = [
    (1).to_bytes(32, "little"),  # the identity
    (_P - 1).to_bytes(32, "little"),  # order 2
    bytes(32),  # order 4, and its negative below
    bytes(31) + b"\x80",
    bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
    bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85"),
    bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
    bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa"),
]


def test_the_small_order_list_is_the_eight_points() -> None:
    # Checked independently: each decodes, times 8 is the identity, and they differ.
    points = {_decompress(raw) for raw in SMALL_ORDER}
    assert None not in points
    assert len(points) == 8
    assert all(_times8(pt) == (0, 1) for pt in points if pt is not None)


@pytest.mark.parametrize("raw", SMALL_ORDER, ids=lambda raw: raw.hex()[:8] + raw.hex()[-2:])
def test_a_small_order_key_is_refused(raw: bytes) -> None:
    # The attack: under such a key the signature R = identity, s = 0 verifies for
    # every message (RFC 8032's cofactorless check, as OpenSSL does it).
    forged = (1).to_bytes(32, "little") + bytes(32)
    if raw == (1).to_bytes(32, "little"):
        Ed25519PublicKey.from_public_bytes(raw).verify(forged, b"any message at all")
    with pytest.raises(InvalidSyntax, match="small-order"):
        verify_key(_did_key(raw))
    with pytest.raises(InvalidSyntax, match="small-order"):
        VerifyKey.from_bytes(raw)


@pytest.mark.parametrize("y", [_P, _P + 1, _P + 18, 2**255 - 1], ids=["p", "p+1", "p+18", "max"])
@pytest.mark.parametrize("sign", [0, 1], ids=["x+", "x-"])
def test_a_non_canonical_key_is_refused(y: int, sign: int) -> None:
    raw = (y + (sign << 255)).to_bytes(32, "little")
    with pytest.raises(InvalidSyntax, match="canonical"):
        verify_key(_did_key(raw))


def test_a_small_order_rotation_key_is_refused_in_an_identity_op() -> None:
    from protocol.errors import IdentityError
    from protocol.identity import IdentityOp

    with pytest.raises(IdentityError, match="small-order"):
        IdentityOp.create(
            [_did_key((1).to_bytes(32, "little"))],
            seeded_key(3).did_key(),
            "alice.example.com",
            "https://pds.example.com",
            None,
            seeded_key(1),
        )


@given(st.binary(min_size=32, max_size=32))
def test_honest_keys_pass_and_the_check_agrees_with_decoding(seed: bytes) -> None:
    key = SigningKey.from_seed(seed)
    assert verify_key(key.did_key()) == key.public
    # Any 32 bytes: refused as small-order exactly when times 8 is the identity.
    point = _decompress(seed)
    small = point is not None and _times8(point) == (0, 1)
    canonical = int.from_bytes(seed, "little") & ((1 << 255) - 1) < _P
    try:
        VerifyKey.from_bytes(seed)
    except InvalidSyntax:
        assert small or not canonical
    else:
        assert canonical
        assert not small


def test_a_key_made_from_its_stored_public_half_signs_and_verifies() -> None:
    # As a node process makes its key at start: seed and the stored public key, the
    # cryptography objects made by the first sign and the first verify.
    seed = bytes(range(1, 33))
    derived = SigningKey.from_seed(seed)
    key = SigningKey.from_seed(seed, public=derived.public.raw)
    assert key == derived
    assert key.did_key() == derived.did_key()
    sig = key.sign(b"message")
    assert sig == derived.sign(b"message")
    key.public.verify(sig, b"message")
    fresh = VerifyKey.from_bytes(key.public.raw)
    fresh.verify(sig, b"message")
    with pytest.raises(InvalidSignature):
        fresh.verify(sig, b"other")


def test_a_stored_public_half_that_is_not_the_seeds_refuses_to_sign() -> None:
    other = SigningKey.from_seed(bytes(range(2, 34))).public.raw
    key = SigningKey.from_seed(bytes(range(1, 33)), public=other)
    with pytest.raises(LocalProtocolError, match="not this seed's"):
        key.sign(b"message")
    # Refused every time, not only the first.
    with pytest.raises(LocalProtocolError):
        key.sign(b"message")


def test_a_stored_public_half_must_be_a_key() -> None:
    with pytest.raises(InvalidSyntax):
        SigningKey.from_seed(bytes(32), public=b"short")
    with pytest.raises(InvalidSyntax, match="small-order"):
        SigningKey.from_seed(bytes(32), public=(1).to_bytes(32, "little"))


@given(st.text(max_size=80))
def test_did_key_parser_raises_only_our_error(text: str) -> None:
    with contextlib.suppress(InvalidSyntax):
        verify_key(text)


def test_cid_forms() -> None:
    cid = cid_for_msgpack(b"\x80")
    assert str(cid).startswith("bagaqiera")  # CIDv1, codec 0x0201, sha2-256
    assert CID.from_str(str(cid)) == cid
    assert CID.from_bytes(cid.to_bytes()) == cid
    raw = cid_for_raw(b"")
    assert str(raw) == "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG", id="cidv0"),
        pytest.param("BAFKREIHDWDCEFGH4DQKJV67UZCMW7OJEE6XEDZDETOJUZJEVTENXQUVYKU", id="upper"),
        pytest.param("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyk", id="truncated"),
        pytest.param("b", id="empty"),
        pytest.param("zb2rhe5P4gXftAwvA4eXQ5HJwsER2owDyS9sKaQRRVQPn93bA", id="base58"),
    ],
)
def test_bad_cid_strings_refused(text: str) -> None:
    with pytest.raises(InvalidSyntax):
        CID.from_str(text)


@given(st.binary(max_size=60))
def test_cid_from_bytes_raises_only_our_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        CID.from_bytes(data)


def _small_order_r_signature(seed: bytes, message: bytes) -> tuple[bytes, bytes]:
    """A signature with R = the identity that RFC 8032's equation accepts: s = k * a."""
    import hashlib

    order = 2**252 + 27742317777372353535851937790883648493
    h = hashlib.sha512(seed).digest()
    a = int.from_bytes(h[:32], "little")
    a = (a & ((1 << 254) - 8)) | (1 << 254)
    public = SigningKey.from_seed(seed).public.raw
    r = (1).to_bytes(32, "little")  # the identity point
    k = int.from_bytes(hashlib.sha512(r + public + message).digest(), "little") % order
    return public, r + (k * a % order).to_bytes(32, "little")


def test_a_signature_whose_r_is_of_small_order_is_refused() -> None:
    # OpenSSL (cryptography) accepts it, libsodium refuses it: protocol/keys.py refuses
    # it before either library sees it, so the rule does not depend on the library.
    public, sig = _small_order_r_signature(bytes(range(32)), b"message")
    Ed25519PublicKey.from_public_bytes(public).verify(sig, b"message")  # OpenSSL: valid
    with pytest.raises(InvalidSignature, match="small-order"):
        VerifyKey.from_bytes(public).verify(sig, b"message")
    import nacl.bindings
    import nacl.exceptions

    with pytest.raises(nacl.exceptions.BadSignatureError):
        nacl.bindings.crypto_sign_open(sig + b"message", public)


@given(st.binary(min_size=32, max_size=32), st.binary(max_size=200))
def test_libsodium_signs_and_verifies_as_cryptography_does(seed: bytes, message: bytes) -> None:
    ours = SigningKey.from_seed(seed)
    theirs = Ed25519PrivateKey.from_private_bytes(seed)
    raw = theirs.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert ours.public.raw == raw
    sig = ours.sign(message)
    assert sig == theirs.sign(message)  # ed25519 signatures are deterministic
    ours.public.verify(sig, message)
    bad = bytes([sig[0] ^ 1]) + sig[1:]
    assert not ours.public.is_valid(bad, message)
    assert not ours.public.is_valid(sig, message + b"!")
