"""Tests for protocol.peerwire: the peer link's message codec and handshake payload.

Every message type round-trips; every refusal in :func:`decode_message` is reached;
random and mutated bytes only ever raise :class:`DecodeError` (never a stray
``KeyError``/``TypeError`` from msgpack or the schema check).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.encoding import encode
from protocol.errors import DecodeError, InvalidSignature, LocalProtocolError
from protocol.peerwire import (
    MAX_FRAME,
    PROTOCOL_VERSION,
    auth_payload,
    decode_message,
    encode_message,
)

from .seeds import seeded_key

DID = "did:skyfed:ocrlxjjqgc2kmohyklx24khp"
CID1 = bytes.fromhex("0181041220") + bytes(range(32))
NODE_A = seeded_key(11)
NODE_B = seeded_key(12)

#: One valid example of every message type (fields besides ``t``).
SAMPLES: dict[str, dict[str, Any]] = {
    "hello": {
        "v": PROTOCOL_VERSION,
        "node": NODE_A.did_key(),
        "url": "https://a.example.com",
        "challenge": bytes(32),
        "caps": ["plumtree", "negentropy-v1"],
        "share": True,
    },
    "auth": {"sig": bytes(64)},
    "push": {"id": CID1, "kind": "commit", "data": b"event", "round": 2},
    "ihave": {"ids": [CID1, bytes(32)], "round": 0},
    "graft": {"ids": [CID1]},
    "prune": {},
    "neg": {"sid": 3, "msg": b"\x61"},
    "whatis": {"rid": 1, "ids": [bytes(32)]},
    "heads": {"rid": None, "items": [{"kind": "repo", "did": DID, "head": CID1, "rev": "x"}]},
    "getrepo": {"rid": 2, "did": DID, "since": None},
    "repo": {"rid": 2, "did": DID, "car": b"car"},
    "getident": {"rid": 4, "did": DID},
    "ident": {"rid": 4, "did": DID, "ops": [b"op"], "handle": None},
    "getlabels": {"rid": 5, "src": DID},
    "labels": {"rid": 5, "src": DID, "labels": [b"label"]},
    "getblob": {"rid": 6, "did": DID, "cid": bytes.fromhex("01551220") + bytes(32)},
    "blob": {"rid": 6, "cid": bytes.fromhex("01551220") + bytes(32), "data": b"\x89PNG"},
    "error": {"rid": None, "error": "RepoNotFound", "message": DID},
    "peers": {"urls": ["https://b.example.com"]},
}
TYPES = sorted(SAMPLES)


def message(t: str, **changes: Any) -> dict[str, Any]:
    return {"t": t, **SAMPLES[t], **changes}


# ---------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("t", TYPES)
def test_round_trip(t: str) -> None:
    data = encode_message(t, **SAMPLES[t])
    assert decode_message(data) == message(t)
    assert encode(decode_message(data)) == data


@pytest.mark.parametrize(
    ("t", "changes"),
    [
        ("hello", {"url": None, "caps": [], "share": False}),
        ("heads", {"rid": 9, "items": []}),
        ("heads", {"items": [{"kind": "identity", "did": DID, "head": CID1}]}),
        ("getrepo", {"since": "3mbd3a4esu22b"}),
        ("error", {"rid": 7}),
        ("push", {"kind": "identity", "id": b"", "round": -1}),
        ("ihave", {"ids": [bytes(64)] * 4096}),
        ("peers", {"urls": ["u"] * 64}),
        ("ident", {"ops": [b""] * 1000}),
        ("push", {"kind": "label"}),
        ("labels", {"labels": [b""] * 10_000}),
        ("hello", {"caps": ["c"] * 32}),
    ],
)
def test_round_trip_variants(t: str, changes: dict[str, Any]) -> None:
    fields = {**SAMPLES[t], **changes}
    assert decode_message(encode_message(t, **fields)) == {"t": t, **fields}


def test_every_type_has_a_sample() -> None:
    from protocol import peerwire

    assert set(peerwire._SCHEMAS) == set(SAMPLES)


def test_encode_unknown_type_is_local_misuse() -> None:
    # Not a peer's fault: our own code asked for a type that does not exist.
    with pytest.raises((ValueError, LocalProtocolError)):
        encode_message("gossip")


# ---------------------------------------------------------------------------- refusals

REFUSED: list[tuple[str, bytes, str]] = [
    ("empty", b"", "msgpack"),
    ("reserved-byte", b"\xc1", "msgpack"),
    ("float", b"\xcb" + bytes(8), ""),
    ("list", encode(["t", "prune"]), "must be a map"),
    ("string", encode("prune"), "must be a map"),
    ("no-type", encode({"sig": bytes(64)}), "string type 't'"),
    ("int-type", encode({"t": 1}), "string type 't'"),
    ("bytes-type", encode({"t": b"prune"}), "string type 't'"),
    ("unknown-type", encode({"t": "gossip"}), "unknown peer message type"),
    ("missing-field", encode({"t": "auth"}), "fields must be exactly"),
    ("extra-field", encode({**message("prune"), "x": 1}), "fields must be exactly"),
    ("wrong-type", encode(message("push", round="0")), "push.round has the wrong type"),
    ("bool-for-int", encode(message("neg", sid=True)), "neg.sid has the wrong type"),
    ("int-for-bool", encode(message("hello", share=1)), "hello.share has the wrong type"),
    ("null-rid", encode(message("getident", rid=None)), "getident.rid has the wrong type"),
    ("bytes-for-str", encode(message("getrepo", did=DID.encode())), "getrepo.did"),
    ("str-for-bytes", encode(message("auth", sig="sig")), "auth.sig"),
    ("push-kind", encode(message("push", kind="labels")), "push.kind"),
    ("push-id-65", encode(message("push", id=bytes(65))), "push.id is too long"),
    ("ihave-not-bytes", encode(message("ihave", ids=["x"])), "every entry must be bytes"),
    ("ihave-id-65", encode(message("ihave", ids=[bytes(65)])), "an id is too long"),
    ("graft-id-65", encode(message("graft", ids=[bytes(65)])), "an id is too long"),
    ("whatis-id-65", encode(message("whatis", ids=[bytes(65)])), "an id is too long"),
    ("ihave-4097", encode(message("ihave", ids=[b""] * 4097)), "more than 4096"),
    ("graft-4097", encode(message("graft", ids=[b""] * 4097)), "more than 4096"),
    ("whatis-4097", encode(message("whatis", ids=[b""] * 4097)), "more than 4096"),
    ("challenge-31", encode(message("hello", challenge=bytes(31))), "32 bytes"),
    ("challenge-33", encode(message("hello", challenge=bytes(33))), "32 bytes"),
    ("caps-not-str", encode(message("hello", caps=[b"c"])), "every entry must be str"),
    ("caps-33", encode(message("hello", caps=["c"] * 33)), "more than 32"),
    ("peers-not-str", encode(message("peers", urls=[1])), "every entry must be str"),
    ("peers-65", encode(message("peers", urls=["u"] * 65)), "more than 64"),
    ("ident-not-bytes", encode(message("ident", ops=["op"])), "every entry must be bytes"),
    ("ident-1001", encode(message("ident", ops=[b""] * 1001)), "more than 1000"),
    ("heads-not-map", encode(message("heads", items=[CID1])), "every entry must be dict"),
    ("heads-4097", encode(message("heads", items=[{}] * 4097)), "more than 4096"),
    ("trailing", encode(message("prune")) + b"\xc0", "trailing"),
    ("truncated", encode(message("graft"))[:-1], ""),
]


@pytest.mark.parametrize(("data", "why"), [pytest.param(d, w, id=i) for i, d, w in REFUSED])
def test_refused(data: bytes, why: str) -> None:
    with pytest.raises(DecodeError, match=why or None) as info:
        decode_message(data)
    assert info.value.error == "InvalidRequest"
    assert info.value.status == 400


def test_refuses_over_max_frame_before_decoding() -> None:
    overhead = len(encode_message("push", id=b"", kind="commit", data=b"", round=0))
    fits = encode_message(
        "push", id=b"", kind="commit", data=bytes(MAX_FRAME - overhead - 3), round=0
    )
    assert len(fits) == MAX_FRAME
    assert decode_message(fits)["t"] == "push"
    with pytest.raises(DecodeError, match="over"):
        decode_message(fits + b"\x00")
    # The size bound is checked first: junk that long is refused for its size.
    with pytest.raises(DecodeError, match=f"over {MAX_FRAME}"):
        decode_message(b"\xc1" * (MAX_FRAME + 1))


def test_non_canonical_forms_are_refused() -> None:
    import msgpack

    # Keys in insertion order ("t" first) are not canonical.
    with pytest.raises(DecodeError):
        decode_message(msgpack.packb({"t": "graft", "ids": []}))
    # uint8 for a fixint.
    data = encode(message("getident", rid=7)).replace(b"\xa3rid\x07", b"\xa3rid\xcc\x07")
    with pytest.raises(DecodeError, match="canonical"):
        decode_message(data)


# ---------------------------------------------------------------------------- auth


def test_auth_payload_layout() -> None:
    challenge = bytes(range(32))
    a, b = NODE_A.did_key(), NODE_B.did_key()
    payload = auth_payload(challenge, a, b)
    assert payload == b"skyfed-peer-auth-v1\0" + challenge + b"\0" + a.encode() + b"\0" + b.encode()


def test_auth_signature_binds_both_nodes_and_the_challenge() -> None:
    challenge = bytes(range(32))
    a, b = NODE_A.did_key(), NODE_B.did_key()
    sig = NODE_A.sign(auth_payload(challenge, a, b))
    NODE_A.public.verify(sig, auth_payload(challenge, a, b))
    for payload in (
        auth_payload(challenge, b, a),  # roles swapped
        auth_payload(bytes(32), a, b),  # another challenge
        auth_payload(challenge, a, seeded_key(13).did_key()),  # replayed to a third node
    ):
        with pytest.raises(InvalidSignature):
            NODE_A.public.verify(sig, payload)


def test_auth_payloads_differ_for_different_inputs() -> None:
    c = bytes(32)
    a, b = NODE_A.did_key(), NODE_B.did_key()
    assert (
        len({auth_payload(c, a, b), auth_payload(c, b, a), auth_payload(bytes(31) + b"\1", a, b)})
        == 3
    )


# ---------------------------------------------------------------------------- fuzzing

_FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _decodes_or_refuses(data: bytes) -> None:
    try:
        msg = decode_message(data)
    except DecodeError:
        return
    # Accepted: it is a known type, canonical, and re-encodes to the same bytes.
    assert encode_message(msg["t"], **{k: v for k, v in msg.items() if k != "t"}) == data


@_FUZZ
@given(st.binary(max_size=512))
def test_random_bytes_raise_only_decode_error(data: bytes) -> None:
    _decodes_or_refuses(data)


_valid = st.sampled_from([encode_message(t, **SAMPLES[t]) for t in TYPES])


@_FUZZ
@given(_valid, st.data())
def test_mutated_messages_raise_only_decode_error(data: bytes, draw: st.DataObject) -> None:
    buf = bytearray(data)
    for _ in range(draw.draw(st.integers(1, 4))):
        kind = draw.draw(st.sampled_from(["flip", "set", "cut", "insert", "delete"]))
        if kind == "cut":
            del buf[draw.draw(st.integers(0, len(buf))) :]
            continue
        if kind == "insert":
            at = draw.draw(st.integers(0, len(buf)))
            buf[at:at] = draw.draw(st.binary(min_size=1, max_size=8))
            continue
        if not buf:
            continue
        at = draw.draw(st.integers(0, len(buf) - 1))
        if kind == "flip":
            buf[at] ^= 1 << draw.draw(st.integers(0, 7))
        elif kind == "set":
            buf[at] = draw.draw(st.integers(0, 255))
        else:
            del buf[at]
    _decodes_or_refuses(bytes(buf))


_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.text(max_size=8),
    st.binary(max_size=70),
)
_value = st.recursive(
    _scalar,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


@_FUZZ
@given(
    st.sampled_from([*TYPES, "nope"]),
    st.dictionaries(
        st.sampled_from(sorted({f for s in SAMPLES.values() for f in s} | {"x"})),
        _value,
        max_size=7,
    ),
)
def test_structured_maps_raise_only_decode_error(t: str, fields: dict[str, Any]) -> None:
    """Maps with a real type and plausible field names, but arbitrary values."""
    _decodes_or_refuses(encode({**fields, "t": t}))


@_FUZZ
@given(st.sampled_from(TYPES), st.data())
def test_one_field_swapped_for_a_random_value(t: str, draw: st.DataObject) -> None:
    fields = dict(SAMPLES[t])
    if fields:
        name = draw.draw(st.sampled_from(sorted(fields)))
        fields[name] = draw.draw(_value)
    _decodes_or_refuses(encode({**fields, "t": t}))
