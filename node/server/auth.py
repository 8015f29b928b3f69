"""Passwords and login sessions: argon2id hashes, HS256 JWTs, revocable sessions.

What it does:

* :func:`hash_password` / :func:`verify_password` run argon2id (memory-hard) in a worker
  thread, so a login never stalls the event loop.
* :class:`Authenticator` mints and checks the two atproto session tokens. They are real
  JWTs (``header.payload.signature``, base64url) because the atproto Python SDK decodes
  them client-side and refreshes when ``exp`` comes near. Claims: ``sub`` (the DID),
  ``iat`` and ``exp`` (integer seconds), ``scope`` (``com.atproto.access`` or
  ``com.atproto.refresh``), ``jti`` (random), ``sid`` (session id) and ``aud`` (this
  node). The header's ``typ`` is ``at+jwt`` or ``refresh+jwt``, as the atproto PDS does.
* Sessions live behind the small :class:`SessionStore` protocol and hold only the sha256
  of the current refresh token, never a token in clear. Refresh tokens rotate: the old
  one stops working, and presenting it again is treated as theft and ends the session.

What it refuses:

* passwords shorter than 8 or longer than 256 characters (``InvalidRequest``), checked
  before any hashing is done;
* an ``Authorization`` header that is missing, not ``Bearer``, or over-long
  (``AuthRequired``, 401);
* a token over 4 KiB, not HS256, signed with another secret, tampered with, for another
  audience, with the wrong scope or ``typ``, with non-integer times, or whose session is
  unknown or revoked (``InvalidToken``, 400);
* an expired token or session (``ExpiredToken``, 400).

The statuses follow the atproto PDS (``packages/pds/src/auth-verifier.ts``): it answers
401 only when credentials are missing and ``400 InvalidRequest``-class errors named
``ExpiredToken`` / ``InvalidToken`` for a token that fails verification.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final, Protocol

from protocol.errors import LocalProtocolError, RemoteProtocolError
from protocol.syntax import is_valid_did

if TYPE_CHECKING:
    from argon2 import PasswordHasher

__all__ = [
    "ACCESS_SCOPE",
    "MAX_PASSWORD_LENGTH",
    "MIN_PASSWORD_LENGTH",
    "REFRESH_SCOPE",
    "AuthError",
    "AuthRequired",
    "Authenticator",
    "ExpiredToken",
    "InvalidPassword",
    "InvalidToken",
    "MemorySessionStore",
    "Principal",
    "SessionRow",
    "SessionStore",
    "Tokens",
    "hash_password",
    "hash_token",
    "parse_bearer",
    "password_needs_rehash",
    "verify_password",
]

ACCESS_SCOPE: Final = "com.atproto.access"
REFRESH_SCOPE: Final = "com.atproto.refresh"
_TYP = {ACCESS_SCOPE: "at+jwt", REFRESH_SCOPE: "refresh+jwt"}

MIN_PASSWORD_LENGTH: Final = 8
MAX_PASSWORD_LENGTH: Final = 256
# Our tokens are ~450 characters; anything near this is not ours.
MAX_TOKEN_LENGTH: Final = 4096
MIN_SECRET_BYTES: Final = 32


# --- errors ----------------------------------------------------------------------------


class AuthError(RemoteProtocolError):
    """Authentication failed. Subclasses name the reason the way atproto does."""

    error = "AuthRequired"
    status = 401


class AuthRequired(AuthError):
    """No usable credentials were sent (missing or malformed ``Authorization``)."""


class ExpiredToken(AuthError):
    """The token (or its session) is past its ``exp``; the client should refresh."""

    error = "ExpiredToken"
    status = 400


class InvalidToken(AuthError):
    """The token does not verify, has the wrong scope, or its session was revoked."""

    error = "InvalidToken"
    status = 400


class InvalidPassword(RemoteProtocolError):
    """A new password breaks the length bound."""

    error = "InvalidRequest"
    status = 400


# --- passwords -------------------------------------------------------------------------

# argon2id with OWASP's minimum profile (m = 19 MiB, t = 2, p = 1): about 37 ms per hash
# or verify on the 2-core build machine. Each running KDF holds 19 MiB, and the default
# executor's thread count bounds how many run at once. Made at the first password
# hashed or checked (argon2 and PyJWT load with the first login, not with the node).
_HASHER: PasswordHasher | None = None


def _hasher() -> PasswordHasher:
    global _HASHER
    if _HASHER is None:
        from argon2 import PasswordHasher

        _HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
    return _HASHER


# Verified against when the account does not exist, so "no such user" costs the same
# time as "wrong password". Same parameters as _HASHER; its password was thrown away.
_DUMMY_HASH: Final = (
    "$argon2id$v=19$m=19456,t=2,p=1$d8l1Hk5Ug8Q518BphGOG5g"
    "$Rrhxx1mMzkwGTlZ8lfkDjC+/iuBgBCKwie1XL9MB6JA"
)


def _normalize_password(pw: str) -> str:
    # NFKC, as NIST SP 800-63B suggests: the same password typed on macOS (NFD) and
    # elsewhere (NFC) must hash the same.
    return unicodedata.normalize("NFKC", pw)


def _check_password_bounds(pw: str) -> None:
    if not isinstance(pw, str):
        raise InvalidPassword("password must be a string")
    if len(pw) > MAX_PASSWORD_LENGTH:
        raise InvalidPassword(f"password must be at most {MAX_PASSWORD_LENGTH} characters")


async def hash_password(pw: str) -> str:
    """Hash a new password (argon2id, PHC string). Refuses lengths outside 8..256."""
    _check_password_bounds(pw)
    pw = _normalize_password(pw)
    if not MIN_PASSWORD_LENGTH <= len(pw) <= MAX_PASSWORD_LENGTH:
        raise InvalidPassword(
            f"password must be {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters"
        )
    return await asyncio.to_thread(_hasher().hash, pw)


def _verify_sync(stored: str, pw: str) -> bool:
    from argon2.exceptions import InvalidHashError, VerificationError

    try:
        return _hasher().verify(stored, pw)
    except InvalidHashError as e:
        raise LocalProtocolError("stored password hash is not an argon2 PHC string") from e
    except VerificationError:
        return False


async def verify_password(stored: str | None, pw: str) -> bool:
    """Check ``pw`` against a stored hash, off the event loop.

    Pass ``stored=None`` for an unknown account: a dummy hash is verified instead and the
    answer is ``False``, so timing does not reveal which accounts exist. An over-long
    password is refused (``InvalidPassword``) before any work; a too-short one cannot
    match anything :func:`hash_password` produced, but still pays the full cost.
    """
    _check_password_bounds(pw)
    pw = _normalize_password(pw)
    if stored is None or len(pw) < MIN_PASSWORD_LENGTH:
        await asyncio.to_thread(_verify_sync, _DUMMY_HASH, pw)
        return False
    return await asyncio.to_thread(_verify_sync, stored, pw)


def password_needs_rehash(stored: str) -> bool:
    """True when ``stored`` used other argon2 parameters; rehash it at the next login."""
    from argon2.exceptions import InvalidHashError

    try:
        return _hasher().check_needs_rehash(stored)
    except InvalidHashError as e:
        raise LocalProtocolError("stored password hash is not an argon2 PHC string") from e


# --- bearer header ---------------------------------------------------------------------

# RFC 6750 b64token.
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def parse_bearer(header_value: str | None) -> str:
    """The token from an ``Authorization: Bearer <token>`` header value.

    Raises :class:`AuthRequired` (401) when the header is absent, uses another scheme, or
    is malformed. Whether the token itself is valid is :class:`Authenticator`'s question.
    """
    if header_value is None or not header_value.strip():
        raise AuthRequired("authorization required")
    if len(header_value) > MAX_TOKEN_LENGTH + 16:
        raise AuthRequired("authorization header too long")
    scheme, _, token = header_value.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer":
        raise AuthRequired("authorization scheme must be Bearer")
    if not token or _B64TOKEN.fullmatch(token) is None:
        raise AuthRequired("malformed bearer token")
    return token


# --- values ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tokens:
    """What createSession / refreshSession answer with."""

    access_jwt: str
    refresh_jwt: str
    sid: str
    did: str


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a verified access token speaks for."""

    did: str
    sid: str


@dataclass(frozen=True, slots=True)
class SessionRow:
    """One login session as stored. ``refresh_hash`` is :func:`hash_token` of the current
    refresh token; times are integer epoch seconds; ``expires_at`` is the current refresh
    token's expiry and moves forward on every rotation."""

    sid: str
    did: str
    refresh_hash: str
    created_at: int
    expires_at: int
    revoked: bool = False


def hash_token(token: str) -> str:
    """sha256 hex of a token: what a store keeps instead of the token.

    No salt or KDF is needed: the token is a MAC with 256 bits of key behind it, not a
    guessable secret.
    """
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class SessionStore(Protocol):
    """Where sessions persist (a SQLite table in the node; :class:`MemorySessionStore` in
    tests). Methods may run concurrently for many requests. Arguments are passed
    positionally, so an implementation may name its parameters as it likes."""

    async def create(self, session: SessionRow, /) -> None:
        """Insert a new session (``sid`` is fresh and unique)."""
        ...

    async def get(self, sid: str, /) -> SessionRow | None:
        """The session, revoked or not, or ``None`` if unknown."""
        ...

    async def rotate_refresh(
        self, sid: str, old_hash: str, new_hash: str, new_expiry: int, /
    ) -> bool:
        """Compare-and-swap: set ``refresh_hash = new_hash, expires_at = new_expiry`` only
        if the session exists, is not revoked and its ``refresh_hash == old_hash``; return
        whether it did. Must be atomic (in SQL: one ``UPDATE ... WHERE sid = ? AND
        refresh_hash = ? AND NOT revoked`` and check the row count)."""
        ...

    async def revoke(self, sid: str, /) -> None:
        """Mark the session revoked (idempotent; unknown ``sid`` is not an error)."""
        ...

    async def revoke_all(self, did: str, /) -> None:
        """Mark every session of ``did`` revoked."""
        ...


class MemorySessionStore:
    """:class:`SessionStore` in a dict, for tests. Expired rows are never pruned."""

    def __init__(self) -> None:
        self.rows: dict[str, SessionRow] = {}

    async def create(self, session: SessionRow) -> None:
        if session.sid in self.rows:
            raise LocalProtocolError(f"duplicate session id {session.sid!r}")
        self.rows[session.sid] = session

    async def get(self, sid: str) -> SessionRow | None:
        return self.rows.get(sid)

    async def rotate_refresh(self, sid: str, old_hash: str, new_hash: str, new_expiry: int) -> bool:
        row = self.rows.get(sid)
        if row is None or row.revoked or row.refresh_hash != old_hash:
            return False
        self.rows[sid] = replace(row, refresh_hash=new_hash, expires_at=new_expiry)
        return True

    async def revoke(self, sid: str) -> None:
        row = self.rows.get(sid)
        if row is not None:
            self.rows[sid] = replace(row, revoked=True)

    async def revoke_all(self, did: str) -> None:
        for sid, row in list(self.rows.items()):
            if row.did == did:
                self.rows[sid] = replace(row, revoked=True)


# --- authenticator ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Claims:
    did: str
    sid: str
    scope: str
    iat: int
    exp: int


@dataclass(frozen=True, slots=True)
class _Cached:
    did: str
    revoked: bool
    expires_at: int
    checked_at: float


def _int_claim(payload: dict[str, Any], name: str) -> int:
    value = payload.get(name)
    # bool is an int in Python but not in JSON; the SDK's strict model refuses floats.
    if type(value) is not int:
        raise InvalidToken(f"token claim {name!r} must be an integer")
    return value


def _str_claim(payload: dict[str, Any], name: str, max_length: int = 256) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value or len(value) > max_length:
        raise InvalidToken(f"token claim {name!r} must be a non-empty string")
    return value


class Authenticator:
    """Creates, verifies, rotates and revokes session tokens.

    ``secret`` is the node's HS256 key (at least 32 random bytes, loaded at start-up);
    ``audience`` is the node's DID or URL and goes in every token's ``aud``. ``clock``
    gives epoch seconds (tests pass a fake one).

    Access tokens are checked against their session on every use so revocation is
    immediate. To spare the store, session state is cached in a bounded LRU
    (``cache_size`` sessions): a revoked session stays cached as revoked; a valid one is
    re-read after ``cache_ttl`` seconds, which bounds how long a revocation made by
    *another* process can go unseen. Revocations through this object apply at once.
    """

    def __init__(
        self,
        secret: bytes,
        store: SessionStore,
        *,
        audience: str,
        access_ttl: int = 7200,
        refresh_ttl: int = 90 * 86400,
        clock: Callable[[], float] = time.time,
        cache_size: int = 10_000,
        cache_ttl: float = 30.0,
    ) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise LocalProtocolError(f"JWT secret must be at least {MIN_SECRET_BYTES} bytes")
        if not audience:
            raise LocalProtocolError("audience must not be empty")
        if access_ttl <= 0 or refresh_ttl <= 0 or cache_size <= 0 or cache_ttl < 0:
            raise LocalProtocolError("TTLs and cache size must be positive")
        self._secret = secret
        self._store = store
        self.audience = audience
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl
        self._clock = clock
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._verified: OrderedDict[str, _Claims] = OrderedDict()
        self._cache_size = cache_size
        self._cache_ttl = cache_ttl
        # A store read is cached only if no revocation started or finished while it ran:
        # otherwise it may have read the row just before the revocation reached the store.
        self._revocations = 0
        self._pending = 0

    # -- passwords (the module functions, here too so handlers need only the object) --

    async def hash_password(self, pw: str) -> str:
        """:func:`hash_password`."""
        return await hash_password(pw)

    async def verify_password(self, stored: str | None, pw: str) -> bool:
        """:func:`verify_password`."""
        return await verify_password(stored, pw)

    # -- minting --

    def _now(self) -> int:
        return int(self._clock())

    def _mint(self, did: str, sid: str, scope: str, now: int, ttl: int) -> str:
        claims = {
            "scope": scope,
            "sub": did,
            "aud": self.audience,
            "iat": now,
            "exp": now + ttl,
            "jti": secrets.token_urlsafe(16),
            "sid": sid,
        }
        import jwt

        return jwt.encode(claims, self._secret, algorithm="HS256", headers={"typ": _TYP[scope]})

    async def create_session(self, did: str) -> Tokens:
        """Start a session for ``did`` (call after the password checked out)."""
        if not is_valid_did(did):
            raise LocalProtocolError(f"create_session with a malformed DID {did!r}")
        now = self._now()
        sid = secrets.token_urlsafe(16)
        access = self._mint(did, sid, ACCESS_SCOPE, now, self.access_ttl)
        refresh = self._mint(did, sid, REFRESH_SCOPE, now, self.refresh_ttl)
        row = SessionRow(sid, did, hash_token(refresh), now, now + self.refresh_ttl)
        await self._store.create(row)
        self._remember(sid, _Cached(did, False, row.expires_at, self._clock()))
        return Tokens(access, refresh, sid, did)

    # -- verifying --

    def _decode(self, token: str, scopes: tuple[str, ...]) -> _Claims:
        if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
            raise InvalidToken("token could not be verified")
        import jwt

        try:
            decoded = jwt.decode_complete(
                token,
                self._secret,
                algorithms=["HS256"],
                audience=self.audience,
                # Times are checked below against the injected clock, not PyJWT's own.
                options={
                    "require": ["exp", "iat", "sub", "aud", "scope", "jti", "sid"],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                    "strict_aud": True,
                },
            )
        except jwt.PyJWTError as e:
            raise InvalidToken("token could not be verified") from e
        payload: dict[str, Any] = decoded["payload"]
        header: dict[str, Any] = decoded["header"]
        scope = payload.get("scope")
        if scope not in scopes or header.get("typ") != _TYP[scope]:
            raise InvalidToken("bad token scope")
        did = _str_claim(payload, "sub", 2048)
        if not is_valid_did(did):
            raise InvalidToken("malformed token subject")
        sid = _str_claim(payload, "sid")
        _str_claim(payload, "jti")
        iat = _int_claim(payload, "iat")
        exp = _int_claim(payload, "exp")
        if self._clock() >= exp:
            raise ExpiredToken("token has expired")
        return _Claims(did, sid, scope, iat, exp)

    def _remember(self, sid: str, entry: _Cached) -> None:
        self._cache[sid] = entry
        self._cache.move_to_end(sid)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    async def _load(self, sid: str) -> SessionRow | None:
        """Read a session, caching it unless a revocation raced the read."""
        seen = self._revocations
        row = await self._store.get(sid)
        if row is not None and seen == self._revocations and not self._pending:
            self._remember(sid, _Cached(row.did, row.revoked, row.expires_at, self._clock()))
        return row

    def _check_session(self, did: str, revoked: bool, expires_at: int, claims: _Claims) -> None:
        if revoked:
            raise InvalidToken("session has been revoked")
        if did != claims.did:
            raise InvalidToken("token subject does not match its session")
        if self._clock() >= expires_at:
            raise ExpiredToken("session has expired")

    def _decode_access(self, token: str) -> _Claims:
        """:meth:`_decode` for access tokens, memoised: a client sends the same token
        on every request, and HMAC plus JSON parsing was a tenth of a write's cost.
        Expiry is still checked on every call; revocation is checked by the caller."""
        claims = self._verified.get(token)
        if claims is None:
            claims = self._decode(token, (ACCESS_SCOPE,))
            self._verified[token] = claims
            while len(self._verified) > self._cache_size:
                self._verified.popitem(last=False)
        elif self._clock() >= claims.exp:
            del self._verified[token]
            raise ExpiredToken("token has expired")
        return claims

    async def verify_access(self, token: str) -> Principal:
        """Check an access token (signature, ``exp``, scope, audience, session alive)."""
        claims = self._decode_access(token)
        cached = self._cache.get(claims.sid)
        if cached is not None and (
            cached.revoked or self._clock() - cached.checked_at < self._cache_ttl
        ):
            self._cache.move_to_end(claims.sid)
            self._check_session(cached.did, cached.revoked, cached.expires_at, claims)
            return Principal(claims.did, claims.sid)
        row = await self._load(claims.sid)
        if row is None:
            raise InvalidToken("unknown session")
        cached = self._cache.get(claims.sid)
        revoked = row.revoked or (cached is not None and cached.revoked)
        self._check_session(row.did, revoked, row.expires_at, claims)
        return Principal(claims.did, claims.sid)

    # -- rotating and revoking --

    async def refresh(self, refresh_token: str) -> Tokens:
        """Swap a refresh token for a new pair (refreshSession).

        The presented token stops working. Presenting a superseded refresh token again
        means two parties hold it, so the whole session is revoked.
        """
        claims = self._decode(refresh_token, (REFRESH_SCOPE,))
        cached = self._cache.get(claims.sid)
        if cached is not None and cached.revoked:
            raise InvalidToken("session has been revoked")
        row = await self._load(claims.sid)
        if row is None:
            raise InvalidToken("unknown session")
        cached = self._cache.get(claims.sid)
        revoked = row.revoked or (cached is not None and cached.revoked)
        self._check_session(row.did, revoked, row.expires_at, claims)
        old_hash = hash_token(refresh_token)
        if not hmac.compare_digest(row.refresh_hash, old_hash):
            await self._revoke_sid(claims.sid, row.did)
            raise InvalidToken("refresh token was already used; session revoked")
        now = self._now()
        access = self._mint(row.did, claims.sid, ACCESS_SCOPE, now, self.access_ttl)
        refresh = self._mint(row.did, claims.sid, REFRESH_SCOPE, now, self.refresh_ttl)
        expires_at = now + self.refresh_ttl
        seen = self._revocations
        if not await self._store.rotate_refresh(
            claims.sid, old_hash, hash_token(refresh), expires_at
        ):
            # Another refresh with this same token won the race (or a revocation did):
            # the token was presented twice, which is reuse.
            await self._revoke_sid(claims.sid, row.did)
            raise InvalidToken("refresh token was already used; session revoked")
        if seen == self._revocations and not self._pending:
            self._remember(claims.sid, _Cached(row.did, False, expires_at, self._clock()))
        return Tokens(access, refresh, claims.sid, row.did)

    async def _revoke_sid(self, sid: str, did: str) -> None:
        # In-process first, so requests racing the store write already see it.
        self._remember(sid, _Cached(did, True, 0, self._clock()))
        self._revocations += 1
        self._pending += 1
        try:
            await self._store.revoke(sid)
        finally:
            self._pending -= 1
            self._revocations += 1

    async def revoke(self, token: str) -> None:
        """End the session a token belongs to (deleteSession); both its tokens stop working.

        Either token of the session is accepted; it must verify and be unexpired. Revoking
        an already revoked session is not an error.
        """
        claims = self._decode(token, (ACCESS_SCOPE, REFRESH_SCOPE))
        await self._revoke_sid(claims.sid, claims.did)

    async def revoke_all(self, did: str) -> None:
        """End every session of ``did`` (password change, takedown, account deletion)."""
        for sid, entry in self._cache.items():
            if entry.did == did and not entry.revoked:
                self._cache[sid] = replace(entry, revoked=True)
        self._revocations += 1
        self._pending += 1
        try:
            await self._store.revoke_all(did)
        finally:
            self._pending -= 1
            self._revocations += 1
