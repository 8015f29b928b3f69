"""Self-certifying account identities: a signed, hash-linked operation log per DID.

This is did:plc's model (did-method-plc, spec v0.1) without the central directory.
Each account has a log of operations. The first, the *genesis* op, has ``prev: null``;
the DID is derived from the hash of the signed genesis op, so anyone holding the log
can check that it belongs to the DID, and no directory is needed to vouch for it.
Every later op names the CID of the op it follows (``prev``) and must be signed by one
of the rotation keys of the state at that ``prev``.

Differences from did:plc, all deliberate:

* keys are ed25519 ``did:key`` values (:mod:`protocol.keys`), ops are canonical
  msgpack (:mod:`protocol.encoding`), and ``prev`` is a binary CID (msgpack ``bin``
  holding ``CID.to_bytes()``, codec msgpack), not a CID string;
* the method name is ``did:skyfed:`` because curve and encoding differ, so a
  did:plc resolver must never be asked about these;
* the DID is ``did:skyfed:`` + the first 24 characters of the lowercase, unpadded
  base32 of sha256(canonical bytes of the signed genesis op). Lowercase so that DIDs
  survive every AT-URI parser unchanged;
* there is no 72-hour recovery window, because no server timestamps ops. Forks are
  settled by a rule every node computes alike from the ops alone (:func:`resolve_log`):
  among valid ops sharing a ``prev``, the one signed by the higher-priority rotation
  key (lower index in the ``rotationKeys`` of the state at ``prev``) wins; a tie goes
  to the lower CID (binary CID bytes). Ops descending from a losing op are
  *nullified*: kept as evidence, never applied.

  The price of having no window: a higher-priority rotation key can override a
  lower-priority key's op **at any time**, however old. Concretely, if a key was ever
  at index ``i`` in some state, it can fork at that state and beat every op there that
  was signed by a key of index ``> i`` -- even after it was "removed" by such an op.
  So removing a compromised rotation key is final only if the removing op, and every
  op before it since that key was added, was signed by a key that outranked it in the
  state at that op's ``prev``; a compromised index-0 key owns the identity for good.
  Keep the index-0 key offline.

  The tie rule alone would let any signer undo its own op later (sign a competing op
  with the same key, grind its CID until it sorts first). So a node that already
  holds a log also applies did:plc's directory rule, first seen wins
  (:func:`admit_ops`): a new op that would displace an op of its chain is refused
  unless signed by a strictly higher-priority key. A node that learns both ops at
  once has no "first" and picks by the tie rule.

An op is one of two shapes (every map key shown; no others are accepted)::

    {"type": "skyfed_op",
     "rotationKeys": [did:key, ...],                 # 1-5, priority order, no duplicates
     "verificationMethods": {"atproto": did:key},    # the account's signing key
     "alsoKnownAs": ["at://<handle>"],               # exactly one, lowercase handle
     "services": {"atproto_pds": {"type": "AtprotoPersonalDataServer",
                                  "endpoint": "<http(s) URL of the home node>"}},
     "prev": null | <binary CID>,
     "sig": <64-byte ed25519 signature>}

    {"type": "skyfed_tombstone", "prev": <binary CID>, "sig": <64 bytes>}

``sig`` signs the canonical encoding of the same map without the ``sig`` key. A
tombstone ends the identity: no op may follow a *winning* tombstone (it can itself
lose a fork like any op).

What this module refuses, naming the reason: ops over :data:`MAX_OP_BYTES` encoded
bytes; non-canonical encodings; unknown or missing keys; more than
:data:`MAX_ROTATION_KEYS` rotation keys or duplicates; keys that are not ed25519
``did:key``; handles that fail the atproto handle syntax or are not lowercase;
endpoints that are not a plain ``http``/``https`` URL (no userinfo, query or fragment;
at most :data:`MAX_ENDPOINT_LENGTH` characters); ``prev`` CIDs of another codec; more
than :data:`MAX_RESOLVE_OPS` distinct ops handed to :func:`resolve_log` at once; an op
that would make the canonical chain longer than :data:`MAX_CHAIN_OPS`. Errors are
:class:`IdentityError`, :class:`DecodeError` or :class:`InvalidSignature`, never
anything else.

Bounds, and why none of them can lock the owner out. A holder of a low-rank rotation
key (a stolen node key) can sign any number of ops: siblings on the head, or a long
chain. So (1) the canonical chain holds at most :data:`MAX_CHAIN_OPS` ops, and an op
that would lengthen it past that is rejected -- but a recovery op by a higher-ranked
key forks *before* the first op it overrides, so the chain it makes is never longer
than the one it replaces, and it is always admitted; (2) nullified ops decide
nothing (a nullified op can never become canonical again), so a node stores only a
bounded sample as evidence (:attr:`ResolvedLog.evidence`: one per fork point and
signing key, at most :data:`MAX_EVIDENCE_OPS`), never the rest; (3) a stored log is
therefore at most :data:`MAX_LOG_OPS` = chain + evidence ops, and
:func:`resolve_log` takes :data:`MAX_RESOLVE_OPS`, room for a stored log plus one
peer's whole log, so an op is never refused for the size of what a node holds.

Sans-IO: no clock, no randomness, no storage. Keys and ops are passed in.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeAlias

from .cid import CID, CODEC_MSGPACK, cid_for_msgpack
from .encoding import Value, decode, encode
from .errors import DecodeError, IdentityError, InvalidSignature, InvalidSyntax
from .keys import DID_KEY_PREFIX, SIGNATURE_LENGTH, SigningKey, verify_key
from .syntax import validate_handle

__all__ = [
    "DID_PREFIX",
    "MAX_CHAIN_OPS",
    "MAX_ENDPOINT_LENGTH",
    "MAX_EVIDENCE_OPS",
    "MAX_LOG_OPS",
    "MAX_OP_BYTES",
    "MAX_RESOLVE_OPS",
    "MAX_ROTATION_KEYS",
    "OP_TYPE",
    "PDS_SERVICE_TYPE",
    "TOMBSTONE_TYPE",
    "IdentityOp",
    "IdentityState",
    "OpAdmission",
    "OpType",
    "RejectedOp",
    "ResolvedLog",
    "admit_ops",
    "chain_signing_keys",
    "check_new_op",
    "did_document",
    "did_for_genesis",
    "resolve_log",
    "validate_skyfed_did",
]

OP_TYPE: Final = "skyfed_op"
TOMBSTONE_TYPE: Final = "skyfed_tombstone"
OpType: TypeAlias = Literal["skyfed_op", "skyfed_tombstone"]

DID_PREFIX: Final = "did:skyfed:"
_DID_ID_LENGTH: Final = 24
_DID_RE: Final = re.compile(r"did:skyfed:[a-z2-7]{24}")

#: Bound on one encoded op (did:plc allows 7500 bytes of DAG-CBOR). A valid op is
#: under 2 KiB; the bound is what a peer may make us decode.
MAX_OP_BYTES: Final = 8 * 1024
#: Bound on a log as a node stores, serves and gossips it: its canonical chain plus
#: the nullified ops kept as evidence (and on an ``ops`` list on the wire).
MAX_LOG_OPS: Final = 1000
#: Bound on the nullified ops a stored log keeps as evidence (:attr:`ResolvedLog.evidence`).
MAX_EVIDENCE_OPS: Final = 100
#: Bound on the canonical chain: an op that would make it longer is rejected. A
#: recovery fork never lengthens the chain it overrides, so it is never refused by this.
MAX_CHAIN_OPS: Final = MAX_LOG_OPS - MAX_EVIDENCE_OPS
#: Bound on the distinct ops handed to :func:`resolve_log` at once: a stored log plus
#: one peer's whole log (or one batch) merged into it.
MAX_RESOLVE_OPS: Final = 2 * MAX_LOG_OPS
MAX_ROTATION_KEYS: Final = 5
MAX_ENDPOINT_LENGTH: Final = 512
PDS_SERVICE_TYPE: Final = "AtprotoPersonalDataServer"

_OP_KEYS: Final = frozenset(
    {"type", "rotationKeys", "verificationMethods", "alsoKnownAs", "services", "prev", "sig"}
)
_TOMBSTONE_KEYS: Final = frozenset({"type", "prev", "sig"})
_AKA_PREFIX: Final = "at://"
_DNS_LABEL: Final = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
# Scheme, host (DNS name, IPv4 or bracketed IPv6), optional port, optional path. The
# authority admits no '@' (userinfo) and nothing admits '?' or '#': an endpoint is a
# base URL that XRPC paths are appended to, so a query or fragment has no meaning.
_ENDPOINT_RE: Final = re.compile(
    r"https?://"
    rf"(?:{_DNS_LABEL}(?:\.{_DNS_LABEL})*|\[[0-9A-Fa-f:.]+\])"
    r"(?::(?P<port>[0-9]{1,5}))?"
    r"(?:/[A-Za-z0-9._~!$&'()*+,;=:@%-]*)*"
)


# -- field checks ------------------------------------------------------------------------


def _check_did_key(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise IdentityError(f"{what} must be a did:key string")
    try:
        verify_key(value)
    except InvalidSyntax as e:
        raise IdentityError(f"{what} is not an ed25519 did:key: {e.message}") from e
    return value


def _check_handle(value: object) -> str:
    if not isinstance(value, str):
        raise IdentityError("handle must be a string")
    try:
        validate_handle(value)
    except InvalidSyntax as e:
        raise IdentityError(f"invalid handle: {e.message}") from e
    # One spelling per handle, so equal identities have equal bytes and CIDs.
    if value != value.lower():
        raise IdentityError("handle must be lowercase")
    return value


def _check_endpoint(value: object) -> str:
    if not isinstance(value, str):
        raise IdentityError("endpoint must be a string")
    if len(value) > MAX_ENDPOINT_LENGTH:
        raise IdentityError(f"endpoint is longer than {MAX_ENDPOINT_LENGTH} characters")
    if not value.isascii():
        raise IdentityError("endpoint must be ASCII")
    m = _ENDPOINT_RE.fullmatch(value)
    if m is None:
        raise IdentityError(
            "endpoint must be an http:// or https:// URL with a host, an optional port "
            "and path, and no userinfo, query or fragment"
        )
    if m["port"] is not None and not 1 <= int(m["port"]) <= 65535:
        raise IdentityError("endpoint port must be 1-65535")
    return value


def validate_skyfed_did(did: object) -> str:
    """Return ``did`` if it is a well-formed ``did:skyfed:`` DID, else IdentityError."""
    if not isinstance(did, str) or _DID_RE.fullmatch(did) is None:
        raise IdentityError(
            f"not a skyfed DID: expected {DID_PREFIX!r} + 24 characters of lowercase base32"
        )
    return did


def _did_from_digest(digest: bytes) -> str:
    b32 = base64.b32encode(digest).decode("ascii").lower()
    return DID_PREFIX + b32[:_DID_ID_LENGTH]


# -- operations ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IdentityOp:
    """One signed operation: a full identity state (``skyfed_op``) or a tombstone.

    For a tombstone ``rotation_keys`` is empty and the other state fields are None.
    Constructing one validates every field except the signature, which can only be
    checked against the state at ``prev`` (:meth:`verify`).
    """

    type: OpType
    prev: CID | None
    sig: bytes = field(repr=False)
    rotation_keys: tuple[str, ...] = ()
    signing_key: str | None = None
    handle: str | None = None
    endpoint: str | None = None

    def __post_init__(self) -> None:
        prev: object = self.prev
        if prev is not None and (not isinstance(prev, CID) or prev.codec != CODEC_MSGPACK):
            raise IdentityError("prev must be null or the msgpack CID of an identity op")
        sig: object = self.sig
        if not isinstance(sig, bytes) or len(sig) != SIGNATURE_LENGTH:
            raise IdentityError(f"sig must be {SIGNATURE_LENGTH} bytes")
        rotation_keys: object = self.rotation_keys
        op_type: object = self.type
        if op_type == TOMBSTONE_TYPE:
            if prev is None:
                raise IdentityError("a tombstone must have a prev")
            if (
                rotation_keys != ()
                or self.signing_key is not None
                or self.handle is not None
                or self.endpoint is not None
            ):
                raise IdentityError("a tombstone carries no identity state")
            return
        if op_type != OP_TYPE:
            raise IdentityError(f"op type must be {OP_TYPE!r} or {TOMBSTONE_TYPE!r}")
        if not isinstance(rotation_keys, tuple):
            raise IdentityError("rotation_keys must be a tuple")
        if not 1 <= len(rotation_keys) <= MAX_ROTATION_KEYS:
            raise IdentityError(f"an op must have 1 to {MAX_ROTATION_KEYS} rotation keys")
        for key in rotation_keys:
            _check_did_key(key, "rotation key")
        if len(set(rotation_keys)) != len(rotation_keys):
            raise IdentityError("rotation keys must not repeat")
        _check_did_key(self.signing_key, "signing key")
        _check_handle(self.handle)
        _check_endpoint(self.endpoint)

    # -- building ----------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        rotation_keys: Sequence[str],
        signing_key: str,
        handle: str,
        endpoint: str,
        prev: CID | None,
        signer: SigningKey,
    ) -> IdentityOp:
        """Build and sign a regular op. ``handle`` is lowercased.

        A genesis op (``prev`` None) must be signed by one of its own rotation keys;
        for a later op the signer must hold a rotation key of the state at ``prev``,
        which only the log can tell (:meth:`IdentityState.apply`, :func:`resolve_log`).
        """
        if isinstance(handle, str):
            handle = handle.lower()
        keys = tuple(rotation_keys) if not isinstance(rotation_keys, str) else (rotation_keys,)
        unsigned = cls(
            type=OP_TYPE,
            prev=prev,
            sig=bytes(SIGNATURE_LENGTH),
            rotation_keys=keys,
            signing_key=signing_key,
            handle=handle,
            endpoint=endpoint,
        )
        if prev is None and signer.did_key() not in keys:
            raise IdentityError("a genesis op must be signed by one of its own rotation keys")
        return dataclasses.replace(unsigned, sig=signer.sign(unsigned.unsigned_bytes()))

    @classmethod
    def update(
        cls,
        state: IdentityState,
        signer: SigningKey,
        *,
        rotation_keys: Sequence[str] | None = None,
        signing_key: str | None = None,
        handle: str | None = None,
        endpoint: str | None = None,
    ) -> IdentityOp:
        """The op that follows ``state``: its fields, with the ones given replaced.

        Whether ``signer`` may sign it (holds a rotation key of ``state``) is for the
        log to judge (:func:`check_new_op`); building a doomed op is not an error here.
        """
        if state.tombstoned:
            raise IdentityError(f"{state.did} is tombstoned; no op may follow")
        return cls.create(
            rotation_keys=state.rotation_keys if rotation_keys is None else rotation_keys,
            signing_key=state.signing_key if signing_key is None else signing_key,
            handle=state.handle if handle is None else handle,
            endpoint=state.endpoint if endpoint is None else endpoint,
            prev=state.head,
            signer=signer,
        )

    @classmethod
    def tombstone(cls, prev: CID, signer: SigningKey) -> IdentityOp:
        """Build and sign a tombstone ending the identity whose head is ``prev``."""
        unsigned = cls(type=TOMBSTONE_TYPE, prev=prev, sig=bytes(SIGNATURE_LENGTH))
        return dataclasses.replace(unsigned, sig=signer.sign(unsigned.unsigned_bytes()))

    # -- encoding ----------------------------------------------------------------------

    @property
    def is_tombstone(self) -> bool:
        return self.type == TOMBSTONE_TYPE

    @property
    def is_genesis(self) -> bool:
        return self.prev is None

    def _value(self, *, signed: bool) -> dict[str, Value]:
        prev = None if self.prev is None else self.prev.to_bytes()
        value: dict[str, Value]
        if self.type == TOMBSTONE_TYPE:
            value = {"type": self.type, "prev": prev}
        else:
            assert self.signing_key is not None
            assert self.handle is not None
            assert self.endpoint is not None
            value = {
                "type": self.type,
                "rotationKeys": list(self.rotation_keys),
                "verificationMethods": {"atproto": self.signing_key},
                "alsoKnownAs": [_AKA_PREFIX + self.handle],
                "services": {"atproto_pds": {"type": PDS_SERVICE_TYPE, "endpoint": self.endpoint}},
                "prev": prev,
            }
        if signed:
            value["sig"] = self.sig
        return value

    def unsigned_bytes(self) -> bytes:
        """The bytes the signature covers: the canonical op without ``sig``."""
        return encode(self._value(signed=False))

    def to_bytes(self) -> bytes:
        return encode(self._value(signed=True))

    @property
    def cid(self) -> CID:
        return cid_for_msgpack(self.to_bytes())

    @classmethod
    def from_bytes(cls, data: bytes) -> IdentityOp:
        """Parse one encoded op. Checks shape and fields, not the signature."""
        if not isinstance(data, bytes):
            raise DecodeError("an identity op must be bytes")
        if len(data) > MAX_OP_BYTES:
            raise DecodeError(f"identity op of {len(data)} bytes exceeds {MAX_OP_BYTES}")
        value = decode(data, max_size=MAX_OP_BYTES)
        if type(value) is not dict:
            raise DecodeError("an identity op must be a map")
        op_type = value.get("type")
        if op_type == OP_TYPE:
            want = _OP_KEYS
        elif op_type == TOMBSTONE_TYPE:
            want = _TOMBSTONE_KEYS
        else:
            raise DecodeError(f"op type must be {OP_TYPE!r} or {TOMBSTONE_TYPE!r}")
        if set(value) != want:
            raise DecodeError(f"a {op_type} op has exactly the fields {sorted(want)}")
        prev_raw, sig = value["prev"], value["sig"]
        if type(sig) is not bytes:
            raise DecodeError("'sig' must be bytes")
        prev: CID | None = None
        if prev_raw is not None:
            if type(prev_raw) is not bytes:
                raise DecodeError("'prev' must be null or a binary CID")
            prev = CID.from_bytes(prev_raw)
        if op_type == TOMBSTONE_TYPE:
            op = cls(type=TOMBSTONE_TYPE, prev=prev, sig=sig)
        else:
            op = cls(
                type=OP_TYPE,
                prev=prev,
                sig=sig,
                rotation_keys=_str_list(value["rotationKeys"], "rotationKeys"),
                signing_key=_check_did_key(
                    _single(value["verificationMethods"], "atproto", "verificationMethods"),
                    "signing key",
                ),
                handle=_handle_from_aka(value["alsoKnownAs"]),
                endpoint=_check_endpoint(_endpoint_from_services(value["services"])),
            )
        # decode() already refused non-canonical bytes; this catches a field we parsed
        # into something that encodes differently (which would change the CID).
        if op.to_bytes() != data:
            raise DecodeError("identity op does not round-trip to the same bytes")
        return op

    # -- verification ------------------------------------------------------------------

    def verify(self, rotation_keys: Sequence[str]) -> int:
        """Return the index in ``rotation_keys`` of the key that signed this op.

        ``rotation_keys`` are those of the state at ``prev`` (for a genesis op, its
        own). Raises :class:`InvalidSignature` if none of them signed it.
        """
        return _signer_index(self.unsigned_bytes(), self.sig, tuple(rotation_keys))


@functools.lru_cache(maxsize=4096)
def _parse(raw: bytes) -> IdentityOp:
    """:meth:`IdentityOp.from_bytes`, cached: ops are immutable values of their bytes,
    and logs are resolved again and again (errors raise and are never cached)."""
    return IdentityOp.from_bytes(raw)


@functools.lru_cache(maxsize=4096)
def _signer_index(message: bytes, sig: bytes, rotation_keys: tuple[str, ...]) -> int:
    """The index of the key of ``rotation_keys`` that signed ``message``. Cached (a
    pure function, like :func:`protocol.keys.verify_key`): a node resolves the same
    log on many paths, and two ed25519 verifies per op were most of the cost of a
    long log. Failures raise, so they are never cached."""
    for index, did_key in enumerate(rotation_keys):
        try:
            key = verify_key(did_key)
        except InvalidSyntax as e:
            raise IdentityError(f"rotation key is not an ed25519 did:key: {e.message}") from e
        if key.is_valid(sig, message):
            return index
    raise InvalidSignature("identity op is not signed by any rotation key of its prev state")


def _str_list(raw: Value, name: str) -> tuple[str, ...]:
    if type(raw) is not list or not all(type(item) is str for item in raw):
        raise DecodeError(f"'{name}' must be a list of strings")
    return tuple(raw)  # type: ignore[arg-type]


def _single(raw: Value, key: str, name: str) -> Value:
    if type(raw) is not dict or set(raw) != {key}:
        raise DecodeError(f"'{name}' must be a map with exactly the key {key!r}")
    return raw[key]


def _handle_from_aka(raw: Value) -> str:
    aka = _str_list(raw, "alsoKnownAs")
    if len(aka) != 1 or not aka[0].startswith(_AKA_PREFIX):
        raise IdentityError("'alsoKnownAs' must be exactly one 'at://<handle>'")
    return aka[0][len(_AKA_PREFIX) :]


def _endpoint_from_services(raw: Value) -> Value:
    service = _single(raw, "atproto_pds", "services")
    if type(service) is not dict or set(service) != {"type", "endpoint"}:
        raise DecodeError("'services.atproto_pds' must be a map of 'type' and 'endpoint'")
    if service["type"] != PDS_SERVICE_TYPE:
        raise IdentityError(f"'services.atproto_pds.type' must be {PDS_SERVICE_TYPE!r}")
    return service["endpoint"]


def did_for_genesis(op: IdentityOp) -> str:
    """The DID a genesis op creates. Checks that it is self-signed."""
    if op.is_tombstone or op.prev is not None:
        raise IdentityError("only a regular op with prev null is a genesis op")
    op.verify(op.rotation_keys)
    return _did_from_digest(hashlib.sha256(op.to_bytes()).digest())


# -- state ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IdentityState:
    """An identity as of the op ``head``. After a tombstone, ``tombstoned`` is True
    and the other fields keep their last values (as evidence; do not serve them)."""

    did: str
    handle: str
    signing_key: str
    rotation_keys: tuple[str, ...]
    endpoint: str
    head: CID
    tombstoned: bool = False

    def apply(self, op_bytes: bytes) -> IdentityState:
        """The state after one new op that extends ``head``.

        This is the fast path for the usual update. An op that forks from an earlier
        op (a recovery by a higher-priority key) is refused with IdentityError: such
        an op needs the whole log, so hand it to :func:`resolve_log` with the rest.
        """
        if self.tombstoned:
            raise IdentityError(f"{self.did} is tombstoned; no op may follow")
        op = IdentityOp.from_bytes(op_bytes)
        if op.prev is None:
            raise IdentityError("a genesis op cannot extend an existing log")
        if op.prev != self.head:
            raise IdentityError(
                f"op does not extend the head {self.head}: resolve the whole log instead"
            )
        op.verify(self.rotation_keys)
        return _next_state(self, op, cid_for_msgpack(op_bytes))


def _genesis_state(did: str, op: IdentityOp, cid: CID) -> IdentityState:
    assert op.signing_key is not None
    assert op.handle is not None
    assert op.endpoint is not None
    return IdentityState(
        did=did,
        handle=op.handle,
        signing_key=op.signing_key,
        rotation_keys=op.rotation_keys,
        endpoint=op.endpoint,
        head=cid,
    )


def _next_state(state: IdentityState, op: IdentityOp, cid: CID) -> IdentityState:
    if op.is_tombstone:
        return dataclasses.replace(state, head=cid, tombstoned=True)
    return _genesis_state(state.did, op, cid)


# -- log resolution ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RejectedOp:
    """An input op that :func:`resolve_log` dropped, and why (for logs and debugging)."""

    cid: CID
    reason: str


@dataclass(frozen=True, slots=True)
class ResolvedLog:
    """The outcome of resolving a log.

    ``chain`` is the canonical history, genesis first, head last. ``nullified`` are
    valid ops that lost a fork (or descend from one that did), ``rejected`` the inputs
    that are invalid, do not chain to the genesis op, or would make the chain longer
    than :data:`MAX_CHAIN_OPS`; both sorted by CID bytes.

    ``evidence`` is the part of ``nullified`` worth storing: ops that lost directly
    to a chain op (their ``prev`` is on the chain, or they are losing genesis ops),
    one per fork point and rotation-key index (the lowest CID), at most
    :data:`MAX_EVIDENCE_OPS`, the latest fork points first; sorted by CID bytes. A
    node stores ``evidence`` and ``chain`` and nothing else: a nullified op can never
    become canonical again, so dropping the rest changes no future resolution.
    """

    state: IdentityState
    chain: tuple[CID, ...]
    nullified: tuple[CID, ...]
    rejected: tuple[RejectedOp, ...]
    evidence: tuple[CID, ...] = ()


def resolve_log(did: str, ops: Iterable[bytes]) -> ResolvedLog:
    """Resolve the current state of ``did`` from its ops, given in any order.

    Exact duplicates are ignored. Invalid ops are *dropped* (reported in
    ``rejected``), not fatal, so one bad op gossiped by a peer cannot make a good log
    unresolvable: an op that does not decode, is not signed by a rotation key of the
    op at its ``prev``, follows a tombstone, or does not chain back to the genesis op
    takes no part in any fork. Orphans whose ``prev`` is merely missing are reported
    too; the caller may keep them and resolve again when the gap is filled.

    The chain stops at :data:`MAX_CHAIN_OPS` ops: the valid children of its last op
    are rejected ("the log is full"), and their descendants with them.

    Store only ``evidence`` and ``chain``: anyone can forge ops that are rejected, and
    a low-rank key can sign any number of ops that are nullified; a store that keeps
    either can be filled until no op, not even the owner's recovery, fits.

    Raises IdentityError if ``did`` is malformed, more than :data:`MAX_RESOLVE_OPS`
    distinct ops are given, or no valid genesis op for ``did`` is present;
    DecodeError if an item is not bytes.
    """
    validate_skyfed_did(did)
    parsed: dict[CID, IdentityOp] = {}
    rejected: dict[CID, str] = {}
    for raw in ops:
        if type(raw) is not bytes:
            raise DecodeError("identity ops must be bytes")
        cid = cid_for_msgpack(raw)
        if cid in parsed or cid in rejected:
            continue
        if len(parsed) + len(rejected) >= MAX_RESOLVE_OPS:
            raise IdentityError(f"more than {MAX_RESOLVE_OPS} identity ops to resolve at once")
        try:
            parsed[cid] = _parse(raw)
        except (DecodeError, IdentityError) as e:
            rejected[cid] = f"malformed: {e.message}"

    # The genesis: a self-signed op with prev null whose hash is the DID. Two can only
    # both match by a 120-bit hash-prefix collision, which only the DID's creator can
    # arrange; the lower CID wins then, so every node still agrees.
    roots: list[CID] = []
    for cid, op in parsed.items():
        if op.prev is not None:
            continue
        if op.is_tombstone or _did_from_digest(cid.digest) != did:
            rejected[cid] = "genesis op of another DID"
            continue
        try:
            op.verify(op.rotation_keys)
        except InvalidSignature:
            rejected[cid] = "genesis op is not signed by one of its own rotation keys"
            continue
        roots.append(cid)
    if not roots:
        raise IdentityError(f"no valid genesis op for {did} in the log")
    roots.sort(key=CID.to_bytes)

    children: defaultdict[CID, list[CID]] = defaultdict(list)
    for cid, op in parsed.items():
        if op.prev is not None:
            children[op.prev].append(cid)

    def contenders(parent: CID) -> list[tuple[int, bytes, CID]]:
        """The valid children of ``parent`` as (key index, CID bytes, CID); the
        invalid ones go to ``rejected``."""
        parent_op = parsed[parent]
        found: list[tuple[int, bytes, CID]] = []
        for child in children.get(parent, ()):
            if parent_op.is_tombstone:
                rejected[child] = "follows a tombstone"
                continue
            try:
                index = parsed[child].verify(parent_op.rotation_keys)
            except InvalidSignature:
                rejected[child] = "not signed by a rotation key of the op at its prev"
                continue
            found.append((index, child.to_bytes(), child))
        # Priority first (lower index wins), then the lower CID.
        found.sort()
        return found

    nullified: set[CID] = set(roots[1:])
    losers: list[CID] = list(roots[1:])
    # Direct losers as (position of their prev in the chain, key index, CID bytes, CID).
    lost: list[tuple[int, int, bytes, CID]] = [(-1, 0, r.to_bytes(), r) for r in roots[1:]]
    chain = [roots[0]]
    while True:
        ranked = contenders(chain[-1])
        if not ranked:
            break
        if len(chain) >= MAX_CHAIN_OPS:
            for _, _, child in ranked:
                rejected[child] = f"the log is full: its chain has {MAX_CHAIN_OPS} ops"
            break
        chain.append(ranked[0][2])
        for index, raw_cid, loser in ranked[1:]:
            nullified.add(loser)
            losers.append(loser)
            lost.append((len(chain) - 2, index, raw_cid, loser))
    # Everything valid below a losing op is nullified too: evidence, never applied.
    while losers:
        for _, _, child in contenders(losers.pop()):
            nullified.add(child)
            losers.append(child)

    placed = set(chain) | nullified
    for cid in parsed:
        if cid not in placed and cid not in rejected:
            rejected[cid] = "does not chain to the genesis op (prev missing or rejected)"

    state = _genesis_state(did, parsed[chain[0]], chain[0])
    for cid in chain[1:]:
        state = _next_state(state, parsed[cid], cid)
    return ResolvedLog(
        state=state,
        chain=tuple(chain),
        nullified=tuple(sorted(nullified, key=CID.to_bytes)),
        rejected=tuple(
            RejectedOp(cid, reason)
            for cid, reason in sorted(rejected.items(), key=lambda item: item[0].to_bytes())
        ),
        evidence=_evidence(lost),
    )


def _evidence(lost: list[tuple[int, int, bytes, CID]]) -> tuple[CID, ...]:
    """The direct losers worth keeping: one per (fork point, key index), the lowest
    CID; at most MAX_EVIDENCE_OPS, the latest fork points first."""
    kept: list[CID] = []
    seen: set[tuple[int, int]] = set()
    for at, index, _, cid in sorted(lost, key=lambda item: (-item[0], item[1], item[2])):
        if (at, index) in seen:
            continue
        seen.add((at, index))
        kept.append(cid)
        if len(kept) == MAX_EVIDENCE_OPS:
            break
    return tuple(sorted(kept, key=CID.to_bytes))


def check_new_op(did: str, log: Iterable[bytes], op: bytes) -> ResolvedLog:
    """Resolve ``log`` with one newly submitted ``op`` and return the result, if and
    only if ``op`` becomes the head of the canonical chain.

    This is the rule for an op handed to a node on its own (``skyfed.identity.submitOp``,
    or the op a gossip push names): it must change the identity, now. Refused, naming
    why: an op already in ``log`` (a replay, IdentityError); one not signed by a
    rotation key of the state at its ``prev`` (a forgery, InvalidSignature); one that
    loses a fork to a higher-priority key's op (nullified, IdentityError); one that
    follows a tombstone, does not chain, would lengthen a chain of
    :data:`MAX_CHAIN_OPS` ops ("the log is full"), or does not decode; and, when
    ``log`` is not empty, one that :func:`admit_ops` refuses (a fork of the held chain
    by a key that does not outrank the op it would displace, IdentityError).
    """
    IdentityOp.from_bytes(op)  # shape errors first, with their own message
    cid = cid_for_msgpack(op)
    held = list(log)
    if cid in {cid_for_msgpack(raw) for raw in held}:
        raise IdentityError(f"op {cid} is already in the log of {did} (a replay)")
    if held:
        refused = admit_ops(did, held, [op]).refused
        if refused:
            raise IdentityError(f"identity op rejected: {refused[0].reason}")
    resolved = resolve_log(did, [*held, op])
    for rejected in resolved.rejected:
        if rejected.cid == cid:
            if rejected.reason.startswith("not signed"):
                raise InvalidSignature(f"identity op rejected: {rejected.reason}")
            raise IdentityError(f"identity op rejected: {rejected.reason}")
    if cid in resolved.nullified:
        raise IdentityError(
            "identity op loses a fork to an op signed by a higher-priority rotation key"
        )
    if resolved.state.head != cid:  # pragma: no cover - a new op has no descendants
        raise IdentityError("identity op does not become the head of the log")
    return resolved


@dataclass(frozen=True, slots=True)
class OpAdmission:
    """What :func:`admit_ops` lets into a held log: ``admitted`` (bytes, in input
    order) and ``refused`` (as :class:`RejectedOp`, for evidence and logs)."""

    admitted: tuple[bytes, ...]
    refused: tuple[RejectedOp, ...]


def admit_ops(did: str, held: Iterable[bytes], incoming: Iterable[bytes]) -> OpAdmission:
    """The first-seen rule a node applies to ops it learns (did:plc's directory rule).

    :func:`resolve_log` alone would let the signer of any op replace it later: sign a
    competing op on the same ``prev`` with the same key and grind its CID until it
    sorts first. So a node that already holds ``held`` refuses a new op that would
    displace an op of its current chain -- its ``prev`` is a chain op other than the
    head -- unless it is signed by a **strictly** higher-priority rotation key (of
    the state at ``prev``) than the chain op it competes with. Equal priority: the op
    seen first stays. Ops descending from a refused op are refused with it.

    Everything else passes, to be judged by :func:`resolve_log` as usual: ops that
    extend the head (several competing ones learned together are still settled by
    priority, then CID), ops under already nullified ops (evidence), and invalid or
    orphan ops (``resolve_log`` rejects them, naming why). With nothing held, every
    op passes: a node that first learns a fork whole can only pick by the log rule.
    """
    held_ops = list(dict.fromkeys(held))
    held_cids = {cid_for_msgpack(raw) for raw in held_ops}
    fresh: dict[CID, bytes] = {}
    for raw in incoming:
        if type(raw) is not bytes:
            raise DecodeError("identity ops must be bytes")
        cid = cid_for_msgpack(raw)
        if cid not in held_cids:
            fresh.setdefault(cid, raw)
    if not held_ops or not fresh:
        return OpAdmission(tuple(fresh.values()), ())
    resolved = resolve_log(did, held_ops)
    chain = resolved.chain
    position = {cid: i for i, cid in enumerate(chain)}
    by_cid = {cid_for_msgpack(raw): raw for raw in held_ops}

    def rotation_keys(cid: CID) -> tuple[str, ...]:
        return _parse(by_cid[cid]).rotation_keys

    refused: dict[CID, str] = {}
    parsed: dict[CID, IdentityOp] = {}
    for cid, raw in fresh.items():
        try:
            parsed[cid] = _parse(raw)
        except (DecodeError, IdentityError):
            continue  # resolve_log rejects it, naming why
    for cid, op in parsed.items():
        at = None if op.prev is None else position.get(op.prev)
        if at is None or at == len(chain) - 1:
            continue  # not a fork of the held chain
        keys = rotation_keys(chain[at])
        try:
            mine = op.verify(keys)
        except InvalidSignature:
            continue  # a forgery: resolve_log rejects it as one
        displaced = chain[at + 1]
        theirs = _parse(by_cid[displaced]).verify(keys)
        if mine >= theirs:
            refused[cid] = (
                f"forks the held chain at {op.prev} with rotation key #{mine}, which does "
                f"not outrank key #{theirs} that signed the op it would displace "
                f"({displaced}): the op seen first stays"
            )
    # Descendants of a refused op go with it.
    grew = bool(refused)
    while grew:
        grew = False
        for cid, op in parsed.items():
            if cid not in refused and op.prev is not None and op.prev in refused:
                refused[cid] = f"descends from a refused fork ({op.prev})"
                grew = True
    return OpAdmission(
        admitted=tuple(raw for cid, raw in fresh.items() if cid not in refused),
        refused=tuple(
            RejectedOp(cid, reason)
            for cid, reason in sorted(refused.items(), key=lambda item: item[0].to_bytes())
        ),
    )


def chain_signing_keys(did: str, ops: Iterable[bytes]) -> tuple[str, ...]:
    """Every signing key the canonical chain of ``did`` has named, oldest first
    (repeats kept once). A repository's old commits were signed by these."""
    by_cid = {cid_for_msgpack(raw): raw for raw in ops}
    resolved = resolve_log(did, by_cid.values())
    keys: dict[str, None] = {}
    for cid in resolved.chain:
        op = _parse(by_cid[cid])
        if op.signing_key is not None:
            keys[op.signing_key] = None
    return tuple(keys)


# -- DID document -----------------------------------------------------------------------------


def did_document(state: IdentityState) -> dict[str, Any]:
    """The W3C DID document for ``state``, shaped like did:plc's (JSON-ready).

    A tombstoned identity has no document: IdentityError.
    """
    if state.tombstoned:
        raise IdentityError(f"{state.did} is tombstoned and has no DID document")
    return {
        "@context": [
            "https://www.w3.org/ns/did/v1",
            "https://w3id.org/security/multikey/v1",
        ],
        "id": state.did,
        "alsoKnownAs": [_AKA_PREFIX + state.handle],
        "verificationMethod": [
            {
                "id": state.did + "#atproto",
                "type": "Multikey",
                "controller": state.did,
                # did:key's method-specific id is already the multibase multikey.
                "publicKeyMultibase": state.signing_key[len(DID_KEY_PREFIX) - 1 :],
            }
        ],
        "service": [
            {
                "id": "#atproto_pds",
                "type": PDS_SERVICE_TYPE,
                "serviceEndpoint": state.endpoint,
            }
        ],
    }
