"""Service auth: a short-lived token by which an account vouches for one request to
another node (atproto's ``com.atproto.server.getServiceAuth`` tokens).

A node that is asked to take in an existing account (``createAccount`` with a
``did``, the first step of a migration) must know the caller controls that DID.
atproto's answer is a JWT the account's current home signs with the account's
signing key, naming the receiving service (``aud``) and the method (``lxm``). skyfed
uses the same token, with two deliberate differences:

* ``alg`` is ``EdDSA`` (ed25519), as every skyfed key is;
* a verifier accepts a signature by the DID's current signing key **or by any of its
  current rotation keys**, so a user who holds a rotation key can vouch for
  themselves when the old home is gone or refuses (the rotation key could take the
  identity anyway: it proves at least as much as the signing key).

Claims, all required: ``iss`` (the DID), ``aud`` (the receiving node's DID, its node
key as ``did:key``; one string, never a list, as atproto requires), ``lxm`` (the NSID
the token is good for), ``iat`` and ``exp`` (seconds; ``exp`` after ``iat`` by at
most :data:`MAX_LIFETIME`), ``jti`` (a random nonce). Refused: tokens over
:data:`MAX_TOKEN_BYTES`, another ``alg``, a wrong ``iss``/``aud``/``lxm``, an ``aud``
that is a list (even one naming us), expired or not yet valid tokens (``now`` is
passed in), and signatures by any other key. Errors are :class:`ServiceAuthError`
(XRPC ``InvalidToken``, 401).

A token is good for **one** use: the verifier remembers each ``(iss, jti)`` it
accepted until the token's ``exp`` (:class:`UsedTokens`) and refuses it again. A
node keeps that memory in RAM; a token is at most :data:`MAX_LIFETIME` old, so what
a restart forgets is a window of at most that long.

Sans-IO: the clock and the nonce are passed in. PyJWT (which loads ``cryptography``)
is imported at the first token made or read, not with this module.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, Final

from .errors import RemoteProtocolError
from .keys import SigningKey, verify_key

__all__ = [
    "MAX_LIFETIME",
    "MAX_TOKEN_BYTES",
    "ServiceAuthError",
    "UsedTokens",
    "make_service_token",
    "verify_service_token",
]

MAX_TOKEN_BYTES: Final = 4096
#: Longest a token may live, in seconds (atproto caps service tokens at an hour; a
#: migration step needs a minute).
MAX_LIFETIME: Final = 600
#: Clock skew tolerated on ``iat``.
_LEEWAY: Final = 30
_ALG: Final = "EdDSA"
_CLAIMS: Final = ("iss", "aud", "lxm", "iat", "exp", "jti")


class ServiceAuthError(RemoteProtocolError):
    """A service auth token is malformed, expired, misdirected or not signed by the DID."""

    error = "InvalidToken"
    status = 401


def make_service_token(
    *, did: str, aud: str, lxm: str, key: SigningKey, now: int, lifetime: int, jti: str
) -> str:
    """A token by which ``did`` vouches for a call of ``lxm`` at ``aud``."""
    if not 0 < lifetime <= MAX_LIFETIME:
        raise ServiceAuthError(f"a service token lives 1 to {MAX_LIFETIME} seconds")
    import jwt
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    claims = {"iss": did, "aud": aud, "lxm": lxm, "iat": now, "exp": now + lifetime, "jti": jti}
    private = Ed25519PrivateKey.from_private_bytes(key.to_bytes())
    return jwt.encode(claims, private, algorithm=_ALG, headers={"typ": "JWT"})


def verify_service_token(
    token: str, *, did: str, aud: str, lxm: str, keys: Iterable[str], now: int
) -> str:
    """Check ``token`` and return the did:key (one of ``keys``) that signed it.

    ``keys`` are the DID's current signing key and rotation keys, from its resolved
    identity log; the caller decides which DID is meant (``did``)."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_BYTES:
        raise ServiceAuthError(f"a service token is a string of at most {MAX_TOKEN_BYTES} bytes")
    import jwt
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as e:
        raise ServiceAuthError(f"malformed service token: {e}") from e
    if header.get("alg") != _ALG:
        raise ServiceAuthError(f"service token alg must be {_ALG}")
    claims: dict[str, Any] | None = None
    signer = ""
    for did_key in keys:
        public = Ed25519PublicKey.from_public_bytes(verify_key(did_key).raw)
        try:
            claims = jwt.decode(
                token,
                public,
                algorithms=[_ALG],
                audience=aud,
                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
            )
        except jwt.InvalidSignatureError:
            continue
        except jwt.PyJWTError as e:
            raise ServiceAuthError(f"invalid service token: {e}") from e
        signer = did_key
        break
    if claims is None:
        raise ServiceAuthError(f"service token is not signed by a current key of {did}")
    for name in _CLAIMS:
        if name not in claims:
            raise ServiceAuthError(f"service token lacks the claim {name!r}")
    # PyJWT accepts a list ``aud`` that contains ours; atproto takes one DID only, and
    # a token good for several services at once is one more service can replay.
    if type(claims["aud"]) is not str or claims["aud"] != aud:
        raise ServiceAuthError(f"service token aud must be the single DID {aud!r}")
    iat, exp = claims["iat"], claims["exp"]
    if type(iat) is not int or type(exp) is not int:
        raise ServiceAuthError("service token iat and exp must be integers")
    if claims["iss"] != did:
        raise ServiceAuthError(f"service token is issued by {claims['iss']!r}, not {did}")
    if claims["lxm"] != lxm:
        raise ServiceAuthError(f"service token is for {claims['lxm']!r}, not {lxm}")
    if not 0 < exp - iat <= MAX_LIFETIME:
        raise ServiceAuthError(f"a service token lives 1 to {MAX_LIFETIME} seconds")
    if iat > now + _LEEWAY:
        raise ServiceAuthError("service token is not valid yet")
    if exp <= now:
        raise ServiceAuthError("service token has expired")
    return signer


class UsedTokens:
    """The ``(iss, jti)`` of tokens already accepted, each kept until its ``exp``.

    Call :meth:`use` after :func:`verify_service_token` accepted the token. At most
    ``max_entries`` live tokens are remembered; past that, new ones are refused
    (fail closed) until old ones expire.
    """

    def __init__(self, max_entries: int = 100_000):
        self.max_entries = max_entries
        # (iss, jti) -> exp; insertion order is close to exp order (lifetimes are short).
        self._used: OrderedDict[tuple[str, str], int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._used)

    def use(self, token: str, now: int) -> None:
        """Record ``token`` (already verified) as used, or raise ServiceAuthError
        if it was used before."""
        import jwt

        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as e:
            raise ServiceAuthError(f"malformed service token: {e}") from e
        iss, jti, exp = claims.get("iss"), claims.get("jti"), claims.get("exp")
        if not isinstance(iss, str) or not isinstance(jti, str) or not jti or type(exp) is not int:
            raise ServiceAuthError("service token needs a string iss and jti and an integer exp")
        self._expire(now)
        key = (iss, jti)
        if key in self._used:
            raise ServiceAuthError("service token was already used (a replay)")
        if len(self._used) >= self.max_entries:
            raise ServiceAuthError("too many service tokens in use; try again shortly")
        self._used[key] = exp

    def _expire(self, now: int) -> None:
        for key in [k for k, exp in self._used.items() if exp <= now]:
            del self._used[key]
