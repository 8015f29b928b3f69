"""ed25519 keys in did:key form, and CIDs."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.cid import CID, cid_for_msgpack, cid_for_raw
from protocol.errors import DecodeError, InvalidSignature, InvalidSyntax
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
