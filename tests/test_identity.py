"""Identity ops, log resolution (forks, priority, tombstones) and DID documents."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import random
from typing import Any

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.cid import CID, cid_for_msgpack, cid_for_raw
from protocol.encoding import encode
from protocol.errors import DecodeError, IdentityError, InvalidSignature
from protocol.identity import (
    MAX_CHAIN_OPS,
    MAX_EVIDENCE_OPS,
    MAX_LOG_OPS,
    MAX_OP_BYTES,
    MAX_RESOLVE_OPS,
    IdentityOp,
    IdentityState,
    ResolvedLog,
    admit_ops,
    check_new_op,
    did_document,
    did_for_genesis,
    resolve_log,
    validate_skyfed_did,
)
from protocol.keys import SigningKey

from .seeds import seeded_key

# The errors identity code may raise for bad input; anything else escaping is a bug.
OURS = (IdentityError, DecodeError, InvalidSignature)

K = [seeded_key(i) for i in range(8)]
HANDLE = "alice.example.com"
PDS = "https://pds.example.com"


def genesis(
    rotation: tuple[SigningKey, ...] = (K[1], K[2]),
    signing: SigningKey = K[3],
    signer: SigningKey = K[1],
    handle: str = HANDLE,
) -> IdentityOp:
    return IdentityOp.create(
        [k.did_key() for k in rotation], signing.did_key(), handle, PDS, None, signer
    )


def update(
    prev: IdentityOp,
    signer: SigningKey,
    *,
    rotation: tuple[SigningKey, ...] = (K[1], K[2]),
    signing: SigningKey = K[3],
    handle: str = HANDLE,
    endpoint: str = PDS,
) -> IdentityOp:
    return IdentityOp.create(
        [k.did_key() for k in rotation], signing.did_key(), handle, endpoint, prev.cid, signer
    )


def resolve(*ops: IdentityOp, did: str | None = None) -> ResolvedLog:
    root = did if did is not None else did_for_genesis(ops[0])
    return resolve_log(root, [op.to_bytes() for op in ops])


# -- known answers ------------------------------------------------------------------------

# Pinned from the implementation and cross-checked below by an independent construction
# (plain msgpack + cryptography), so an encoding change cannot slip through unnoticed.
GENESIS_DID = "did:skyfed:ocrlxjjqgc2kmohyklx24khp"
GENESIS_CID = "bagaqieraocrlxjjqgc2kmohyklx24khpxlatqg2rich5m6je3q7xhxlmblwq"


def test_genesis_known_answer() -> None:
    op = genesis()
    assert did_for_genesis(op) == GENESIS_DID
    assert op.cid.to_str() == GENESIS_CID
    assert len(op.to_bytes()) == 432


def test_genesis_independent_construction() -> None:
    unsigned: dict[str, Any] = {
        "alsoKnownAs": ["at://" + HANDLE],
        "prev": None,
        "rotationKeys": [K[1].did_key(), K[2].did_key()],
        "services": {"atproto_pds": {"endpoint": PDS, "type": "AtprotoPersonalDataServer"}},
        "type": "skyfed_op",
        "verificationMethods": {"atproto": K[3].did_key()},
    }
    # Keys written already sorted: msgpack keeps insertion order.
    unsigned_bytes = msgpack.packb(unsigned, use_bin_type=True)
    sig = Ed25519PrivateKey.from_private_bytes(bytes([1]) * 32).sign(unsigned_bytes)
    signed = dict(unsigned)
    signed = {k: signed[k] for k in ["alsoKnownAs", "prev", "rotationKeys", "services"]}
    signed["sig"] = sig
    signed["type"] = unsigned["type"]
    signed["verificationMethods"] = unsigned["verificationMethods"]
    signed_bytes = msgpack.packb(signed, use_bin_type=True)

    op = genesis()
    assert op.unsigned_bytes() == unsigned_bytes
    assert op.sig == sig
    assert op.to_bytes() == signed_bytes
    digest = hashlib.sha256(signed_bytes).digest()
    assert did_for_genesis(op) == "did:skyfed:" + base64.b32encode(digest).decode().lower()[:24]
    # The DID's 24 characters are also the digest part of the genesis CID string.
    assert op.cid.to_str()[9:33] == GENESIS_DID.removeprefix("did:skyfed:")


def test_tombstone_encoding() -> None:
    g = genesis()
    t = IdentityOp.tombstone(g.cid, K[1])
    value: dict[str, Any] = {"prev": g.cid.to_bytes(), "type": "skyfed_tombstone"}
    assert t.unsigned_bytes() == msgpack.packb(value, use_bin_type=True)
    assert t.to_bytes() == encode({**value, "sig": t.sig})
    assert t.is_tombstone
    assert not t.is_genesis


# -- round trips and codec strictness -----------------------------------------------------


def test_round_trips() -> None:
    g = genesis()
    u = update(g, K[2], signing=K[4], endpoint="http://127.0.0.1:8080")
    t = IdentityOp.tombstone(u.cid, K[1])
    for op in (g, u, t):
        again = IdentityOp.from_bytes(op.to_bytes())
        assert again == op
        assert again.cid == op.cid == cid_for_msgpack(op.to_bytes())


@pytest.mark.parametrize("which", ["genesis", "update", "tombstone"])
def test_every_byte_flip_fails(which: str) -> None:
    g = genesis()
    prev_keys = g.rotation_keys
    op = {
        "genesis": g,
        "update": update(g, K[2], signing=K[4]),
        "tombstone": IdentityOp.tombstone(g.cid, K[2]),
    }[which]
    data = op.to_bytes()
    for i in range(len(data)):
        for bit in (0x01, 0x80):
            flipped = bytearray(data)
            flipped[i] ^= bit
            try:
                mutated = IdentityOp.from_bytes(bytes(flipped))
            except (DecodeError, IdentityError):
                continue
            with pytest.raises(InvalidSignature):
                mutated.verify(prev_keys)
            if mutated.is_genesis:
                with pytest.raises(InvalidSignature):
                    mutated.verify(mutated.rotation_keys)


def test_from_bytes_refuses_non_canonical_and_extra_fields() -> None:
    g = genesis()
    value: dict[str, Any] = msgpack.unpackb(g.to_bytes(), raw=False)
    with pytest.raises(DecodeError):  # keys out of order
        IdentityOp.from_bytes(msgpack.packb(dict(reversed(value.items())), use_bin_type=True))
    with pytest.raises(DecodeError):  # an unknown field
        IdentityOp.from_bytes(encode({**value, "extra": 1}))
    with pytest.raises(DecodeError):  # a missing field
        IdentityOp.from_bytes(encode({k: v for k, v in value.items() if k != "services"}))
    with pytest.raises(DecodeError):  # prev as a string, as did:plc has it
        IdentityOp.from_bytes(encode({**value, "prev": g.cid.to_str()}))
    with pytest.raises(IdentityError):  # prev of the raw codec
        IdentityOp.from_bytes(encode({**value, "prev": cid_for_raw(b"x").to_bytes()}))
    with pytest.raises(DecodeError):
        IdentityOp.from_bytes(encode({**value, "type": "plc_operation"}))
    with pytest.raises(IdentityError):
        IdentityOp.from_bytes(encode({**value, "alsoKnownAs": []}))
    with pytest.raises(IdentityError):
        IdentityOp.from_bytes(encode({**value, "alsoKnownAs": ["at://a.com", "at://b.com"]}))
    with pytest.raises(IdentityError):
        IdentityOp.from_bytes(encode({**value, "alsoKnownAs": ["https://a.com"]}))
    with pytest.raises(IdentityError):
        IdentityOp.from_bytes(encode({**value, "alsoKnownAs": ["at://Alice.example.com"]}))
    with pytest.raises(IdentityError):
        IdentityOp.from_bytes(encode({**value, "verificationMethods": {"atproto": "did:key:z"}}))
    svc: dict[str, Any] = {"atproto_pds": {"endpoint": PDS, "type": "Other"}}
    with pytest.raises(IdentityError):
        IdentityOp.from_bytes(encode({**value, "services": svc}))
    with pytest.raises(DecodeError):
        IdentityOp.from_bytes(g.to_bytes() + b"\x00")
    with pytest.raises(DecodeError):
        IdentityOp.from_bytes(b"\x80" * (MAX_OP_BYTES + 1))
    with pytest.raises(DecodeError):
        IdentityOp.from_bytes("not bytes")  # type: ignore[arg-type]


# Any msgpack-model value, to build maps that are shaped almost like ops.
values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.text(max_size=20)
    | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_raise_only_our_errors(data: bytes) -> None:
    with contextlib.suppress(*OURS):
        IdentityOp.from_bytes(data)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_ops_raise_only_our_errors(data: st.DataObject) -> None:
    base = bytearray(
        data.draw(
            st.sampled_from([genesis(), IdentityOp.tombstone(genesis().cid, K[1])])
        ).to_bytes()
    )
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(base)))
        action = data.draw(st.sampled_from(["replace", "insert", "delete"]))
        byte = data.draw(st.integers(0, 255))
        if action == "replace" and at < len(base):
            base[at] = byte
        elif action == "insert":
            base.insert(at, byte)
        elif at < len(base):
            del base[at]
    try:
        op = IdentityOp.from_bytes(bytes(base))
    except OURS:
        return
    with contextlib.suppress(InvalidSignature):
        op.verify(genesis().rotation_keys)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_single_byte_change_to_a_signed_op_is_refused(data: st.DataObject) -> None:
    """Never accepted as a different op by the same signer: it fails to decode, or
    fails verification under the keys that signed the original."""
    g = genesis()
    original = data.draw(
        st.sampled_from([g, update(g, K[2], signing=K[4]), IdentityOp.tombstone(g.cid, K[1])])
    )
    raw = bytearray(original.to_bytes())
    at = data.draw(st.integers(0, len(raw) - 1))
    raw[at] = data.draw(st.integers(0, 255).filter(lambda b: b != raw[at]))
    try:
        mutated = IdentityOp.from_bytes(bytes(raw))
    except (DecodeError, IdentityError):
        return
    assert mutated != original
    with pytest.raises(InvalidSignature):
        mutated.verify(g.rotation_keys)  # the keys of the state the original follows
    # Nor does it take part in a log as anything but a rejected op.
    if mutated.prev is not None:
        assert resolve(g, mutated).chain == (g.cid,)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(msgpack.unpackb(genesis().to_bytes()))), values))
def test_op_shaped_maps_raise_only_our_errors(fields: dict[str, Any]) -> None:
    base: dict[str, Any] = msgpack.unpackb(genesis().to_bytes(), raw=False)
    with contextlib.suppress(*OURS):
        IdentityOp.from_bytes(encode({**base, **fields}))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=5))
def test_resolve_log_of_junk_raises_only_our_errors(junk: list[bytes]) -> None:
    with pytest.raises(IdentityError):
        resolve_log(GENESIS_DID, junk)
    result = resolve_log(GENESIS_DID, [*junk, genesis().to_bytes()])
    assert result.chain == (genesis().cid,)


# -- field validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://pds.example.com",
        "https://pds.example.com/",
        "http://127.0.0.1:8080",
        "http://localhost:1",
        "https://[::1]:443/base/path",
        "https://pds.example.com:65535/x/y",
    ],
)
def test_good_endpoints(endpoint: str) -> None:
    op = IdentityOp.create([K[1].did_key()], K[3].did_key(), HANDLE, endpoint, None, K[1])
    assert IdentityOp.from_bytes(op.to_bytes()).endpoint == endpoint


@pytest.mark.parametrize(
    "endpoint",
    [
        "",
        "ftp://pds.example.com",
        "HTTPS://pds.example.com",
        "https://",
        "https://user:pw@pds.example.com",
        "https://user@pds.example.com",
        "https://pds.example.com/#frag",
        "https://pds.example.com/?q=1",
        "https://pds.example.com:0",
        "https://pds.example.com:70000",
        "https://pds example.com",
        "https://pds.example.com/\u00e9",
        "https://-bad.example.com",
        "https://pds.example.com/" + "a" * 500,
        "pds.example.com",
    ],
)
def test_bad_endpoints(endpoint: str) -> None:
    with pytest.raises(IdentityError):
        IdentityOp.create([K[1].did_key()], K[3].did_key(), HANDLE, endpoint, None, K[1])


def test_field_bounds() -> None:
    keys = [k.did_key() for k in K[:6]]
    with pytest.raises(IdentityError, match="1 to 5"):
        IdentityOp.create(keys, K[3].did_key(), HANDLE, PDS, None, K[1])
    with pytest.raises(IdentityError, match="1 to 5"):
        IdentityOp.create([], K[3].did_key(), HANDLE, PDS, None, K[1])
    with pytest.raises(IdentityError, match="repeat"):
        IdentityOp.create([keys[1], keys[1]], K[3].did_key(), HANDLE, PDS, None, K[1])
    with pytest.raises(IdentityError, match="rotation key"):
        IdentityOp.create(["did:key:zNope"], K[3].did_key(), HANDLE, PDS, None, K[1])
    with pytest.raises(IdentityError, match="signing key"):
        IdentityOp.create([keys[1]], "did:web:example.com", HANDLE, PDS, None, K[1])
    with pytest.raises(IdentityError, match="handle"):
        IdentityOp.create([keys[1]], keys[3], "no_dots", PDS, None, K[1])
    with pytest.raises(IdentityError, match="own rotation keys"):
        IdentityOp.create([keys[1]], keys[3], HANDLE, PDS, None, K[2])
    # Five keys is the maximum, not one too many.
    five = IdentityOp.create(keys[1:6], keys[3], HANDLE, PDS, None, K[5])
    assert len(five.rotation_keys) == 5
    # Handles are stored in their one lowercase spelling.
    assert genesis(handle="Alice.Example.COM").handle == HANDLE
    # Direct construction validates too.
    with pytest.raises(IdentityError):
        dataclasses.replace(genesis(), sig=b"short")
    with pytest.raises(IdentityError):
        IdentityOp(type="skyfed_tombstone", prev=None, sig=bytes(64))
    with pytest.raises(IdentityError):
        IdentityOp(type="skyfed_tombstone", prev=genesis().cid, sig=bytes(64), handle=HANDLE)


@pytest.mark.parametrize(
    "did",
    [
        "did:plc:ocrlxjjqgc2kmohyklx24khp",
        "did:skyfed:OCRLXJJQGC2KMOHYKLX24KHP",
        "did:skyfed:ocrlxjjqgc2kmohyklx24kh",
        "did:skyfed:ocrlxjjqgc2kmohyklx24khp0",
        "did:skyfed:ocrlxjjqgc2kmohyklx24kh1",
    ],
)
def test_bad_dids(did: str) -> None:
    with pytest.raises(IdentityError):
        validate_skyfed_did(did)
    with pytest.raises(IdentityError):
        resolve_log(did, [genesis().to_bytes()])


# -- resolution -----------------------------------------------------------------------------


def test_genesis_state() -> None:
    g = genesis()
    result = resolve(g)
    assert result.state == IdentityState(
        did=GENESIS_DID,
        handle=HANDLE,
        signing_key=K[3].did_key(),
        rotation_keys=(K[1].did_key(), K[2].did_key()),
        endpoint=PDS,
        head=g.cid,
    )
    assert result.chain == (g.cid,)
    assert result.nullified == result.rejected == ()


def test_genesis_must_match_did_and_be_self_signed() -> None:
    g = genesis()
    other = genesis(handle="bob.example.com")
    result = resolve_log(GENESIS_DID, [other.to_bytes(), g.to_bytes()])
    assert result.chain == (g.cid,)
    assert [r.cid for r in result.rejected] == [other.cid]
    assert "another DID" in result.rejected[0].reason
    with pytest.raises(IdentityError, match="no valid genesis"):
        resolve_log(GENESIS_DID, [other.to_bytes()])
    # A genesis signed by a key outside its own rotation keys creates no identity.
    unsigned = dataclasses.replace(g, sig=bytes(64))
    forged = dataclasses.replace(g, sig=K[3].sign(unsigned.unsigned_bytes()))
    with pytest.raises(InvalidSignature):
        did_for_genesis(forged)
    forged_did = "did:skyfed:" + base64.b32encode(forged.cid.digest).decode().lower()[:24]
    with pytest.raises(IdentityError, match="no valid genesis"):
        resolve_log(forged_did, [forged.to_bytes()])
    with pytest.raises(IdentityError):
        did_for_genesis(update(g, K[1]))


def test_linear_chain_and_apply_agree() -> None:
    g = genesis()
    a = update(g, K[1], signing=K[4])
    b = update(a, K[2], handle="alice2.example.com")
    c = update(b, K[1], handle="alice2.example.com", endpoint="https://other.example.net")
    result = resolve(g, a, b, c)
    assert result.chain == (g.cid, a.cid, b.cid, c.cid)
    state = resolve(g).state
    for op in (a, b, c):
        state = state.apply(op.to_bytes())
    assert state == result.state
    assert state.handle == "alice2.example.com"
    assert state.endpoint == "https://other.example.net"
    assert state.head == c.cid


def test_signing_key_rotation() -> None:
    g = genesis(signing=K[3])
    a = update(g, K[2], signing=K[4])
    state = resolve(g, a).state
    assert state.signing_key == K[4].did_key()
    assert did_document(state)["verificationMethod"][0]["publicKeyMultibase"] == (
        K[4].did_key().removeprefix("did:key:")
    )


def test_rotation_key_rotation() -> None:
    g = genesis(rotation=(K[1], K[2]))
    a = update(g, K[1], rotation=(K[5],))
    stale = update(a, K[1], handle="stale.example.com")  # K1 is no longer a rotation key
    fresh = update(a, K[5], handle="fresh.example.com")
    result = resolve(g, a, stale, fresh)
    assert result.chain == (g.cid, a.cid, fresh.cid)
    assert [r.cid for r in result.rejected] == [stale.cid]
    state = resolve(g, a).state
    with pytest.raises(InvalidSignature):
        state.apply(stale.to_bytes())
    assert state.apply(fresh.to_bytes()).handle == "fresh.example.com"


def test_forged_rotation_is_rejected() -> None:
    g = genesis()
    forged = update(g, K[3], handle="evil.example.com")  # the signing key, not a rotation key
    result = resolve(g, forged)
    assert result.state == resolve(g).state
    assert [r.cid for r in result.rejected] == [forged.cid]
    assert "not signed by a rotation key" in result.rejected[0].reason
    with pytest.raises(InvalidSignature):
        resolve(g).state.apply(forged.to_bytes())


def test_bad_signature_at_the_right_prev_wins_nothing() -> None:
    g = genesis()
    honest = update(g, K[2], handle="honest.example.com")  # lower priority, valid
    # Claims to be from K1 (priority 0) but the signature is garbage; try many so some
    # have a lower CID than the honest op.
    junk = [
        dataclasses.replace(update(g, K[1], handle="evil.example.com"), sig=bytes([i]) * 64)
        for i in range(16)
    ]
    assert any(j.cid < honest.cid for j in junk)
    result = resolve(g, honest, *junk)
    assert result.chain == (g.cid, honest.cid)
    assert result.nullified == ()
    assert {r.cid for r in result.rejected} == {j.cid for j in junk}


def test_priority_rule() -> None:
    g = genesis(rotation=(K[1], K[2]))
    low = update(g, K[2], handle="low.example.com")
    low_child = update(low, K[2], handle="low2.example.com")
    high = update(g, K[1], handle="high.example.com")
    result = resolve(g, low, low_child, high)
    assert result.chain == (g.cid, high.cid)
    assert set(result.nullified) == {low.cid, low_child.cid}
    assert result.state.handle == "high.example.com"
    # It holds whichever CID happens to be lower.
    assert (low.cid < high.cid) or (high.cid < low.cid)


def test_priority_is_judged_at_the_fork_point() -> None:
    # K2 demotes K1 to second place; K1 can no longer beat K2 at later forks, but it can
    # still override K2's op at the earlier fork where K1 was first (no time window).
    g = genesis(rotation=(K[1], K[2]))
    demote = update(g, K[2], rotation=(K[2], K[1]))
    by_k2 = update(demote, K[2], handle="k2.example.com")
    by_k1 = update(demote, K[1], handle="k1.example.com")
    result = resolve(g, demote, by_k2, by_k1)
    assert result.chain == (g.cid, demote.cid, by_k2.cid)
    override = update(g, K[1], handle="override.example.com")
    result = resolve(g, demote, by_k2, by_k1, override)
    assert result.chain == (g.cid, override.cid)
    assert set(result.nullified) == {demote.cid, by_k2.cid, by_k1.cid}


def test_tie_break_by_lower_cid() -> None:
    g = genesis()
    siblings = [update(g, K[1], handle=f"h{i}.example.com") for i in range(5)]
    result = resolve(g, *siblings)
    winner = min(siblings, key=lambda op: op.cid.to_bytes())
    assert result.chain == (g.cid, winner.cid)
    assert set(result.nullified) == {op.cid for op in siblings} - {winner.cid}


def test_tombstone() -> None:
    g = genesis()
    a = update(g, K[2])
    t = IdentityOp.tombstone(a.cid, K[2])
    after = update(a, K[1], handle="after.example.com")  # competes with t: higher priority
    state = resolve(g, a, t).state
    assert state.tombstoned
    assert state.head == t.cid
    with pytest.raises(IdentityError, match="tombstoned"):
        did_document(state)
    follow = IdentityOp.create([K[1].did_key()], K[3].did_key(), HANDLE, PDS, t.cid, K[1])
    with pytest.raises(IdentityError, match="tombstoned"):
        state.apply(follow.to_bytes())
    result = resolve(g, a, t, follow)
    assert result.state.tombstoned
    assert [r.cid for r in result.rejected] == [follow.cid]
    assert "tombstone" in result.rejected[0].reason
    # A tombstone is an op like any other at its fork: a higher-priority key overrides it.
    result = resolve(g, a, t, after)
    assert not result.state.tombstoned
    assert result.chain == (g.cid, a.cid, after.cid)
    assert result.nullified == (t.cid,)
    # ... and a higher-priority tombstone overrides a regular op.
    t1 = IdentityOp.tombstone(a.cid, K[1])
    lower = update(a, K[2], handle="lower.example.com")
    assert resolve(g, a, lower, t1).state.tombstoned


def test_replay_changes_nothing() -> None:
    g = genesis()
    a = update(g, K[2], handle="a.example.com")
    b = update(a, K[2], handle="b.example.com")
    loser = update(a, K[2], handle="loser.example.com")
    win = min(b, loser, key=lambda op: op.cid.to_bytes())
    lose = loser if win is b else b
    base = resolve(g, a, b, loser)
    assert base.chain[-1] == win.cid
    assert base.nullified == (lose.cid,)
    # Re-submitting ops (duplicates, old chain ops, nullified ones) changes nothing.
    again = resolve(g, a, b, loser, g, a, lose, win, lose)
    assert again == base
    with pytest.raises(IdentityError, match="does not extend"):
        base.state.apply(a.to_bytes())
    with pytest.raises(IdentityError, match="does not extend"):
        base.state.apply(lose.to_bytes())
    with pytest.raises(IdentityError, match="genesis"):
        base.state.apply(g.to_bytes())


def test_orphans_are_reported() -> None:
    g = genesis()
    a = update(g, K[2])
    b = update(a, K[2], handle="b.example.com")
    result = resolve(g, b)
    assert result.chain == (g.cid,)
    assert [r.cid for r in result.rejected] == [b.cid]
    assert "does not chain" in result.rejected[0].reason
    # Ops below a rejected op do not chain either.
    forged = update(g, K[3])
    child = update(forged, K[1])
    result = resolve(g, forged, child)
    assert {r.cid for r in result.rejected} == {forged.cid, child.cid}


def test_nullified_branch_keeps_only_valid_descendants() -> None:
    g = genesis()
    high = update(g, K[1])
    low = update(g, K[2], handle="low.example.com")
    low_ok = update(low, K[2], handle="low2.example.com")
    low_bad = update(low, K[4], handle="low3.example.com")
    result = resolve(g, high, low, low_ok, low_bad)
    assert result.chain == (g.cid, high.cid)
    assert set(result.nullified) == {low.cid, low_ok.cid}
    assert [r.cid for r in result.rejected] == [low_bad.cid]


def fork_tree() -> list[IdentityOp]:
    three = (K[1], K[2], K[5])
    g = genesis(rotation=three)
    a = update(g, K[5], rotation=three)  # index 2 at g
    b = update(g, K[2], rotation=three, handle="b.example.com")  # index 1 at g: wins
    b0 = update(b, K[5], rotation=three, handle="b0.example.com")
    b1 = update(b, K[5], rotation=three, handle="b1.example.com")
    b2 = update(b, K[2], rotation=three, handle="b2.example.com")  # wins at b
    a1 = update(a, K[1], handle="a1.example.com")
    a1x = update(a1, K[2])
    t = IdentityOp.tombstone(a1x.cid, K[1])
    b0x = update(b0, K[4])  # K4 is no rotation key anywhere
    return [g, a, b, b0, b1, b2, a1, a1x, t, b0x]


GENESIS_DID_3 = did_for_genesis(genesis(rotation=(K[1], K[2], K[5])))


@settings(max_examples=40, deadline=None)
@given(st.permutations(fork_tree()), st.integers(0, 3))
def test_resolution_is_independent_of_order(ops: list[IdentityOp], dups: int) -> None:
    expected = resolve(*fork_tree())
    raw = [op.to_bytes() for op in ops]
    raw += raw[:dups]
    assert resolve_log(GENESIS_DID_3, raw) == expected


def test_fork_tree_outcome() -> None:
    ops = fork_tree()
    result = resolve(*ops)
    g, a, b, b0, b1, b2, a1, a1x, t, b0x = ops
    # At g: b (K2, index 1) beats a (K5, index 2). At b: b2 (K2) beats b0, b1 (K5).
    assert result.chain == (g.cid, b.cid, b2.cid)
    assert set(result.nullified) == {a.cid, b0.cid, b1.cid, a1.cid, a1x.cid, t.cid}
    assert [r.cid for r in result.rejected] == [b0x.cid]  # K4 is no rotation key
    assert not result.state.tombstoned


def test_log_size_bound() -> None:
    g = genesis()
    ops = [g.to_bytes()]
    ops += [
        update(g, K[1], handle=f"h{i}.example.com").to_bytes() for i in range(MAX_RESOLVE_OPS - 1)
    ]
    result = resolve_log(GENESIS_DID, ops)
    assert len(result.nullified) == MAX_RESOLVE_OPS - 2
    # One fork point, one key: a single loser is kept as evidence.
    assert len(result.evidence) == 1
    # Duplicates do not count; one more distinct op does.
    assert resolve_log(GENESIS_DID, ops + ops[:10]).chain[0] == g.cid
    with pytest.raises(IdentityError, match="more than"):
        resolve_log(GENESIS_DID, [*ops, b"junk"])


def test_bounds_add_up() -> None:
    # A stored log (chain + evidence) fits one wire list; resolve takes two of them.
    assert MAX_CHAIN_OPS + MAX_EVIDENCE_OPS == MAX_LOG_OPS
    assert MAX_RESOLVE_OPS >= 2 * MAX_LOG_OPS


# -- a low-rank key cannot lock the owner out (issue 12, finding 1) ------------------------

OWNER, NODE_KEY = K[1], K[2]  # genesis() names them at index 0 and 1


def _stored(did: str, log: list[bytes]) -> list[bytes]:
    """What a node keeps of ``log``: the evidence, then the chain (as node/federation)."""
    by_cid = {cid_for_msgpack(raw): raw for raw in log}
    resolved = resolve_log(did, log)
    return [by_cid[c] for c in (*resolved.evidence, *resolved.chain)]


def _learn(did: str, held: list[bytes], incoming: list[bytes]) -> list[bytes]:
    """A node that holds ``held`` learns ``incoming`` in one batch, and stores."""
    admitted = admit_ops(did, held, incoming).admitted
    return _stored(did, [*held, *admitted])


def test_a_flood_of_sibling_forks_by_a_low_rank_key_cannot_lock_the_owner_out() -> None:
    g = genesis()
    did = did_for_genesis(g)
    siblings = [
        update(g, NODE_KEY, handle=f"flood{i}.example.com").to_bytes()
        for i in range(MAX_LOG_OPS - 1)
    ]
    held = _learn(did, [g.to_bytes()], siblings)
    # Before the fix: the chain plus 998 nullified siblings, and nothing fit after.
    assert len(held) <= 3
    recovery = update(g, OWNER, signing=K[4])
    resolved = check_new_op(did, held, recovery.to_bytes())
    assert resolved.state.head == recovery.cid
    assert resolved.state.signing_key == K[4].did_key()
    held = _stored(did, [*held, recovery.to_bytes()])
    assert len(held) <= 2 + len(g.rotation_keys)
    # After recovery the owner goes on as usual.
    nxt = IdentityOp.update(resolved.state, OWNER, handle="back.example.com")
    assert check_new_op(did, held, nxt.to_bytes()).state.handle == "back.example.com"


def test_a_long_chain_by_a_low_rank_key_cannot_lock_the_owner_out() -> None:
    g = genesis()
    did = did_for_genesis(g)
    attack = [update(g, NODE_KEY, handle="evil0.example.com")]
    for i in range(1, MAX_LOG_OPS - 1):
        attack.append(update(attack[-1], NODE_KEY, handle=f"evil{i}.example.com"))
    held = _learn(did, [g.to_bytes()], [op.to_bytes() for op in attack])
    # The chain stops at its bound; the rest is rejected, not stored.
    assert len(held) == MAX_CHAIN_OPS
    full = resolve_log(did, held)
    assert full.state.head == attack[MAX_CHAIN_OPS - 2].cid
    # Even the owner cannot lengthen a full chain ...
    with pytest.raises(IdentityError, match="full"):
        check_new_op(did, held, IdentityOp.update(full.state, OWNER).to_bytes())
    # ... but the owner's recovery forks before the first op it overrides, and wins.
    recovery = update(g, OWNER, signing=K[4])
    resolved = check_new_op(did, held, recovery.to_bytes())
    assert resolved.chain == (g.cid, recovery.cid)
    held = _stored(did, [*held, recovery.to_bytes()])
    # The nullified chain is not kept beyond its first op (evidence).
    assert sorted(held) == sorted([g.to_bytes(), recovery.to_bytes(), attack[0].to_bytes()])


def test_evidence_is_one_op_per_fork_point_and_key_and_bounded() -> None:
    g = genesis(rotation=(K[1], K[2], K[5]))
    ops = [g]
    # A chain by K[1] with, at every step, two losing siblings by K[2] and one by K[5].
    for i in range(MAX_EVIDENCE_OPS):
        parent = ops[-1]
        chain_tip = update(parent, K[1], rotation=(K[1], K[2], K[5]), handle=f"c{i}.example.com")
        for j, key in enumerate((K[2], K[2], K[5])):
            ops.append(
                update(parent, key, rotation=(K[1], K[2], K[5]), handle=f"l{i}-{j}.example.com")
            )
        ops.append(chain_tip)
    result = resolve(*ops)
    assert len(result.chain) == MAX_EVIDENCE_OPS + 1
    assert len(result.nullified) == 3 * MAX_EVIDENCE_OPS
    assert len(result.evidence) == MAX_EVIDENCE_OPS
    assert set(result.evidence) <= set(result.nullified)
    # The latest fork points first: each holds one loser per key (K[2] and K[5]).
    position = {cid: i for i, cid in enumerate(result.chain)}
    by_cid = {op.cid: op for op in ops}
    points = {position[by_cid[c].prev] for c in result.evidence}  # type: ignore[index]
    assert points == set(range(MAX_EVIDENCE_OPS - MAX_EVIDENCE_OPS // 2, MAX_EVIDENCE_OPS))


def test_resolve_log_input_types() -> None:
    with pytest.raises(DecodeError):
        resolve_log(GENESIS_DID, [genesis().to_bytes(), "text"])  # type: ignore[list-item]
    result = resolve_log(GENESIS_DID, [genesis().to_bytes(), b"\xc1", b""])
    assert len(result.rejected) == 2
    assert all(r.reason.startswith("malformed") for r in result.rejected)


def test_shuffled_large_log() -> None:
    rng = random.Random(7)
    g = genesis()
    ops = [g]
    for i in range(60):
        parent = rng.choice(ops)
        if parent.is_tombstone:
            continue
        signer = rng.choice([K[1], K[2], K[3]])
        if i % 17 == 16:
            ops.append(IdentityOp.tombstone(parent.cid, signer))
        else:
            ops.append(update(parent, signer, handle=f"h{i}.example.com"))
    expected = resolve(*ops)
    for _ in range(5):
        rng.shuffle(ops)
        assert resolve(*ops, did=GENESIS_DID) == expected
    # The canonical chain replays through apply.
    by_cid = {op.cid: op for op in ops}
    state = resolve(g).state
    for cid in expected.chain[1:]:
        state = state.apply(by_cid[cid].to_bytes())
    assert state == expected.state


# -- DID document ----------------------------------------------------------------------------


def test_did_document() -> None:
    doc = did_document(resolve(genesis()).state)
    assert doc == {
        "@context": ["https://www.w3.org/ns/did/v1", "https://w3id.org/security/multikey/v1"],
        "id": GENESIS_DID,
        "alsoKnownAs": ["at://alice.example.com"],
        "verificationMethod": [
            {
                "id": GENESIS_DID + "#atproto",
                "type": "Multikey",
                "controller": GENESIS_DID,
                "publicKeyMultibase": K[3].did_key().removeprefix("did:key:"),
            }
        ],
        "service": [
            {
                "id": "#atproto_pds",
                "type": "AtprotoPersonalDataServer",
                "serviceEndpoint": PDS,
            }
        ],
    }


def test_cid_type_for_head() -> None:
    assert isinstance(resolve(genesis()).state.head, CID)
