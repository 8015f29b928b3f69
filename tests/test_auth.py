"""node.server.auth: argon2id passwords, HS256 session JWTs, rotation, revocation."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import threading
from typing import Literal

import jwt
import pytest
from argon2 import PasswordHasher

import node.server.auth as auth_mod
from node.server.auth import (
    ACCESS_SCOPE,
    REFRESH_SCOPE,
    Authenticator,
    AuthRequired,
    ExpiredToken,
    InvalidPassword,
    InvalidToken,
    MemorySessionStore,
    Principal,
    SessionRow,
    SessionStore,
    hash_password,
    hash_token,
    parse_bearer,
    password_needs_rehash,
    verify_password,
)
from protocol.errors import LocalProtocolError

SECRET = bytes(range(32))
OTHER_SECRET = bytes(range(1, 33))
AUD = "did:key:z6MkNode"
ALICE = "did:plc:alice2345alice2345alice2"
BOB = "did:plc:bob2345bob2345bob2345bo"
T0 = 1_700_000_000.0


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store() -> MemorySessionStore:
    return MemorySessionStore()


@pytest.fixture
def authn(store: MemorySessionStore, clock: FakeClock) -> Authenticator:
    return Authenticator(SECRET, store, audience=AUD, clock=clock)


def _unverified(token: str) -> dict[str, object]:
    claims: dict[str, object] = jwt.decode(token, options={"verify_signature": False})
    return claims


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# --- passwords -------------------------------------------------------------------------


async def test_hash_and_verify_password() -> None:
    stored = await hash_password("correct horse battery")
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert await verify_password(stored, "correct horse battery")
    assert not await verify_password(stored, "correct horse batterY")
    assert not password_needs_rehash(stored)


async def test_password_hashes_are_salted() -> None:
    assert await hash_password("same password") != await hash_password("same password")


@pytest.mark.parametrize("pw", ["x" * 8, "y" * 256], ids=["8", "256"])
async def test_password_length_bounds_accepted(pw: str) -> None:
    assert await verify_password(await hash_password(pw), pw)


@pytest.mark.parametrize(
    "pw", ["", "x" * 7, "y" * 257, "z" * 100_000], ids=["0", "7", "257", "1e5"]
)
async def test_password_length_bounds_refused(pw: str) -> None:
    with pytest.raises(InvalidPassword) as info:
        await hash_password(pw)
    assert info.value.error == "InvalidRequest"
    assert info.value.status == 400


async def test_verify_refuses_overlong_password_before_work() -> None:
    with pytest.raises(InvalidPassword):
        await verify_password("$argon2id$not-even-looked-at", "p" * 257)


async def test_verify_unknown_account_and_short_password_are_false() -> None:
    assert not await verify_password(None, "whatever password")
    stored = await hash_password("long enough")
    assert not await verify_password(stored, "short")


async def test_password_is_nfkc_normalized() -> None:
    composed = "caf\u00e9 au lait"  # é as one code point (NFC)
    decomposed = "cafe\u0301 au lait"  # e + combining acute (NFD, as macOS types it)
    assert await verify_password(await hash_password(composed), decomposed)


async def test_malformed_stored_hash_is_our_bug() -> None:
    with pytest.raises(LocalProtocolError):
        await verify_password("plaintext-in-the-db", "some password")


def test_needs_rehash_after_parameter_change() -> None:
    old = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("old password")
    assert password_needs_rehash(old)
    assert not password_needs_rehash(auth_mod._DUMMY_HASH)


async def test_kdf_runs_off_the_event_loop_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[threading.Thread] = []

    class Recording(PasswordHasher):
        def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
            threads.append(threading.current_thread())
            return super().hash(password, salt=salt)

        def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
            threads.append(threading.current_thread())
            return super().verify(hash, password)

    monkeypatch.setattr(auth_mod, "_HASHER", Recording(time_cost=1, memory_cost=8, parallelism=1))
    await verify_password(await hash_password("off the loop"), "off the loop")
    await verify_password(None, "off the loop")
    assert len(threads) == 3
    assert threading.main_thread() not in threads


# --- bearer header ---------------------------------------------------------------------


def test_parse_bearer() -> None:
    assert parse_bearer("Bearer abc.def.ghi") == "abc.def.ghi"
    assert parse_bearer("bearer  abc.def.ghi ") == "abc.def.ghi"


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "   ",
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer ",
        "Bearer a b",
        "Bearer a\tb",
        "Bearer " + "a" * 10_000,
        "Bearer ab\u00e9cd",
        "Token abc",
    ],
)
def test_parse_bearer_refuses(value: str | None) -> None:
    with pytest.raises(AuthRequired) as info:
        parse_bearer(value)
    assert info.value.error == "AuthRequired"
    assert info.value.status == 401


# --- token shape -----------------------------------------------------------------------


async def test_token_claims_shape(authn: Authenticator) -> None:
    tokens = await authn.create_session(ALICE)
    assert tokens.did == ALICE
    access = _unverified(tokens.access_jwt)
    refresh = _unverified(tokens.refresh_jwt)
    for claims, scope, ttl in ((access, ACCESS_SCOPE, 7200), (refresh, REFRESH_SCOPE, 90 * 86400)):
        assert set(claims) == {"sub", "iat", "exp", "scope", "jti", "sid", "aud"}
        assert claims["sub"] == ALICE
        assert claims["aud"] == AUD
        assert claims["scope"] == scope
        assert claims["sid"] == tokens.sid
        assert type(claims["iat"]) is int
        assert type(claims["exp"]) is int
        assert claims["iat"] == int(T0)
        assert claims["exp"] == int(T0) + ttl
        assert isinstance(claims["jti"], str)
        assert len(claims["jti"]) >= 16
    assert access["jti"] != refresh["jti"]
    assert jwt.get_unverified_header(tokens.access_jwt) == {"alg": "HS256", "typ": "at+jwt"}
    assert jwt.get_unverified_header(tokens.refresh_jwt) == {"alg": "HS256", "typ": "refresh+jwt"}
    # Three base64url segments, no padding.
    for token in (tokens.access_jwt, tokens.refresh_jwt):
        parts = token.split(".")
        assert len(parts) == 3
        assert all(p and "=" not in p for p in parts)


async def test_access_ttl_is_configurable(store: MemorySessionStore, clock: FakeClock) -> None:
    a = Authenticator(SECRET, store, audience=AUD, clock=clock, access_ttl=60, refresh_ttl=600)
    tokens = await a.create_session(ALICE)
    assert _unverified(tokens.access_jwt)["exp"] == int(T0) + 60
    assert _unverified(tokens.refresh_jwt)["exp"] == int(T0) + 600


async def test_store_never_holds_a_token(authn: Authenticator, store: MemorySessionStore) -> None:
    tokens = await authn.create_session(ALICE)
    row = store.rows[tokens.sid]
    assert row == SessionRow(
        tokens.sid,
        ALICE,
        hashlib.sha256(tokens.refresh_jwt.encode()).hexdigest(),
        int(T0),
        int(T0) + 90 * 86400,
        False,
    )
    assert row.refresh_hash == hash_token(tokens.refresh_jwt)
    assert tokens.access_jwt not in repr(row)
    assert tokens.refresh_jwt not in repr(row)


def test_memory_store_satisfies_the_protocol() -> None:
    s: SessionStore = MemorySessionStore()
    assert s is not None


def test_secret_must_be_long_enough(store: MemorySessionStore) -> None:
    with pytest.raises(LocalProtocolError):
        Authenticator(b"short", store, audience=AUD)


async def test_create_session_refuses_malformed_did(authn: Authenticator) -> None:
    with pytest.raises(LocalProtocolError):
        await authn.create_session("alice")


# --- verifying -------------------------------------------------------------------------


async def test_verify_access(authn: Authenticator) -> None:
    tokens = await authn.create_session(ALICE)
    assert await authn.verify_access(tokens.access_jwt) == Principal(ALICE, tokens.sid)


async def test_access_token_expires(authn: Authenticator, clock: FakeClock) -> None:
    tokens = await authn.create_session(ALICE)
    clock.now = T0 + 7199
    await authn.verify_access(tokens.access_jwt)
    clock.now = T0 + 7200
    with pytest.raises(ExpiredToken) as info:
        await authn.verify_access(tokens.access_jwt)
    assert info.value.error == "ExpiredToken"
    assert info.value.status == 400


async def test_refresh_token_expires(authn: Authenticator, clock: FakeClock) -> None:
    tokens = await authn.create_session(ALICE)
    clock.now = T0 + 90 * 86400
    with pytest.raises(ExpiredToken):
        await authn.refresh(tokens.refresh_jwt)


async def test_wrong_secret_rejected(store: MemorySessionStore, clock: FakeClock) -> None:
    ours = Authenticator(SECRET, store, audience=AUD, clock=clock)
    theirs = Authenticator(OTHER_SECRET, store, audience=AUD, clock=clock)
    tokens = await theirs.create_session(ALICE)  # the session even exists in our store
    with pytest.raises(InvalidToken) as info:
        await ours.verify_access(tokens.access_jwt)
    assert info.value.error == "InvalidToken"
    assert info.value.status == 400
    with pytest.raises(InvalidToken):
        await ours.refresh(tokens.refresh_jwt)


async def test_wrong_audience_rejected(store: MemorySessionStore, clock: FakeClock) -> None:
    other_node = Authenticator(SECRET, store, audience="did:key:z6MkOther", clock=clock)
    tokens = await other_node.create_session(ALICE)
    with pytest.raises(InvalidToken):
        await Authenticator(SECRET, store, audience=AUD, clock=clock).verify_access(
            tokens.access_jwt
        )


async def test_tampered_payload_rejected(authn: Authenticator) -> None:
    tokens = await authn.create_session(ALICE)
    header, payload, sig = tokens.access_jwt.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = BOB
    forged = ".".join([header, _b64(json.dumps(claims).encode()), sig])
    with pytest.raises(InvalidToken):
        await authn.verify_access(forged)


async def test_flipped_signature_rejected(authn: Authenticator) -> None:
    tokens = await authn.create_session(ALICE)
    header, payload, sig = tokens.access_jwt.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=="))
    raw[0] ^= 1
    with pytest.raises(InvalidToken):
        await authn.verify_access(".".join([header, payload, _b64(bytes(raw))]))


async def test_alg_none_rejected(authn: Authenticator) -> None:
    tokens = await authn.create_session(ALICE)
    _, payload, _ = tokens.access_jwt.split(".")
    header = _b64(json.dumps({"alg": "none", "typ": "at+jwt"}).encode())
    with pytest.raises(InvalidToken):
        await authn.verify_access(f"{header}.{payload}.")


async def test_expired_and_forged_is_invalid_not_expired(
    authn: Authenticator, clock: FakeClock
) -> None:
    tokens = await authn.create_session(ALICE)
    clock.now = T0 + 10 * 86400
    with pytest.raises(InvalidToken):
        await authn.verify_access(tokens.access_jwt[:-2] + "AA")


@pytest.mark.parametrize("token", ["", "not-a-jwt", "a.b.c", "a" * 5000], ids=str.__len__)
async def test_garbage_rejected(authn: Authenticator, token: str) -> None:
    with pytest.raises(InvalidToken):
        await authn.verify_access(token)


async def test_scopes_are_not_interchangeable(authn: Authenticator) -> None:
    tokens = await authn.create_session(ALICE)
    with pytest.raises(InvalidToken):
        await authn.verify_access(tokens.refresh_jwt)
    with pytest.raises(InvalidToken):
        await authn.refresh(tokens.access_jwt)


async def test_float_times_rejected(authn: Authenticator) -> None:
    # The atproto SDK parses exp/iat strictly as integers; so do we.
    tokens = await authn.create_session(ALICE)
    claims = _unverified(tokens.access_jwt)
    claims["exp"] = float(int(T0) + 100)
    token = jwt.encode(claims, SECRET, algorithm="HS256", headers={"typ": "at+jwt"})
    with pytest.raises(InvalidToken):
        await authn.verify_access(token)


async def test_unknown_session_rejected(authn: Authenticator, clock: FakeClock) -> None:
    claims = {
        "scope": ACCESS_SCOPE,
        "sub": ALICE,
        "aud": AUD,
        "iat": int(T0),
        "exp": int(T0) + 60,
        "jti": "j" * 16,
        "sid": "never-created",
    }
    token = jwt.encode(claims, SECRET, algorithm="HS256", headers={"typ": "at+jwt"})
    with pytest.raises(InvalidToken):
        await authn.verify_access(token)


# --- refresh rotation ------------------------------------------------------------------


async def test_refresh_rotates(authn: Authenticator, clock: FakeClock) -> None:
    first = await authn.create_session(ALICE)
    clock.now = T0 + 3600
    second = await authn.refresh(first.refresh_jwt)
    assert second.sid == first.sid
    assert second.did == ALICE
    assert second.refresh_jwt != first.refresh_jwt
    assert _unverified(second.access_jwt)["exp"] == int(T0) + 3600 + 7200
    assert await authn.verify_access(second.access_jwt) == Principal(ALICE, first.sid)
    third = await authn.refresh(second.refresh_jwt)
    assert await authn.verify_access(third.access_jwt) == Principal(ALICE, first.sid)


async def test_refresh_reuse_revokes_session(
    authn: Authenticator, store: MemorySessionStore
) -> None:
    first = await authn.create_session(ALICE)
    second = await authn.refresh(first.refresh_jwt)
    with pytest.raises(InvalidToken) as info:
        await authn.refresh(first.refresh_jwt)  # replayed: someone else holds it too
    assert "revoked" in info.value.message
    assert store.rows[first.sid].revoked
    with pytest.raises(InvalidToken):
        await authn.refresh(second.refresh_jwt)
    with pytest.raises(InvalidToken):
        await authn.verify_access(second.access_jwt)


async def test_concurrent_refresh_with_one_token_is_reuse(authn: Authenticator) -> None:
    first = await authn.create_session(ALICE)
    results = await asyncio.gather(
        authn.refresh(first.refresh_jwt), authn.refresh(first.refresh_jwt), return_exceptions=True
    )
    assert sum(isinstance(r, InvalidToken) for r in results) >= 1
    with pytest.raises(InvalidToken):
        await authn.verify_access(first.access_jwt)


# --- revocation ------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["access", "refresh"])
async def test_revoke_is_immediate(
    authn: Authenticator, store: MemorySessionStore, which: str
) -> None:
    tokens = await authn.create_session(ALICE)
    await authn.verify_access(tokens.access_jwt)  # now cached as valid
    await authn.revoke(tokens.access_jwt if which == "access" else tokens.refresh_jwt)
    assert store.rows[tokens.sid].revoked
    with pytest.raises(InvalidToken):
        await authn.verify_access(tokens.access_jwt)
    with pytest.raises(InvalidToken):
        await authn.refresh(tokens.refresh_jwt)
    await authn.revoke(tokens.refresh_jwt)  # idempotent


async def test_revoke_leaves_other_sessions(authn: Authenticator) -> None:
    one = await authn.create_session(ALICE)
    two = await authn.create_session(ALICE)
    await authn.revoke(one.access_jwt)
    assert await authn.verify_access(two.access_jwt) == Principal(ALICE, two.sid)


async def test_revoke_all(authn: Authenticator) -> None:
    a1 = await authn.create_session(ALICE)
    a2 = await authn.create_session(ALICE)
    b = await authn.create_session(BOB)
    for t in (a1, a2, b):
        await authn.verify_access(t.access_jwt)
    await authn.revoke_all(ALICE)
    for t in (a1, a2):
        with pytest.raises(InvalidToken):
            await authn.verify_access(t.access_jwt)
        with pytest.raises(InvalidToken):
            await authn.refresh(t.refresh_jwt)
    assert await authn.verify_access(b.access_jwt) == Principal(BOB, b.sid)
    fresh = await authn.create_session(ALICE)
    assert await authn.verify_access(fresh.access_jwt) == Principal(ALICE, fresh.sid)


async def test_revocation_by_another_process_seen_after_cache_ttl(
    store: MemorySessionStore, clock: FakeClock
) -> None:
    here = Authenticator(SECRET, store, audience=AUD, clock=clock, cache_ttl=30)
    there = Authenticator(SECRET, store, audience=AUD, clock=clock, cache_ttl=30)
    tokens = await here.create_session(ALICE)
    await here.verify_access(tokens.access_jwt)
    await there.revoke(tokens.refresh_jwt)
    clock.now = T0 + 29
    await here.verify_access(tokens.access_jwt)  # still cached as valid: bounded staleness
    clock.now = T0 + 30
    with pytest.raises(InvalidToken):
        await here.verify_access(tokens.access_jwt)


class GatedStore(MemorySessionStore):
    """Holds get() until released, to interleave a revocation with a read."""

    def __init__(self) -> None:
        super().__init__()
        self.gate: asyncio.Event | None = None
        self.reading = asyncio.Event()

    async def get(self, sid: str) -> SessionRow | None:
        row = self.rows.get(sid)
        if self.gate is not None:
            self.reading.set()
            await self.gate.wait()
        return row


async def test_read_racing_revoke_all_is_not_cached(clock: FakeClock) -> None:
    store = GatedStore()
    authn = Authenticator(SECRET, store, audience=AUD, clock=clock, cache_ttl=3600)
    tokens = await authn.create_session(ALICE)
    authn._cache.clear()  # as after a restart: nothing cached
    store.gate = asyncio.Event()
    async with asyncio.timeout(5):
        in_flight = asyncio.create_task(authn.verify_access(tokens.access_jwt))
        await store.reading.wait()  # it has read the row as valid, not yet returned
        await authn.revoke_all(ALICE)
        store.gate.set()
        await in_flight  # began before the revocation: allowed through
    store.gate = None
    with pytest.raises(InvalidToken):
        await authn.verify_access(tokens.access_jwt)


async def test_cache_is_bounded(store: MemorySessionStore, clock: FakeClock) -> None:
    authn = Authenticator(SECRET, store, audience=AUD, clock=clock, cache_size=4)
    sessions = [await authn.create_session(ALICE) for _ in range(10)]
    for t in sessions:
        await authn.verify_access(t.access_jwt)
    assert len(authn._cache) == 4
    await authn.revoke(sessions[0].access_jwt)  # evicted from the cache, still revoked
    with pytest.raises(InvalidToken):
        await authn.verify_access(sessions[0].access_jwt)
