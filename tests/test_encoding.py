"""Canonical msgpack: one encoding per value, and the decoder refuses the rest."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.encoding import MAX_DEPTH, decode, encode
from protocol.errors import DecodeError, LocalProtocolError

ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
scalars = st.none() | st.booleans() | ints | st.text() | st.binary()
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)


@given(values)
def test_round_trip(value: object) -> None:
    data = encode(value)  # type: ignore[arg-type]
    assert decode(data) == value
    assert encode(decode(data)) == data


@given(st.dictionaries(st.text(max_size=6), ints, max_size=8))
def test_key_order_does_not_change_bytes(d: dict[str, int]) -> None:
    reordered = dict(reversed(list(d.items())))
    assert encode(d) == encode(reordered)


@given(st.binary(max_size=200))
def test_random_bytes_raise_only_decode_error(data: bytes) -> None:
    try:
        value = decode(data)
    except DecodeError:
        return
    assert encode(value) == data


@given(values, st.data())
def test_mutated_bytes_raise_only_decode_error(value: object, data: st.DataObject) -> None:
    raw = bytearray(encode(value))  # type: ignore[arg-type]
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] = data.draw(st.integers(0, 255))
    try:
        again = decode(bytes(raw))
    except DecodeError:
        return
    assert encode(again) == bytes(raw)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        pytest.param(msgpack.packb({"b": 1, "a": 2}), "order", id="unsorted-keys"),
        pytest.param(b"\x82\xa1a\x01\xa1a\x02", "duplicate", id="duplicate-keys"),
        pytest.param(msgpack.packb(1.5), "float", id="float"),
        pytest.param(msgpack.packb([1.5]), "float", id="nested-float"),
        pytest.param(b"\xcc\x05", "width", id="uint8-for-fixint"),
        pytest.param(b"\xd0\x05", "width", id="int8-for-positive"),
        pytest.param(b"\xd9\x01a", "width", id="str8-for-fixstr"),
        pytest.param(b"\xc0\xc0", "trailing", id="trailing-bytes"),
        pytest.param(b"\xcf" + (2**64 - 1).to_bytes(8, "big"), "range", id="uint64"),
        pytest.param(b"\xd4\x01\x00", "ext", id="ext-type"),
        pytest.param(b"\xa1\xff", "utf8", id="invalid-utf8"),
        pytest.param(b"\x81\x01\x02", "key", id="int-key"),
        pytest.param(b"\x91" * (MAX_DEPTH + 1) + b"\xc0", "depth", id="too-deep"),
        pytest.param(b"\x92\x01", "truncated", id="truncated"),
        pytest.param(b"", "empty", id="empty"),
        pytest.param(b"\xc1", "reserved", id="reserved-byte"),
    ],
)
def test_refuses_non_canonical(data: bytes, why: str) -> None:
    with pytest.raises(DecodeError):
        decode(data)


def test_refuses_over_size() -> None:
    with pytest.raises(DecodeError, match="limit"):
        decode(encode(b"x" * 100), max_size=50)


def test_depth_limit_is_exact() -> None:
    ok: object = None
    for _ in range(MAX_DEPTH):
        ok = [ok]
    assert decode(encode(ok)) == ok  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(1.0, id="float"),
        pytest.param({1: 2}, id="int-key"),
        pytest.param(2**64, id="big"),
    ],
)
def test_encode_refuses_outside_the_model(value: object) -> None:
    with pytest.raises(LocalProtocolError):
        encode(value)  # type: ignore[arg-type]


def test_known_bytes() -> None:
    value = {"text": "hi", "n": -1, "big": 300, "b": b"\x00", "l": [True, None]}
    # fixmap(5); keys sorted by UTF-8 bytes: b, big, l, n, text; 300 as uint16;
    # -1 as negative fixint; bytes as bin8.
    expected = "85a162c40100a3626967cd012ca16c92c3c0a16effa474657874a26869"
    assert encode(value).hex() == expected
    assert decode(bytes.fromhex(expected)) == value
