"""Signed labels: codec, signatures, JSON form, negation and expiry."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
from typing import Any

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.cid import cid_for_msgpack
from protocol.encoding import encode
from protocol.errors import DecodeError, InvalidLabel, InvalidSignature
from protocol.labels import (
    MAX_CTS_AHEAD,
    MAX_LABEL_BYTES,
    Label,
    check_cts,
    current_labels,
    retraction_cts,
)

from .seeds import seeded_key

OURS = (InvalidLabel, InvalidSignature, DecodeError)

KEY = seeded_key(7)
OTHER = seeded_key(8)
SRC = "did:skyfed:ocrlxjjqgc2kmohyklx24khp"
SUBJECT = "did:skyfed:aaaaaaaaaaaaaaaaaaaaaaaa"
POST = SUBJECT + "/app.bsky.feed.post/3jzfcijpj2z2a"
URI = "at://" + POST
CTS = "2024-01-01T00:00:00Z"


def label(**fields: Any) -> Label:
    base: dict[str, Any] = {"src": SRC, "uri": URI, "val": "!warn", "cts": CTS}
    return Label(**{**base, **fields})


def full() -> Label:
    return label(
        cid="bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm",
        val="spam",
        neg=True,
        exp="2025-01-01T00:00:00.000Z",
    ).sign(KEY)


# -- known answers ------------------------------------------------------------------------

KNOWN_SIG = "cExht7s4pTDDOkp1/Cx9EQFLtGVdQRbZSEJarGOFhaJdWwArCOb3BKsFyffXJrTDviZAfD4ZSJr1fhv8qVCABg"
KNOWN_CID = "bagaqierat37476oathj5njmct56osyaa3jjivrc7vnsxx3xejod5zef2a2bq"


def test_known_answer() -> None:
    signed = label().sign(KEY)
    assert signed.to_json()["sig"] == {"$bytes": KNOWN_SIG}
    assert len(signed.to_bytes()) == 231
    assert signed.label_cid.to_str() == KNOWN_CID


def test_independent_construction() -> None:
    unsigned = {"cts": CTS, "src": SRC, "uri": URI, "val": "!warn", "ver": 1}
    unsigned_bytes = msgpack.packb(unsigned, use_bin_type=True)
    sig = Ed25519PrivateKey.from_private_bytes(bytes([7]) * 32).sign(unsigned_bytes)
    signed = {"cts": CTS, "sig": sig, "src": SRC, "uri": URI, "val": "!warn", "ver": 1}
    signed_bytes = msgpack.packb(signed, use_bin_type=True)

    lab = label().sign(KEY)
    assert lab.unsigned_bytes() == unsigned_bytes
    assert lab.sig == sig
    assert lab.to_bytes() == signed_bytes
    assert lab.label_cid == cid_for_msgpack(signed_bytes)
    assert base64.b64encode(sig).decode().rstrip("=") == KNOWN_SIG


def test_optional_fields_encoding() -> None:
    lab = full()
    value = msgpack.unpackb(lab.to_bytes(), raw=False)
    assert list(value) == ["cid", "cts", "exp", "neg", "sig", "src", "uri", "val", "ver"]
    assert value["neg"] is True
    # neg is omitted, never written as false; absent optionals are omitted, not null.
    plain = msgpack.unpackb(label().to_bytes(), raw=False)
    assert list(plain) == ["cts", "src", "uri", "val", "ver"]


# -- round trips, signatures ---------------------------------------------------------------


@pytest.mark.parametrize(
    "make", [label, lambda: label().sign(KEY), full], ids=["bare", "signed", "full"]
)
def test_round_trips(make: Any) -> None:
    lab = make()
    assert Label.from_bytes(lab.to_bytes()) == lab
    assert Label.from_json(lab.to_json()) == lab


def test_sign_and_verify() -> None:
    lab = full()
    lab.verify(KEY.public)
    with pytest.raises(InvalidSignature):
        lab.verify(OTHER.public)
    with pytest.raises(InvalidSignature, match="not signed"):
        label().verify(KEY.public)
    for change in ({"val": "ham"}, {"neg": False}, {"exp": None}, {"cid": None}, {"uri": SUBJECT}):
        with pytest.raises(InvalidSignature):
            dataclasses.replace(lab, **change).verify(KEY.public)
    # Re-signing replaces the signature.
    assert lab.sign(OTHER).sig != lab.sig
    lab.sign(OTHER).verify(OTHER.public)


@pytest.mark.parametrize("make", [lambda: label().sign(KEY), full], ids=["plain", "full"])
def test_every_byte_flip_fails(make: Any) -> None:
    data = make().to_bytes()
    for i in range(len(data)):
        for bit in (0x01, 0x80):
            flipped = bytearray(data)
            flipped[i] ^= bit
            try:
                mutated = Label.from_bytes(bytes(flipped))
            except (DecodeError, InvalidLabel):
                continue
            with pytest.raises(InvalidSignature):
                mutated.verify(KEY.public)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_single_byte_change_is_refused(data: st.DataObject) -> None:
    """Never accepted as a different label by the same signer: it fails to decode, or
    its signature fails (or the change was no change)."""
    original = data.draw(st.sampled_from([label().sign(KEY), full()]))
    raw = bytearray(original.to_bytes())
    at = data.draw(st.integers(0, len(raw) - 1))
    raw[at] = data.draw(st.integers(0, 255).filter(lambda b: b != raw[at]))
    try:
        mutated = Label.from_bytes(bytes(raw))
    except (DecodeError, InvalidLabel):
        return
    assert mutated != original
    with pytest.raises(InvalidSignature):
        mutated.verify(KEY.public)


# -- strictness ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"ver": 2},
        {"ver": True},
        {"src": "not-a-did"},
        {"src": 5},
        {"uri": "https://example.com/post"},
        {"uri": "at://"},
        {"uri": "did:"},
        {"cid": "not a cid"},
        {"val": ""},
        {"val": "x" * 129},
        {"val": "é" * 65},
        {"val": "\ud800"},
        {"neg": 1},
        {"cts": "2024-01-01"},
        {"cts": "2024-13-01T00:00:00Z"},
        {"exp": "yesterday"},
        {"sig": b"short"},
    ],
    ids=repr,
)
def test_bad_fields(fields: dict[str, Any]) -> None:
    with pytest.raises(InvalidLabel):
        label(**fields)


def test_good_edges() -> None:
    assert label(val="x" * 128).val == "x" * 128
    assert label(val="é" * 64).val == "é" * 64
    assert label(uri=SUBJECT).uri == SUBJECT  # an account label
    assert label(uri="at://" + SUBJECT).uri == "at://" + SUBJECT
    assert label(cts="2024-01-01T00:00:00.123456789+05:30").cts.endswith("+05:30")


def test_from_bytes_strictness() -> None:
    lab = label().sign(KEY)
    value: dict[str, Any] = msgpack.unpackb(lab.to_bytes(), raw=False)
    with pytest.raises(DecodeError, match="neg"):
        Label.from_bytes(encode({**value, "neg": False}))
    with pytest.raises(DecodeError):  # null instead of absent
        Label.from_bytes(encode({**value, "exp": None}))
    with pytest.raises(DecodeError):
        Label.from_bytes(encode({**value, "$type": "com.atproto.label.defs#label"}))
    with pytest.raises(DecodeError):
        Label.from_bytes(encode({k: v for k, v in value.items() if k != "ver"}))
    with pytest.raises(DecodeError):
        Label.from_bytes(encode({**value, "sig": "text"}))
    with pytest.raises(DecodeError):
        Label.from_bytes(encode([1, 2]))
    with pytest.raises(DecodeError):
        Label.from_bytes(msgpack.packb(dict(reversed(value.items())), use_bin_type=True))
    with pytest.raises(DecodeError):
        Label.from_bytes(b"\x80" * (MAX_LABEL_BYTES + 1))
    with pytest.raises(DecodeError):
        Label.from_bytes(bytearray(lab.to_bytes()))  # type: ignore[arg-type]


def test_json_form() -> None:
    lab = full()
    data = lab.to_json()
    assert data["neg"] is True
    assert "=" not in data["sig"]["$bytes"]
    assert "neg" not in label().to_json()
    # Forms other implementations write: neg false, $type, padded base64.
    padded = base64.b64encode(lab.sig or b"").decode()
    plain = label().sign(KEY)
    other: dict[str, Any] = {
        **plain.to_json(),
        "neg": False,
        "$type": "com.atproto.label.defs#label",
        "sig": {"$bytes": base64.b64encode(plain.sig or b"").decode()},
    }
    assert Label.from_json(other) == plain
    assert Label.from_json({**data, "sig": {"$bytes": padded}}) == lab


@pytest.mark.parametrize(
    "change",
    [
        {"$type": "app.bsky.feed.post"},
        {"extra": 1},
        {"sig": "AAAA"},
        {"sig": {"$bytes": "not base64!"}},
        {"sig": {"$bytes": "AAAA", "x": 1}},
        {"sig": {"$bytes": "AAAA"}},  # decodes, but not 64 bytes
        {"sig": {"$bytes": "A" * 1000}},
        {"sig": {"$bytes": 5}},
        {"ver": "1"},
        {"neg": "true"},
    ],
    ids=repr,
)
def test_bad_json(change: dict[str, Any]) -> None:
    with pytest.raises(InvalidLabel):
        Label.from_json({**label().sign(KEY).to_json(), **change})


def test_bad_json_shapes() -> None:
    with pytest.raises(InvalidLabel):
        Label.from_json([])  # type: ignore[arg-type]
    without_src = {k: v for k, v in label().to_json().items() if k != "src"}
    with pytest.raises(InvalidLabel):
        Label.from_json(without_src)


# -- property tests ---------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_raise_only_our_errors(data: bytes) -> None:
    with contextlib.suppress(*OURS):
        Label.from_bytes(data)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_labels_raise_only_our_errors(data: st.DataObject) -> None:
    buf = bytearray(full().to_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(buf)))
        action = data.draw(st.sampled_from(["replace", "insert", "delete"]))
        byte = data.draw(st.integers(0, 255))
        if action == "replace" and at < len(buf):
            buf[at] = byte
        elif action == "insert":
            buf.insert(at, byte)
        elif at < len(buf):
            del buf[at]
    try:
        lab = Label.from_bytes(bytes(buf))
    except OURS:
        return
    with contextlib.suppress(InvalidSignature):
        lab.verify(KEY.public)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["ver", "src", "uri", "cid", "val", "neg", "cts", "exp", "sig", "$type"]),
        json_values,
    )
)
def test_random_json_raises_only_our_errors(change: dict[str, Any]) -> None:
    with contextlib.suppress(*OURS):
        Label.from_json({**full().to_json(), **change})


# -- current labels ---------------------------------------------------------------------------

NOW = "2024-06-01T00:00:00Z"


def test_negation_retracts_only_when_later() -> None:
    pos = label(cts="2024-01-01T00:00:00Z")
    neg_later = label(cts="2024-01-02T00:00:00Z", neg=True)
    neg_earlier = label(cts="2023-12-31T00:00:00Z", neg=True)
    assert current_labels([pos, neg_later], NOW) == []
    assert current_labels([neg_later, pos], NOW) == []
    assert current_labels([pos, neg_earlier], NOW) == [pos]
    # A label issued again after its negation is in force again.
    again = label(cts="2024-01-03T00:00:00Z")
    assert current_labels([pos, neg_later, again], NOW) == [again]
    # A negation alone shows nothing.
    assert current_labels([neg_later], NOW) == []


def test_negation_is_per_src_uri_val() -> None:
    pos = label()
    others = [
        label(cts="2024-02-01T00:00:00Z", neg=True, src="did:web:other.example"),
        label(cts="2024-02-01T00:00:00Z", neg=True, uri=SUBJECT),
        label(cts="2024-02-01T00:00:00Z", neg=True, val="!hide"),
    ]
    assert current_labels([pos, *others], NOW) == [pos]


def test_timestamps_compare_as_instants() -> None:
    pos = label(cts="2024-01-01T10:00:00Z")
    # 11:30+02:00 is 09:30Z: earlier, so no retraction, though it sorts later as text.
    neg = label(cts="2024-01-01T11:30:00+02:00", neg=True)
    assert current_labels([pos, neg], NOW) == [pos]
    # 05:30-05:00 is 10:30Z: later.
    neg2 = label(cts="2024-01-01T05:30:00-05:00", neg=True)
    assert current_labels([pos, neg2], NOW) == []
    # Fractions of any precision: .5 is after .45, .10 equals .1.
    pos_frac = label(cts="2024-01-01T10:00:00.45Z")
    assert current_labels([pos_frac, label(cts="2024-01-01T10:00:00.5Z", neg=True)], NOW) == []
    tie_neg = label(cts="2024-01-01T10:00:00.450000Z", neg=True)
    assert current_labels([pos_frac, tie_neg], NOW) == [pos_frac]


def test_ties() -> None:
    pos = label()
    neg = label(neg=True)
    assert current_labels([pos, neg], NOW) == [pos]
    assert current_labels([neg, pos], NOW) == [pos]
    # Same instant, different metadata: the lower label CID wins, in any order.
    a = label(exp="2030-01-01T00:00:00Z")
    b = label(cid="bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm")
    winner = min(a, b, key=lambda lab: lab.label_cid.to_bytes())
    assert current_labels([a, b], NOW) == [winner]
    assert current_labels([b, a], NOW) == [winner]


def test_expiry() -> None:
    assert current_labels([label(exp=NOW)], NOW) == []
    assert current_labels([label(exp="2024-05-31T23:59:59.999Z")], NOW) == []
    later = label(exp="2024-06-01T00:00:00.001Z")
    assert current_labels([later], NOW) == [later]
    assert current_labels([label(exp="2024-06-01T01:00:00+02:00")], NOW) == []
    # The newest label's expiry decides, even when an older one had none.
    old = label(cts="2024-01-01T00:00:00Z")
    new_expired = label(cts="2024-02-01T00:00:00Z", exp="2024-03-01T00:00:00Z")
    assert current_labels([old, new_expired], NOW) == []


# -- time: the cts window and the current key's negation (issue 12, finding 5) ------------


def test_a_label_dated_far_ahead_is_refused_and_takes_no_part() -> None:
    # Dated in the year 9999 by a leaked (old) key: before the bound nothing could be
    # later, so it stayed in force against every retraction.
    planted = label(val="!takedown", cts="9999-12-31T23:59:59.999Z").sign(OTHER)
    with pytest.raises(InvalidLabel, match="ahead of the clock"):
        check_cts(planted, NOW)
    retract = label(val="!takedown", cts=NOW, neg=True).sign(KEY)
    assert current_labels([planted, retract], NOW) == []
    assert current_labels([planted], NOW) == []


def test_the_window_is_max_cts_ahead_seconds() -> None:
    assert MAX_CTS_AHEAD == 300
    check_cts(label(cts="2024-06-01T00:05:00Z"), NOW)
    check_cts(label(cts="2024-06-01T01:05:00+01:00"), NOW)  # the same instant
    with pytest.raises(InvalidLabel):
        check_cts(label(cts="2024-06-01T00:05:00.001Z"), NOW)
    with pytest.raises(InvalidLabel):
        check_cts(label(cts="2024-06-01T00:05:01Z"), NOW, ahead=60)
    edge = label(cts="2024-06-01T00:05:00Z")
    assert current_labels([edge], NOW) == [edge]
    assert current_labels([label(cts="2024-06-01T00:05:00.5Z")], NOW) == []


def test_a_negation_by_the_current_key_wins_a_tie() -> None:
    edge = "2024-06-01T00:05:00Z"
    planted = label(val="!takedown", cts=edge).sign(OTHER)  # the old key, leaked
    retract = label(val="!takedown", cts=edge, neg=True).sign(KEY)  # the current key
    current = {SRC: KEY.did_key()}
    for order in ([planted, retract], [retract, planted]):
        assert current_labels(order, NOW, current_keys=current) == []
        # Without knowing the current key, a positive label wins the tie (as before).
        assert current_labels(order, NOW) == [planted]
    # A negation by the old key does not beat the current key's label by a tie.
    mine = label(val="!takedown", cts=edge).sign(KEY)
    theirs = label(val="!takedown", cts=edge, neg=True).sign(OTHER)
    assert current_labels([theirs, mine], NOW, current_keys=current) == [mine]
    # Nor does an unsigned negation, or one for a labeler whose key is unreadable.
    unsigned = label(val="!takedown", cts=edge, neg=True)
    assert current_labels([planted, unsigned], NOW, current_keys=current) == [planted]
    assert current_labels([planted, retract], NOW, current_keys={SRC: "junk"}) == [planted]


def test_retraction_cts_ties_a_label_dated_ahead() -> None:
    assert retraction_cts([], NOW) == NOW
    assert retraction_cts(["2024-01-01T00:00:00Z"], NOW) == NOW
    assert retraction_cts(["2024-06-01T00:04:00Z", "2024-06-01T00:02:00Z"], NOW) == (
        "2024-06-01T00:04:00Z"
    )
    # Past the window it is ignored (refused on receipt; no part in the current set).
    assert retraction_cts(["2024-06-01T00:05:01Z"], NOW) == NOW


def test_current_labels_input_checks() -> None:
    with pytest.raises(InvalidLabel):
        current_labels([label()], "now")
    with pytest.raises(InvalidLabel):
        current_labels(["label"], NOW)  # type: ignore[list-item]


def pool() -> list[Label]:
    out = []
    for i, val in enumerate(["!hide", "!warn", "spam"]):
        for j, uri in enumerate([URI, SUBJECT]):
            out.append(label(val=val, uri=uri, cts=f"2024-01-0{i + 1}T00:00:00Z"))
            out.append(label(val=val, uri=uri, cts=f"2024-01-0{i + j + 1}T00:00:00Z", neg=True))
            exp = f"2024-0{5 + j}-30T00:00:00Z"
            out.append(label(val=val, uri=uri, cts="2024-01-05T00:00:00Z", exp=exp))
    return out


@settings(max_examples=50, deadline=None)
@given(st.permutations(pool()))
def test_current_labels_independent_of_order(labels: list[Label]) -> None:
    result = current_labels(labels, NOW)
    assert result == current_labels(pool(), NOW)
    assert result == sorted(result, key=lambda lab: (lab.src, lab.uri, lab.val))
    # Only the labels expiring after NOW (j == 1) survive: 3 values.
    assert [(lab.uri, lab.val) for lab in result] == [
        (SUBJECT, "!hide"),
        (SUBJECT, "!warn"),
        (SUBJECT, "spam"),
    ]
