"""Handles: when a handle names a DID, and the signed confirmation that says so.

An identity log (:mod:`protocol.identity`) *claims* a handle (``alsoKnownAs``), and
anyone can write any claim into a log they make. So a claim alone never makes a
handle resolve: the handle's *authority* must confirm it, as atproto's
``/.well-known/atproto-did`` or DNS ``_atproto`` TXT record confirms it for Bluesky.

In skyfed the authority for a handle is the node that registered it under one of its
handle domains. It says so with a :class:`HandleConfirmation`, a small record signed
by its node key (``{type: "skyfed_handle", handle, did, issuer, sig}``), which
travels with the identity log on the gossip network: no node ever has to fetch
anything from another to check it, and it keeps working when the issuing node is
offline or the account has moved away.

Which issuers a node believes for which handle (:func:`confirms`):

* a handle under one of the node's **own** handle domains: only the node's own
  registry (its accounts table). A confirmation from anyone else is ignored;
* a handle under a domain listed as **shared** (several nodes serve it, like the
  default ``.skyfed.test`` of a local harness): the node's registry first, else a
  confirmation by any issuer of a handle a node may register there (one label, not
  reserved);
* any other domain ``D``: a confirmation by an issuer the node *believes for D*
  (the ``issuers`` argument): a key the operator pinned for ``D``, or the node key
  of a node this node has verified as serving ``D`` (it dialled a URL whose host is
  :func:`domain_host` of ``D`` itself and completed the signed peer handshake
  there: the peer network's ``/.well-known/atproto-did``). A confirmation by
  anyone else is ignored, however valid its signature: there is no trust on first
  use, so a stranger cannot claim a domain no node has vouched for.

A handle's domain is the handle without its first label (``alice.b.test`` is under
``.b.test``): a node registers only one label under its domains.

Refused here, naming why: confirmations over :data:`MAX_CONFIRMATION_BYTES`, not
canonical, with unknown or missing fields, an invalid or non-lowercase handle, a DID
that is not ``did:skyfed:``, an issuer that is not an ed25519 ``did:key``, or a bad
signature. Sans-IO: no clock, no storage, no network.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Final

from .encoding import decode, encode
from .errors import DecodeError, IdentityError, InvalidSignature, InvalidSyntax
from .identity import validate_skyfed_did
from .keys import SIGNATURE_LENGTH, SigningKey, verify_key
from .syntax import validate_handle

__all__ = [
    "CONFIRMATION_TYPE",
    "INVALID_HANDLE",
    "MAX_CONFIRMATION_BYTES",
    "RESERVED_LABELS",
    "HandleConfirmation",
    "confirms",
    "domain_host",
    "handle_domain",
    "is_reserved",
    "registration_error",
    "under",
]

CONFIRMATION_TYPE: Final = "skyfed_handle"
#: What views show for an account whose handle is not confirmed (as Bluesky does).
INVALID_HANDLE: Final = "handle.invalid"
#: Bound on one encoded confirmation (a valid one is about 200 bytes).
MAX_CONFIRMATION_BYTES: Final = 1024
#: First labels a node does not register under its domains: names a user would
#: take for the node's own voice (``support.example.org``) or the protocol's.
RESERVED_LABELS: Final = frozenset(
    {
        "abuse",
        "admin",
        "administrator",
        "help",
        "hostmaster",
        "invalid",
        "moderator",
        "moderation",
        "noreply",
        "official",
        "postmaster",
        "root",
        "security",
        "staff",
        "support",
        "system",
        "webmaster",
        "www",
    }
)

_KEYS: Final = frozenset({"type", "handle", "did", "issuer", "sig"})


def handle_domain(handle: str) -> str:
    """The domain a handle is registered under: the handle without its first label,
    with a leading dot (``alice.b.test`` -> ``.b.test``)."""
    _, dot, rest = handle.partition(".")
    return dot + rest


def domain_host(domain: str) -> str:
    """The host a node serving handle domain ``domain`` is dialled at: the domain
    without its leading dot (``.b.test`` -> ``b.test``)."""
    return domain.removeprefix(".")


def under(handle: str, domains: Iterable[str]) -> bool:
    """Whether ``handle`` is under one of ``domains`` (each with a leading dot), at
    any depth: a subdomain of a node's domain is the node's too."""
    return any(handle.endswith(d) and len(handle) > len(d) for d in domains)


def is_reserved(handle: str) -> bool:
    """Whether the first label of ``handle`` is one a node does not register."""
    return handle.partition(".")[0] in RESERVED_LABELS


def registration_error(handle: str, domains: Iterable[str]) -> tuple[str, str] | None:
    """Why a node with handle ``domains`` may not register ``handle`` (an XRPC error
    name and a message), or None if it may: one label under one of its domains, and
    not a reserved name. Whether the handle is free is for the node to say."""
    domains = tuple(domains)
    if not under(handle, domains):
        return "UnsupportedDomain", f"handle must end with one of {', '.join(domains)}"
    if handle_domain(handle) not in domains:
        return "InvalidHandle", f"a handle here is one label under {', '.join(domains)}"
    if is_reserved(handle):
        return "HandleNotAvailable", f"{handle.partition('.')[0]!r} is reserved on this node"
    return None


@dataclass(frozen=True, slots=True)
class HandleConfirmation:
    """``issuer`` (a node's did:key) says: ``handle`` names ``did``."""

    handle: str
    did: str
    issuer: str
    sig: bytes = field(repr=False)

    def __post_init__(self) -> None:
        handle: object = self.handle
        if not isinstance(handle, str):
            raise IdentityError("handle must be a string")
        try:
            validate_handle(handle)
            verify_key(self.issuer)
        except InvalidSyntax as e:
            raise IdentityError(f"invalid handle confirmation: {e.message}") from e
        if handle != handle.lower():
            raise IdentityError("handle must be lowercase")
        validate_skyfed_did(self.did)
        sig: object = self.sig
        if not isinstance(sig, bytes) or len(sig) != SIGNATURE_LENGTH:
            raise IdentityError(f"sig must be {SIGNATURE_LENGTH} bytes")

    @classmethod
    def issue(cls, handle: str, did: str, key: SigningKey) -> HandleConfirmation:
        """Sign a confirmation with a node key."""
        unsigned = cls(handle, did, key.did_key(), bytes(SIGNATURE_LENGTH))
        return dataclasses.replace(unsigned, sig=key.sign(unsigned.unsigned_bytes()))

    def unsigned_bytes(self) -> bytes:
        return encode(
            {
                "type": CONFIRMATION_TYPE,
                "handle": self.handle,
                "did": self.did,
                "issuer": self.issuer,
            }
        )

    def to_bytes(self) -> bytes:
        return encode(
            {
                "type": CONFIRMATION_TYPE,
                "handle": self.handle,
                "did": self.did,
                "issuer": self.issuer,
                "sig": self.sig,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> HandleConfirmation:
        """Parse and check the signature: a confirmation that is not the issuer's
        own is an :class:`InvalidSignature`."""
        if not isinstance(data, bytes):
            raise DecodeError("a handle confirmation must be bytes")
        if len(data) > MAX_CONFIRMATION_BYTES:
            raise DecodeError(
                f"handle confirmation of {len(data)} bytes exceeds {MAX_CONFIRMATION_BYTES}"
            )
        value = decode(data, max_size=MAX_CONFIRMATION_BYTES)
        if type(value) is not dict or set(value) != _KEYS:
            raise DecodeError(f"a handle confirmation has exactly the fields {sorted(_KEYS)}")
        if value["type"] != CONFIRMATION_TYPE:
            raise DecodeError(f"handle confirmation type must be {CONFIRMATION_TYPE!r}")
        handle, did, issuer, sig = value["handle"], value["did"], value["issuer"], value["sig"]
        if not (type(handle) is str and type(did) is str and type(issuer) is str):
            raise DecodeError("handle, did and issuer must be strings")
        if type(sig) is not bytes:
            raise DecodeError("'sig' must be bytes")
        out = cls(handle, did, issuer, sig)
        if out.to_bytes() != data:
            raise DecodeError("handle confirmation does not round-trip to the same bytes")
        if not verify_key(issuer).is_valid(sig, out.unsigned_bytes()):
            raise InvalidSignature("handle confirmation is not signed by its issuer")
        return out


def confirms(
    handle: str,
    did: str,
    *,
    own_domains: Iterable[str],
    shared_domains: Iterable[str],
    registered: str | None,
    confirmation: HandleConfirmation | None,
    issuers: Collection[str],
) -> bool:
    """Whether a node may resolve ``handle`` to ``did`` (whose log claims it).

    ``registered`` is the DID the node's own registry gives ``handle`` (None: not
    registered here; it counts only under the node's own domains); ``confirmation``
    the one the node holds for ``did`` (any other handle or DID in it counts as
    none); ``issuers`` the keys the node believes for the handle's domain (its
    operator's pin, node keys verified as serving the domain; empty: nobody, and
    the handle stays unconfirmed).
    """
    if confirmation is not None and (confirmation.handle, confirmation.did) != (handle, did):
        confirmation = None
    own, shared = under(handle, own_domains), under(handle, shared_domains)
    if own and (registered is not None or not shared):
        return registered == did
    if confirmation is None:
        return False
    if shared:
        # Any node of a shared domain may confirm, but only what a node may register.
        return registration_error(handle, shared_domains) is None
    return confirmation.issuer in issuers
