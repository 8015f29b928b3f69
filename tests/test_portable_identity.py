"""Sans-IO rules behind rotation and migration: a submitted op must become the head
(:func:`check_new_op`), a node keeps the chain it saw first against forks by keys
that do not outrank it (:func:`admit_ops`), and service tokens vouch for a DID only
when signed by one of its current keys, once (:mod:`protocol.serviceauth`)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.cid import CID
from protocol.errors import DecodeError, IdentityError, InvalidSignature
from protocol.identity import (
    IdentityOp,
    IdentityState,
    admit_ops,
    chain_signing_keys,
    check_new_op,
    did_for_genesis,
    resolve_log,
)
from protocol.keys import SigningKey
from protocol.serviceauth import (
    MAX_LIFETIME,
    ServiceAuthError,
    UsedTokens,
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
    # A fork by the old node from before the move loses to the user's key: a node
    # holding the log refuses it outright (first seen), and it would lose anyway.
    fork = IdentityOp.update(_state(did, [g]), NODE, endpoint="https://c.example")
    with pytest.raises(IdentityError, match="does not outrank"):
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


@pytest.mark.parametrize(
    "aud",
    [[NEW_NODE.did_key()], [NEW_NODE.did_key(), NODE.did_key()]],
    ids=["list-of-one", "list-of-two"],
)
def test_a_token_whose_aud_is_a_list_is_refused(aud: list[str]) -> None:
    # PyJWT takes a list aud that contains ours; atproto takes one DID string only,
    # so a token minted for several services cannot be replayed at each of them.
    with pytest.raises(ServiceAuthError, match="aud must be the single DID"):
        _verify(_token(SIGN1, aud=aud))


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


# -- the first-seen rule: an op's signer cannot take it back -------------------------------

OLD_ROT, OLD_SIGN, NEW_ROT, NEW_SIGN = (seeded_key(i) for i in range(50, 54))


def _ground_fork(did: str, at: IdentityOp, signer: SigningKey, beat: IdentityOp) -> IdentityOp:
    """A child of the genesis op ``at`` signed by ``signer`` whose CID sorts below
    ``beat``'s: what a hostile signer grinds for (each try has even odds)."""
    state = _state(did, [at])
    for i in range(128):
        fork = IdentityOp.update(state, signer, handle=f"grind{i}.skyfed.test")
        if fork.cid.to_bytes() < beat.cid.to_bytes():
            return fork
    raise AssertionError("no ground CID in 128 tries")  # pragma: no cover - p = 2**-128


def _moved_account() -> tuple[str, IdentityOp, IdentityOp, IdentityOp]:
    """An account made at A without a user rotation key, moved to B with A's help
    (A signed the move), then re-keyed at B."""
    g = IdentityOp.create(
        [OLD_ROT.did_key()], OLD_SIGN.did_key(), "alice.skyfed.test", "http://a.test", None, OLD_ROT
    )
    did = did_for_genesis(g)
    move = IdentityOp.update(
        _state(did, [g]),
        OLD_ROT,
        rotation_keys=[NEW_ROT.did_key()],
        signing_key=NEW_SIGN.did_key(),
        endpoint="http://b.test",
    )
    rekey = IdentityOp.update(_state(did, [g, move]), NEW_ROT, signing_key=SIGN3.did_key())
    return did, g, move, rekey


def test_the_old_home_cannot_undo_a_move_it_signed() -> None:
    did, g, move, rekey = _moved_account()
    held = [g.to_bytes(), move.to_bytes(), rekey.to_bytes()]
    evil = _ground_fork(did, g, OLD_ROT, move)
    # The log rule alone would hand the identity back to A (same key, lower CID) ...
    assert resolve_log(did, [*held, evil.to_bytes()]).state.endpoint == "http://a.test"
    # ... but a node that holds the log refuses the fork, directly ...
    with pytest.raises(IdentityError, match="does not outrank"):
        check_new_op(did, held, evil.to_bytes())
    # ... and inside a whole log merged from a peer, with what descends from it.
    after = IdentityOp.update(_state(did, [g, evil]), OLD_ROT, endpoint="http://c.test")
    outcome = admit_ops(did, held, [*held, evil.to_bytes(), after.to_bytes()])
    assert outcome.admitted == ()
    reasons = {r.cid: r.reason for r in outcome.refused}
    assert set(reasons) == {evil.cid, after.cid}
    assert "does not outrank" in reasons[evil.cid]
    assert "descends from a refused fork" in reasons[after.cid]


def test_a_higher_priority_key_still_overrides_and_the_head_still_moves() -> None:
    did, g = genesis()  # rotation keys [USER, NODE]
    by_node = IdentityOp.update(_state(did, [g]), NODE, signing_key=SIGN2.did_key())
    held = [g.to_bytes(), by_node.to_bytes()]
    # USER (index 0) outranks NODE (index 1): its fork is admitted and wins.
    recovery = IdentityOp.update(_state(did, [g]), USER, signing_key=SIGN3.did_key())
    assert check_new_op(did, held, recovery.to_bytes()).state.head == recovery.cid
    # An op on the head is no fork: admitted whoever of the rotation keys signed it.
    nxt = IdentityOp.update(_state(did, [g, by_node]), NODE, endpoint="https://c.example")
    assert admit_ops(did, held, [nxt.to_bytes()]).admitted == (nxt.to_bytes(),)


def test_a_node_that_learns_both_ops_at_once_still_picks_by_cid() -> None:
    """What the first-seen rule cannot do (docs/protocol.md §11.2): with nothing held
    there is no first, and the ground fork wins by the tie rule."""
    did, g, move, _ = _moved_account()
    evil = _ground_fork(did, g, OLD_ROT, move)
    both = [g.to_bytes(), move.to_bytes(), evil.to_bytes()]
    assert admit_ops(did, [], both).refused == ()
    assert resolve_log(did, both).state.endpoint == "http://a.test"


_FOREST_KEYS = (USER, NODE, NEW_NODE)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_admitted_ops_displace_held_chain_ops_only_by_a_higher_priority_key(
    data: st.DataObject,
) -> None:
    g = IdentityOp.create(
        [k.did_key() for k in _FOREST_KEYS],
        SIGN1.did_key(),
        "alice.skyfed.test",
        "https://a.example",
        None,
        USER,
    )
    did = did_for_genesis(g)
    ops = [g]
    for i in range(data.draw(st.integers(1, 8))):
        parent = ops[data.draw(st.integers(0, len(ops) - 1))]
        signer = _FOREST_KEYS[data.draw(st.integers(0, len(_FOREST_KEYS) - 1))]
        # Every op keeps the genesis rotation keys: a key's index is the same everywhere.
        ops.append(
            IdentityOp.create(
                [k.did_key() for k in _FOREST_KEYS],
                SIGN1.did_key(),
                "alice.skyfed.test",
                f"https://n{i}.example",
                parent.cid,
                signer,
            )
        )
    held_mask = data.draw(st.lists(st.booleans(), min_size=len(ops), max_size=len(ops)))
    pairs = zip(ops[1:], held_mask[1:], strict=True)
    held = [g.to_bytes()] + [op.to_bytes() for op, h in pairs if h]
    incoming = [op.to_bytes() for op in ops]
    outcome = admit_ops(did, held, incoming)
    fresh = {op.cid for op in ops} - {IdentityOp.from_bytes(b).cid for b in held}
    assert {IdentityOp.from_bytes(b).cid for b in outcome.admitted} | {
        r.cid for r in outcome.refused
    } == fresh
    before = resolve_log(did, held).chain
    after = resolve_log(did, [*held, *outcome.admitted]).chain
    by_cid: dict[CID, IdentityOp] = {op.cid: op for op in ops}
    keys = [k.did_key() for k in _FOREST_KEYS]
    for i, old in enumerate(before):
        if i >= len(after) or after[i] != old:
            # The first place the chain moved: a strictly higher-priority key did it.
            assert by_cid[after[i]].verify(keys) < by_cid[old].verify(keys)
            break


def test_a_service_token_is_good_for_one_use() -> None:
    used = UsedTokens(max_entries=2)
    token = _token(SIGN1, jti="first")
    used.use(token, NOW)
    with pytest.raises(ServiceAuthError, match="already used"):
        used.use(token, NOW + 30)
    used.use(_token(SIGN1, jti="second"), NOW)  # another nonce is another token
    with pytest.raises(ServiceAuthError, match="too many"):
        used.use(_token(SIGN1, jti="third"), NOW)  # full: fail closed
    # Expired tokens are forgotten (verify_service_token refuses them anyway).
    used.use(_token(SIGN1, jti="third"), NOW + 61)
    assert len(used) == 1
