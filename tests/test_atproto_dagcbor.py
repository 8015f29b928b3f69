"""DAG-CBOR and CIDs as atproto has them: interop vectors and hostile input."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.atproto import dagcbor
from protocol.atproto.cid import CID, CODEC_DAG_CBOR, CODEC_RAW, cid_for_dag_cbor, cid_for_raw
from protocol.errors import DecodeError, InvalidSyntax, LocalProtocolError

from .atproto_vectors import b64, cases

DIGEST = bytes(range(32))
LINK = CID(CODEC_DAG_CBOR, DIGEST)


# -- interop vectors --------------------------------------------------------------


@pytest.mark.parametrize("vector", cases("data-model/data-model-fixtures.json"))
def test_fixture_json_to_cbor_to_cid(vector: dict[str, Any]) -> None:
    cbor = b64(vector["cbor_base64"])
    value = dagcbor.from_json(vector["json"])
    assert dagcbor.encode(value) == cbor
    assert cid_for_dag_cbor(cbor).to_str() == vector["cid"]
    assert dagcbor.decode(cbor) == value
    assert dagcbor.to_json(dagcbor.decode(cbor)) == vector["json"]


@pytest.mark.parametrize("vector", cases("data-model/data-model-valid.json"))
def test_valid_data_model(vector: dict[str, Any]) -> None:
    value = dagcbor.from_json(vector["json"])
    assert dagcbor.decode(dagcbor.encode(value)) == value


@pytest.mark.parametrize("vector", cases("data-model/data-model-invalid.json"))
def test_invalid_data_model(vector: dict[str, Any]) -> None:
    with pytest.raises(DecodeError):
        dagcbor.from_json(vector["json"])


def test_links_and_bytes_stay_apart() -> None:
    # libipld would decode both to bytes (and encode CID-shaped bytes as a link).
    value = dagcbor.decode(dagcbor.encode({"a": LINK, "b": LINK.to_bytes()}))
    assert isinstance(value, dict)
    assert value["a"] == LINK
    assert value["b"] == LINK.to_bytes()
    assert type(value["b"]) is bytes


# -- hostile bytes ------------------------------------------------------------------

TAG42 = "d82a58250001711220" + DIGEST.hex()

HOSTILE = {
    "float64": "a16161fb3ff8000000000000",
    "float32": "a16161fa3fc00000",
    "float16": "a16161f93c00",
    "keys-unsorted": "a2616201616101",
    "keys-bytewise-not-length-first": "a26262620161610a",
    "keys-duplicate": "a2616101616102",
    "int-not-minimal": "a161611801",
    "length-not-minimal": "a1616178016161",
    "indefinite-map": "bf616101ff",
    "indefinite-string": "7f6161ff",
    "indefinite-array": "9f01ff",
    "tag-1": "c11a5f000000",
    "tag-42-on-text": "d82a6161",
    "tag-42-without-00-prefix": "d82a582401711220" + DIGEST.hex(),
    "tag-42-cidv0": "d82a582300" + "1220" + DIGEST.hex(),
    "tag-42-dag-pb-codec": "d82a58250001701220" + DIGEST.hex(),
    "tag-42-sha512": "d82a58450001711340" + DIGEST.hex() * 2,
    "tag-42-truncated-digest": "d82a58240001711220" + DIGEST.hex()[:-2],
    "undefined": "f7",
    "simple-0": "e0",
    "bad-utf8": "62c328",
    "trailing-bytes": "0000",
    "map-int-key": "a10101",
    "uint64-over-int64": "1bffffffffffffffff",
    "nint64-under-int64": "3bffffffffffffffff",
    "truncated": "62c3",
    "huge-length": "5bffffffffffffffff",
    "huge-array": "9bffffffffffffffff",
    "empty": "",
    "break-alone": "ff",
}


@pytest.mark.parametrize("hexdata", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_cbor_refused(hexdata: str) -> None:
    with pytest.raises(DecodeError):
        dagcbor.decode(bytes.fromhex(hexdata))


def test_int64_bounds_accepted() -> None:
    assert dagcbor.decode(bytes.fromhex("1b7fffffffffffffff")) == 2**63 - 1
    assert dagcbor.decode(bytes.fromhex("3b7fffffffffffffff")) == -(2**63)


def test_tag42_link_accepted() -> None:
    assert dagcbor.decode(bytes.fromhex(TAG42)) == LINK


def test_deep_nesting_refused_without_crash() -> None:
    for depth in (65, 1000, 200_000):
        with pytest.raises(DecodeError, match="deeper"):
            dagcbor.decode(b"\x81" * depth + b"\x00", max_size=10**6)
    assert dagcbor.decode(b"\x81" * 63 + b"\x00") is not None


def test_deep_maps_refused() -> None:
    data = b"\xa1\x61a" * 100 + b"\x00"
    with pytest.raises(DecodeError, match="deeper"):
        dagcbor.decode(data)


def test_oversize_refused_before_parsing() -> None:
    blob = dagcbor.encode(b"x" * 1000)
    with pytest.raises(DecodeError, match="over"):
        dagcbor.decode(blob, max_size=999)


def test_decode_many_exact_count() -> None:
    two = dagcbor.encode({"op": 1}) + dagcbor.encode({"a": 1})
    assert dagcbor.decode_many(two, 2) == [{"op": 1}, {"a": 1}]
    with pytest.raises(DecodeError):
        dagcbor.decode_many(two, 3)
    with pytest.raises(DecodeError):
        dagcbor.decode_many(two + b"\x00", 2)
    with pytest.raises(DecodeError):
        dagcbor.decode_many(two + b"\x62", 2)


@pytest.mark.parametrize(
    "value",
    [1.5, {"a": 2.0}, 2**63, -(2**63) - 1, {1: 2}, {"a": object()}, [set()]],
    ids=["float", "nested-float", "big", "small", "int-key", "object", "set"],
)
def test_encode_refuses_outside_data_model(value: Any) -> None:
    with pytest.raises(LocalProtocolError):
        dagcbor.encode(value)


def test_json_links_and_bytes_strict() -> None:
    with pytest.raises(DecodeError):
        dagcbor.from_json({"a": {"$bytes": "AAA="}})  # padded
    with pytest.raises(DecodeError):
        dagcbor.from_json({"a": {"$bytes": "A_A"}})  # url alphabet
    with pytest.raises(DecodeError):
        dagcbor.from_json({"a": {"$link": "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"}})
    with pytest.raises(DecodeError):
        dagcbor.from_json({"a": 1.5})
    with pytest.raises(DecodeError):
        dagcbor.from_json({"a": 2**63})
    nested: Any = {}
    for _ in range(100):
        nested = {"a": nested}
    with pytest.raises(DecodeError, match="deeper"):
        dagcbor.from_json(nested)


# -- properties ------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.text(max_size=20)
    | st.binary(max_size=40)
    | st.binary(min_size=32, max_size=32).map(lambda d: CID(CODEC_DAG_CBOR, d))
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(values)
def test_roundtrip(value: Any) -> None:
    data = dagcbor.encode(value)
    assert dagcbor.decode(data) == value
    assert dagcbor.encode(dagcbor.decode(data)) == data


# In the JSON form a map {"$link": ...}, {"$bytes": ...} or {"$type": ""} means
# something else (or nothing valid): the JSON round trip holds for other keys.
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.text(max_size=8).filter(lambda k: not k.startswith("$")), inner, max_size=4
        )
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_json_roundtrip(value: Any) -> None:
    assert dagcbor.from_json(dagcbor.to_json({"v": value})) == {"v": value}


@settings(max_examples=300, deadline=None)
@given(values, st.data())
def test_flipped_byte_is_refused_or_reencodes_identically(value: Any, data: st.DataObject) -> None:
    blob = bytearray(dagcbor.encode(value))
    i = data.draw(st.integers(0, len(blob) - 1))
    blob[i] ^= data.draw(st.integers(1, 255))
    try:
        decoded = dagcbor.decode(bytes(blob))
    except DecodeError:
        return
    # Whatever is accepted is canonical: it re-encodes to exactly the input.
    assert dagcbor.encode(decoded) == bytes(blob)


# -- CIDs ---------------------------------------------------------------------------


def test_cid_forms() -> None:
    cid = cid_for_dag_cbor(b"\xa0")
    assert cid.to_str().startswith("bafyrei")
    assert CID.from_str(cid.to_str()) == cid
    assert CID.from_bytes(cid.to_bytes()) == cid
    assert bytes(cid) == cid.to_bytes()
    raw = cid_for_raw(b"blob")
    assert raw.to_str().startswith("bafkrei")
    assert raw.codec == CODEC_RAW
    assert raw != CID(CODEC_DAG_CBOR, raw.digest)


BAD_CID_STRINGS = {
    "cidv0": "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG",
    "upper": "BAFYREICLP443LAVOGVHJ3D2OB2CXBFUSCNI2K5JK7BEBJZG7KHL3ESABWQ",
    "mixed-case": "bafyreiclp443lavogvhj3d2ob2cxbfuscni2k5jk7bebjzg7khl3esaBwq",
    "padded": "bafyreiclp443lavogvhj3d2ob2cxbfuscni2k5jk7bebjzg7khl3esabwq=",
    "base58": "zdj7WWeQ43G6JJvLWQWZpyHuAMq6uYWRjkBXFad11vE2LHhQ7",
    "truncated": "bafyreiclp443lavogvhj3d2ob2cxbfuscni2k5jk7bebjzg7khl3esab",
    "dag-pb": "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi",
    "non-zero-pad-bits": "bafyreiclp443lavogvhj3d2ob2cxbfuscni2k5jk7bebjzg7khl3esabwr",
    "empty": "",
}


@pytest.mark.parametrize("text", list(BAD_CID_STRINGS.values()), ids=list(BAD_CID_STRINGS))
def test_bad_cid_strings(text: str) -> None:
    with pytest.raises(InvalidSyntax):
        CID.from_str(text)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        bytes([0x01, 0x71, 0x12, 0x20]) + DIGEST + b"\x00",
        bytes([0x01, 0x71, 0x12, 0x20]) + DIGEST[:-1],
        bytes([0x00, 0x01, 0x71, 0x12, 0x20]) + DIGEST[:-1],
        bytes([0x12, 0x20]) + DIGEST,
        bytes([0x01, 0x70, 0x12, 0x20]) + DIGEST,
        bytes([0x01, 0x71, 0x13, 0x20]) + DIGEST,
    ],
    ids=["empty", "trailing", "short", "multibase-prefix", "v0", "dag-pb", "sha512-code"],
)
def test_bad_cid_bytes(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        CID.from_bytes(raw)


def test_cid_base64_unpadded_matches_fixture_bytes() -> None:
    # The fixtures give bytes as unpadded base64: make sure ours writes the same.
    assert dagcbor.to_json(b"\xff\xfe") == {
        "$bytes": base64.b64encode(b"\xff\xfe").decode().rstrip("=")
    }
