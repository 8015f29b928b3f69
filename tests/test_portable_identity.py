"""Sans-IO rules behind rotation and migration: a submitted op must become the head
(:func:`check_new_op`), and service tokens vouch for a DID only when signed by one of
its current keys (:mod:`protocol.serviceauth`)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import DecodeError, IdentityError, InvalidSignature
from protocol.identity import (
    IdentityOp,
    IdentityState,
    chain_signing_keys,
    check_new_op,
    did_for_genesis,
    resolve_log,
)
from protocol.keys import SigningKey
from protocol.serviceauth import (
    MAX_LIFETIME,
    ServiceAuthError,
    make_service_token,
    verify_service_token,
)

from .seeds import seeded_key

USER, NODE, SIGN1, SIGN2, SIGN3, NEW_NODE, STRANGER = (seeded_key(i) for i in range(40, 47))
NOW = 1_800_000_000
LXM = "com.atproto.server.createAccount"


def genesis() -> tuple[str, IdentityOp]:
    op = IdentityOp.create(
        rotation_keys=[USER.did_key(), NODE.did_key()],
        signing_key=SIGN1.did_key(),
        handle="alice.skyfed.test",
        endpoint="https://a.example",
        prev=None,
        signer=NODE,
    )
    return did_for_genesis(op), op


def _state(did: str, ops: list[IdentityOp]) -> IdentityState:
    return resolve_log(did, [op.to_bytes() for op in ops]).state


def test_a_rotation_by_any_rotation_key_becomes_the_head() -> None:
    did, g = genesis()
    for signer in (USER, NODE):
        op = IdentityOp.update(_state(did, [g]), signer, signing_key=SIGN2.did_key())
        resolved = check_new_op(did, [g.to_bytes()], op.to_bytes())
        assert resolved.state.head == op.cid
        assert resolved.state.signing_key == SIGN2.did_key()
        assert resolved.state.rotation_keys == (USER.did_key(), NODE.did_key())


@pytest.mark.parametrize("signer", [SIGN1, STRANGER], ids=["signing-key", "stranger"])
def test_a_rotation_by_a_key_that_is_not_a_rotation_key_is_a_forgery(signer: SigningKey) -> None:
    did, g = genesis()
    forged = IdentityOp.update(_state(did, [g]), signer, signing_key=STRANGER.did_key())
    with pytest.raises(InvalidSignature, match="not signed by a rotation key"):
        check_new_op(did, [g.to_bytes()], forged.to_bytes())


def test_a_replayed_op_is_refused_and_changes_nothing() -> None:
    did, g = genesis()
    op1 = IdentityOp.update(_state(did, [g]), USER, signing_key=SIGN2.did_key())
    op2 = IdentityOp.update(_state(did, [g, op1]), USER, signing_key=SIGN3.did_key())
    log = [g.to_bytes(), op1.to_bytes(), op2.to_bytes()]
    for old in (g, op1, op2):
        with pytest.raises(IdentityError, match="replay"):
            check_new_op(did, log, old.to_bytes())
    assert _state(did, [g, op1, op2]).signing_key == SIGN3.did_key()


def test_a_migration_op_by_a_removed_rotation_key_is_refused() -> None:
    did, g = genesis()
    moved = IdentityOp.update(
        _state(did, [g]),
        USER,
        rotation_keys=[USER.did_key(), NEW_NODE.did_key()],
        signing_key=SIGN2.did_key(),
        endpoint="https://b.example",
    )
    back = IdentityOp.update(
        _state(did, [g, moved]), NODE, endpoint="https://a.example", signing_key=SIGN1.did_key()
    )
    with pytest.raises(InvalidSignature):
        check_new_op(did, [g.to_bytes(), moved.to_bytes()], back.to_bytes())
    # A fork by the old node from before the move loses to the user's key: nullified.
    fork = IdentityOp.update(_state(did, [g]), NODE, endpoint="https://c.example")
    with pytest.raises(IdentityError, match="loses a fork"):
        check_new_op(did, [g.to_bytes(), moved.to_bytes()], fork.to_bytes())
    assert chain_signing_keys(did, [g.to_bytes(), moved.to_bytes(), fork.to_bytes()]) == (
        SIGN1.did_key(),
        SIGN2.did_key(),
    )


def test_an_op_for_an_unknown_log_or_malformed_bytes_is_refused() -> None:
    did, g = genesis()
    op = IdentityOp.update(_state(did, [g]), USER, signing_key=SIGN2.did_key())
    with pytest.raises(IdentityError, match="no valid genesis"):
        check_new_op(did, [], op.to_bytes())
    with pytest.raises(DecodeError):
        check_new_op(did, [g.to_bytes()], b"\x80")


def _token(key: SigningKey = SIGN1, **changes: object) -> str:
    args: dict[str, object] = {
        "did": "did:skyfed:aaaaaaaaaaaaaaaaaaaaaaaa",
        "aud": NEW_NODE.did_key(),
        "lxm": LXM,
        "key": key,
        "now": NOW,
        "lifetime": 60,
        "jti": "n",
    }
    args.update(changes)
    return make_service_token(**args)  # type: ignore[arg-type]


def _verify(token: str, **changes: object) -> str:
    args: dict[str, object] = {
        "did": "did:skyfed:aaaaaaaaaaaaaaaaaaaaaaaa",
        "aud": NEW_NODE.did_key(),
        "lxm": LXM,
        "keys": [SIGN1.did_key(), USER.did_key(), NODE.did_key()],
        "now": NOW + 10,
    }
    args.update(changes)
    return verify_service_token(token, **args)  # type: ignore[arg-type]


@pytest.mark.parametrize("key", [SIGN1, USER, NODE], ids=["signing", "user", "node"])
def test_a_token_by_a_current_key_vouches(key: SigningKey) -> None:
    assert _verify(_token(key)) == key.did_key()


@pytest.mark.parametrize(
    ("token", "checks", "message"),
    [
        ({"key": STRANGER}, {}, "not signed by a current key"),
        ({}, {"aud": NODE.did_key()}, "(?i)audience"),
        ({}, {"lxm": "com.atproto.repo.importRepo"}, "is for"),
        ({}, {"did": "did:skyfed:bbbbbbbbbbbbbbbbbbbbbbbb"}, "issued by"),
        ({}, {"now": NOW + 61}, "expired"),
        ({"now": NOW + 100}, {}, "not valid yet"),
    ],
    ids=["stranger", "audience", "method", "issuer", "expired", "future"],
)
def test_a_token_is_refused(
    token: dict[str, object], checks: dict[str, object], message: str
) -> None:
    with pytest.raises(ServiceAuthError, match=message) as err:
        _verify(_token(**{"key": SIGN1, **token}), **checks)
    assert err.value.error == "InvalidToken"
    assert err.value.status == 401


def test_a_token_lives_at_most_the_bound() -> None:
    with pytest.raises(ServiceAuthError):
        _token(SIGN1, lifetime=MAX_LIFETIME + 1)


@given(st.data())
def test_one_flipped_character_fails(data: st.DataObject) -> None:
    token = _token(SIGN1)
    i = data.draw(st.integers(0, len(token) - 1))
    flipped = "A" if token[i] != "A" else "B"
    bad = token[:i] + flipped + token[i + 1 :]
    try:
        _verify(bad)
    except ServiceAuthError:
        return
    # Base64url's last character can carry unused bits: only then may it still verify.
    assert i == len(token) - 1 or token[i] == "="
