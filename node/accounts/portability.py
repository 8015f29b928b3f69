"""Portable accounts: the node's half of key rotation and migration between nodes.

An account's identity log (:mod:`protocol.identity`) says which key signs its repo
and which node is its home. Whoever holds a rotation key can change both, so an
account can re-key, or move, with or without its old home's help. This module is
what a node does about it, modelled on atproto's account migration:

* ``skyfed.identity.submitOp``: anyone hands any node a signed op; it must become
  the head of the DID's log (:func:`protocol.identity.check_new_op`), and is then
  stored and gossiped like every identity change;
* ``com.atproto.server.reserveSigningKey``: a fresh signing key the node holds for a
  rotation. When an op naming it lands (from any path), the node adopts it and
  re-signs the repo's head with it at once (an empty commit with a higher rev), so
  the head verifies under the current key everywhere;
* ``com.atproto.identity.signPlcOperation``: the home node signs an op with its own
  rotation key (the cooperative path);
* ``com.atproto.server.getServiceAuth``: a token by which the account vouches for
  itself to the node it moves to (:mod:`protocol.serviceauth`);
* ``com.atproto.server.createAccount`` with a ``did``: the new node takes in an
  existing identity, deactivated; ``com.atproto.repo.importRepo`` loads its repo;
  ``com.atproto.identity.getRecommendedDidCredentials`` says what the op must name;
  ``com.atproto.server.activateAccount`` starts writing once the log points here
  (an empty commit under the new key); ``deactivateAccount`` stops it.

Whenever a hosted account's identity changes to name another home, or a signing key
this node does not hold, the node stops writing for it (the account moved away); its
repo stays, as a replica like any other. What this module refuses: ops that do not
become the head, or forks the first-seen rule refuses (:func:`admit_ops`, kept in
memory as evidence: :attr:`Portability.refused_forks`); service tokens not signed by
a current key of the DID, or used before; ``signPlcOperation`` without the account's
password when the op would change more than the signing key to one this node
reserved (a stolen session must not be enough to hand the DID away); a
``createAccount`` for a DID this node took down (``host``); imports not signed by a
key the DID's log has named, over ``max_import_bytes``, while another import runs
here, or more often than ``imports_per_hour`` per account.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import secrets
import tempfile
import time
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from aiohttp import web

from protocol.car import read_car
from protocol.cid import CID
from protocol.commit import Commit
from protocol.errors import (
    DecodeError,
    IdentityError,
    InvalidSignature,
    RemoteProtocolError,
    RepoError,
    SkyfedError,
)
from protocol.handles import under
from protocol.identity import (
    PDS_SERVICE_TYPE,
    IdentityOp,
    IdentityState,
    OpAdmission,
    RejectedOp,
    admit_ops,
    chain_signing_keys,
    check_new_op,
    did_document,
    resolve_log,
    validate_skyfed_did,
)
from protocol.ingest import head_wins
from protocol.keys import SigningKey, verify_key
from protocol.serviceauth import UsedTokens, make_service_token, verify_service_token
from protocol.syntax import normalize_handle, validate_did, validate_nsid

from ..server.auth import hash_password, parse_bearer, verify_password
from ..server.ratelimit import RequestLimiter
from ..server.xrpc.base import (
    NODE_KEY,
    b_str,
    check_new_handle,
    client_addr,
    q_int,
    q_str,
    read_body,
)
from ..store.repos import iso_now
from ..store.sqlite import AccountRow

if TYPE_CHECKING:
    from ..config import NodeConfig
    from ..logs import LogLimiter
    from ..net.federation import Federation
    from ..server.metrics import Counter
    from ..store.repos import RepoManager
    from ..store.sqlite import SqliteStorage
    from ..wiring import Node


class PortabilityHost(Protocol):
    """What the portability service asks of the rest of the node (its handlers,
    below, are the server's and see the whole node)."""

    @property
    def config(self) -> NodeConfig: ...
    @property
    def storage(self) -> SqliteStorage: ...
    @property
    def repos(self) -> RepoManager: ...
    @property
    def federation(self) -> Federation: ...
    @property
    def url(self) -> str: ...
    @property
    def log_limit(self) -> LogLimiter: ...
    @property
    def m_commits(self) -> Counter: ...
    async def local_account(self, did: str) -> tuple[str, SigningKey]: ...
    def forget_account(self, did: str) -> None: ...


__all__ = ["MAX_IMPORT_BYTES", "ROUTES", "Portability", "create_account_for_did"]

log = logging.getLogger(__name__)

#: Default bound on a repository import (a block stream), in bytes
#: (``NodeConfig.max_import_bytes``).
MAX_IMPORT_BYTES = 256 * 1024 * 1024
#: Refused forks kept as evidence, at most.
_MAX_REFUSED_FORKS = 1000
#: Ops in an ``identityLog`` / ``log`` sent along with a request.
_MAX_LOG_OPS = 1000
_CREATE_ACCOUNT = "com.atproto.server.createAccount"

#: Why an account is not active here (``account_deactivations.reason``).
AWAITING = "awaiting migration: the identity does not point here yet"
MOVED = "moved: the identity names another home or a signing key this node does not hold"
BY_USER = "deactivated by the account"


def same_url(a: str, b: str) -> bool:
    return a.rstrip("/").lower() == b.rstrip("/").lower()


def _b64_op(raw: object, what: str) -> bytes:
    if not isinstance(raw, str) or len(raw) > 16 * 1024:
        raise DecodeError(f"{what} must be a base64 string of one identity op")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as e:
        raise DecodeError(f"{what} is not valid base64") from e


def _b64_log(raw: object, what: str) -> list[bytes]:
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > _MAX_LOG_OPS:
        raise DecodeError(f"{what} must be a list of at most {_MAX_LOG_OPS} base64 ops")
    return [_b64_op(item, what) for item in raw]


class Portability:
    """Per-node state and rules for accounts that re-key or move."""

    def __init__(self, node: PortabilityHost):
        self.node = node
        config = node.config
        #: Service tokens already used (``jti``), until they expire.
        self.used_tokens = UsedTokens()
        #: Ops refused by the first-seen rule, newest last: evidence of a fork attempt.
        self.refused_forks: OrderedDict[tuple[str, CID], RejectedOp] = OrderedDict()
        # An import holds the whole stream and its blocks in memory: one at a time.
        self.max_import_bytes = config.max_import_bytes
        self.import_wait = 2.0  # seconds a second import waits for the first
        self.import_slot = asyncio.Semaphore(1)
        self.import_limits = RequestLimiter(
            rate=config.imports_per_hour / 3600, burst=max(1, config.imports_per_hour)
        )
        #: New DIDs brought by submitOp, node-wide (one key): each is gossiped, and
        #: peers charge this node's link budget for it.
        self.new_identities = RequestLimiter(
            rate=config.submit_new_identities / config.submit_new_identities_window,
            burst=max(1, config.submit_new_identities),
        )

    def admit(self, did: str, held: list[bytes], ops: list[bytes]) -> list[bytes]:
        """The ops of ``ops`` the first-seen rule lets into ``held`` (see
        :func:`protocol.identity.admit_ops`); the refused ones are logged and kept
        in :attr:`refused_forks`, never in the log (they would win by CID there)."""
        return list(self._admission(did, held, ops).admitted)

    def refuses(self, did: str, held: list[bytes], ops: list[bytes], op: CID) -> bool:
        """Whether the first-seen rule refuses ``op`` (one of ``ops``) into ``held``."""
        return any(r.cid == op for r in self._admission(did, held, ops).refused)

    def _admission(self, did: str, held: list[bytes], ops: list[bytes]) -> OpAdmission:
        outcome = admit_ops(did, held, ops)
        for refused in outcome.refused:
            # The peer chooses the forks it sends: limited.
            self.node.log_limit.log(
                "refused-fork",
                logging.WARNING,
                "refused an identity op",
                did=did,
                why=refused.reason[:200],
            )
            self.refused_forks[(did, refused.cid)] = refused
            self.refused_forks.move_to_end((did, refused.cid))
        while len(self.refused_forks) > _MAX_REFUSED_FORKS:
            self.refused_forks.popitem(last=False)
        return outcome

    # -- storage -----------------------------------------------------------------
    async def deactivation(self, did: str) -> str | None:
        """Why ``did`` may not write here, or None if it may."""
        row = await self.node.storage.read(
            lambda c: c.execute(
                "SELECT reason FROM account_deactivations WHERE did = ?", (did,)
            ).fetchone()
        )
        return None if row is None else str(row[0])

    async def set_deactivated(self, did: str, reason: str | None) -> None:
        def w(conn: Any) -> None:
            if reason is None:
                conn.execute("DELETE FROM account_deactivations WHERE did = ?", (did,))
            else:
                conn.execute(
                    "INSERT OR REPLACE INTO account_deactivations VALUES (?, ?, ?)",
                    (did, reason, iso_now()),
                )

        await self.node.storage.write(w)
        self.node.forget_account(did)

    async def reserved_key(self, did: str) -> SigningKey | None:
        row = await self.node.storage.read(
            lambda c: c.execute(
                "SELECT signing_key FROM reserved_keys WHERE did = ?", (did,)
            ).fetchone()
        )
        return None if row is None else SigningKey.from_str(row[0])

    async def reserve_key(self, did: str) -> SigningKey:
        """A fresh signing key for ``did`` (replacing an earlier reservation)."""
        key = SigningKey.from_seed(secrets.token_bytes(32))

        def w(conn: Any) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO reserved_keys VALUES (?, ?, ?)",
                (did, key.to_str(), iso_now()),
            )

        await self.node.storage.write(w)
        return key

    async def _adopt_key(self, did: str, key: SigningKey) -> None:
        def w(conn: Any) -> None:
            conn.execute("UPDATE accounts SET signing_key = ? WHERE did = ?", (key.to_str(), did))
            conn.execute("DELETE FROM reserved_keys WHERE did = ?", (did,))

        await self.node.storage.write(w)
        self.node.forget_account(did)

    async def current_state(self, did: str) -> IdentityState:
        ops = await self.node.storage.identity_ops(did)
        if not ops:
            raise RemoteProtocolError(f"no identity log for {did}", error="DidNotFound")
        return resolve_log(did, ops).state

    # -- the rule --------------------------------------------------------------
    async def identity_changed(self, did: str, state: IdentityState) -> None:
        """``did``'s resolved identity is now ``state``: adopt a reserved key, or stop
        writing for an account that lives elsewhere now."""
        row = await self.node.storage.account_by_did(did)
        if row is None:
            return
        ours = SigningKey.from_str(row.signing_key).did_key()
        here = same_url(state.endpoint, self.node.url) and not state.tombstoned
        if here and state.signing_key == ours:
            return
        if here:
            reserved = await self.reserved_key(did)
            if reserved is not None and reserved.did_key() == state.signing_key:
                await self._adopt_key(did, reserved)
                if await self.deactivation(did) is None and await self.node.storage.get_head(did):
                    await self.resign(did)
                return
        if await self.deactivation(did) is None:
            await self.set_deactivated(did, MOVED)

    async def resign(self, did: str) -> Any:
        """An empty commit with a higher rev, signed by the account's current key: the
        repo's head then verifies under the key the identity names."""
        _, key = await self.node.local_account(did)
        outcome = await self.node.repos.write(did, [], key)
        self.node.m_commits.inc()
        return outcome

    async def merged_log(self, did: str, log: list[bytes]) -> list[bytes]:
        """The held log of ``did`` with the ops of ``log`` the first-seen rule lets
        in, in memory: a request is judged on this before anything is stored."""
        held = await self.node.storage.identity_ops(did)
        if not log:
            return held
        return list(dict.fromkeys([*held, *self.admit(did, held, log)]))

    async def submit(self, did: str, op: bytes, log: list[bytes]) -> IdentityState:
        """Check ``op`` against the held log (plus ``log``), store it and gossip it.
        A refused op stores nothing, not even the ``log`` sent with it. A DID new to
        this node takes a token from the node-wide ``submit_new_identities`` budget
        (RateLimited past it), once the op is found good."""
        validate_skyfed_did(did)
        fed = self.node.federation
        log = [item for item in log if item != op]  # the op is judged on its own below
        new = not await self.node.storage.identity_ops(did)
        held = await self.merged_log(did, log)
        if not held:
            raise IdentityError(f"this node holds no identity log for {did}: send it as 'log'")
        self.admit(did, held, [op])  # a refused fork is kept as evidence ...
        resolved = check_new_op(did, held, op)  # ... and refused here, naming why
        if new:
            self.new_identities.check("submitOp")
        if not await fed.ingest_identity(did, [*held, op], publish=True):
            # Another path changed the log meanwhile (or brought this very op).
            now = await self.current_state(did)
            if now.head != resolved.state.head:
                raise IdentityError("the log changed meanwhile and the op no longer applies")
        return resolved.state


# -- handlers ------------------------------------------------------------------------


def _json(data: Any) -> web.Response:
    return web.Response(body=orjson.dumps(data), content_type="application/json")


async def _account(request: web.Request) -> tuple[Node, AccountRow]:
    """The authenticated account, hosted here (active or not)."""
    node: Node = request.app[NODE_KEY]
    principal = await node.principal(request)
    row = await node.storage.account_by_did(principal.did)
    if row is None:
        raise RemoteProtocolError("account is not hosted here", error="AccountNotFound")
    return node, row


async def create_account_for_did(request: web.Request, body: dict[str, Any]) -> web.Response:
    """createAccount with ``did``: take in an existing identity, deactivated, for the
    account to move here. The caller proves control of the DID with a service token
    (``Authorization: Bearer``) signed by its signing key or a rotation key."""
    node: Node = request.app[NODE_KEY]
    did = validate_skyfed_did(body.get("did"))
    node.moderation.check_host(did)  # refused to host: no row, no keys, no session
    handle_raw, password = b_str(body, "handle"), b_str(body, "password")
    email = b_str(body, "email", required=False)
    # Everything is judged in memory first: a refused request stores nothing (not
    # the identity log it brought either).
    log = _b64_log(body.get("identityLog"), "identityLog")
    merged = await node.portability.merged_log(did, log)
    if not merged:
        raise RemoteProtocolError(
            f"no identity log for {did}; send it as identityLog", error="UnresolvableDid"
        )
    try:
        state = resolve_log(did, merged).state
    except IdentityError as e:
        raise RemoteProtocolError(e.message, error="UnresolvableDid") from e
    if state.tombstoned:
        raise RemoteProtocolError(f"{did} is tombstoned", error="UnresolvableDid")
    try:
        handle = normalize_handle(handle_raw or "")
    except SkyfedError:
        raise RemoteProtocolError("handle is not a valid handle", error="InvalidHandle") from None
    # The handle belongs to the identity, not to a node: a moving account keeps the
    # one its log names, whatever this node's handle domains are.
    if handle != state.handle:
        raise RemoteProtocolError(
            f"a moving account keeps its handle: {did} is {state.handle}", error="InvalidHandle"
        )
    token = parse_bearer(request.headers.get("Authorization"))
    now = int(time.time())
    verify_service_token(
        token,
        did=did,
        aud=node.node_did,
        lxm=_CREATE_ACCOUNT,
        keys=[state.signing_key, *state.rotation_keys],
        now=now,
    )
    # An account that moved away may move back: its row is taken over, with new keys.
    returning = await node.storage.account_by_did(did) is not None
    if returning and await node.portability.deactivation(did) is None:
        raise RemoteProtocolError(
            f"{did} already has an active account here", error="AlreadyExists"
        )
    taken = await node.storage.account_by_handle(handle)
    if taken is not None and taken.did != did:
        raise RemoteProtocolError("handle already taken", error="HandleNotAvailable")
    await _check_moving_handle(node, did, handle)
    node.portability.used_tokens.use(token, now)  # one use: a replay is refused
    assert password is not None
    row = AccountRow(
        did=did,
        handle=handle,
        email=email,
        password_hash=await hash_password(password),
        signing_key=SigningKey.from_seed(secrets.token_bytes(32)).to_str(),
        rotation_key=SigningKey.from_seed(secrets.token_bytes(32)).to_str(),
        created_at=iso_now(),
    )

    def w(conn: Any) -> None:
        if returning:
            conn.execute("DELETE FROM accounts WHERE did = ?", (did,))
            conn.execute("DELETE FROM reserved_keys WHERE did = ?", (did,))
        conn.execute(
            "INSERT INTO accounts (did, handle, email, password_hash, signing_key,"
            " rotation_key, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                row.did,
                row.handle,
                row.email,
                row.password_hash,
                row.signing_key,
                row.rotation_key,
                row.created_at,
            ),
        )
        conn.execute(
            "INSERT OR REPLACE INTO account_deactivations VALUES (?, ?, ?)",
            (did, AWAITING, row.created_at),
        )
        node.handles.rebind(conn, did)  # a handle registered here now, or kept

    # The log first (the account's handle is judged from it), then the account; if
    # the account write fails (a concurrent createAccount took the handle), a log
    # this request brought for a DID the node did not hold is taken out again.
    known = await node.storage.identity(did) is not None
    if log:
        await node.federation.ingest_identity(did, log)
    try:
        await node.storage.write(w)
    except Exception:
        if log and not known:
            await node.storage.write(lambda conn: _forget_identity(node, conn, did))
        raise
    node.forget_account(did)
    if returning:
        await node.auth.revoke_all(did)  # the old password's sessions end here
    tokens = await node.auth.create_session(did)
    return _json(
        {
            "accessJwt": tokens.access_jwt,
            "refreshJwt": tokens.refresh_jwt,
            "handle": handle,
            "did": did,
            "didDoc": did_document(state),
            "active": False,
        }
    )


def _forget_identity(node: Node, conn: Any, did: str) -> None:
    """Undo the identity a failed createAccount stored (a DID with no account here):
    its log, its handle confirmation and its handle binding."""
    if conn.execute("SELECT 1 FROM accounts WHERE did = ?", (did,)).fetchone():
        return
    conn.execute("DELETE FROM identity_ops WHERE did = ?", (did,))
    conn.execute("DELETE FROM identities WHERE did = ?", (did,))
    conn.execute("DELETE FROM handle_confirmations WHERE did = ?", (did,))
    node.handles.rebind(conn, did)  # drops its binding, gives the handle to the next


async def _check_moving_handle(node: Node, did: str, handle: str) -> None:
    """The handle a moving account brings must be confirmed already (by its
    domain's authority, as this node sees it), or be one this node may register for
    it now (under its own domains, one label, not reserved, not held by another DID).
    Otherwise a self-made identity could name a hosted account anything."""
    if await node.storage.confirmed_handle(did) == handle:
        return
    holder = await node.storage.resolve_handle(handle)
    if holder is not None and holder != did:
        raise RemoteProtocolError("handle already taken", error="HandleNotAvailable")
    if not under(handle, node.config.handle_domains):
        raise RemoteProtocolError(
            f"{handle} is not confirmed by its domain's authority: change the identity's"
            " handle to one this node or its domain's node confirms",
            error="InvalidHandle",
        )
    check_new_handle(node, handle)


async def submit_op(request: web.Request) -> web.Response:
    """skyfed.identity.submitOp: ``{did, operation, log?}``, ops as base64 msgpack."""
    node: Node = request.app[NODE_KEY]
    node.auth_limits.check(client_addr(request))
    body = await read_body(request)
    did = b_str(body, "did")
    op = _b64_op(body.get("operation"), "operation")
    log = _b64_log(body.get("log"), "log")
    state = await node.portability.submit(did, op, log)
    return _json({"did": did, "head": str(state.head), "didDoc": did_document(state)})


async def reserve_signing_key(request: web.Request) -> web.Response:
    """com.atproto.server.reserveSigningKey: a fresh key this node holds for the
    authenticated account, to name in an identity op (a rotation)."""
    node, row = await _account(request)
    key = await node.portability.reserve_key(row.did)
    return _json({"signingKey": key.did_key()})


async def get_recommended_did_credentials(request: web.Request) -> web.Response:
    """com.atproto.identity.getRecommendedDidCredentials: what an op pointing the
    account here must name (this node's rotation key, its signing key, its URL)."""
    node, row = await _account(request)
    state = await node.portability.current_state(row.did)
    return _json(
        {
            "rotationKeys": [SigningKey.from_str(row.rotation_key).did_key()],
            "alsoKnownAs": [f"at://{state.handle}"],
            "verificationMethods": {"atproto": SigningKey.from_str(row.signing_key).did_key()},
            "services": {"atproto_pds": {"type": PDS_SERVICE_TYPE, "endpoint": node.url}},
        }
    )


def _op_fields(body: dict[str, Any], state: IdentityState) -> dict[str, Any]:
    """The fields of an op from atproto's JSON shape, defaulting to ``state``'s."""
    out: dict[str, Any] = {}
    keys = body.get("rotationKeys")
    if keys is not None:
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise IdentityError("rotationKeys must be a list of did:keys")
        out["rotation_keys"] = keys
    methods = body.get("verificationMethods")
    if methods is not None:
        if not isinstance(methods, dict) or not isinstance(methods.get("atproto"), str):
            raise IdentityError("verificationMethods must be {atproto: did:key}")
        out["signing_key"] = methods["atproto"]
    aka = body.get("alsoKnownAs")
    if aka is not None:
        if (
            not isinstance(aka, list)
            or len(aka) != 1
            or not isinstance(aka[0], str)
            or not aka[0].startswith("at://")
        ):
            raise IdentityError("alsoKnownAs must be ['at://<handle>']")
        out["handle"] = aka[0][len("at://") :]
    services = body.get("services")
    if services is not None:
        pds = services.get("atproto_pds") if isinstance(services, dict) else None
        if not isinstance(pds, dict) or not isinstance(pds.get("endpoint"), str):
            raise IdentityError("services must be {atproto_pds: {type, endpoint}}")
        out["endpoint"] = pds["endpoint"]
    return out


def _needs_password(fields: dict[str, Any], state: IdentityState, reserved: str | None) -> bool:
    """Whether an op with ``fields`` hands anything to anyone: every change but a
    signing key this node reserved for the account (a rotation it keeps holding)."""
    current = {
        "rotation_keys": list(state.rotation_keys),
        "signing_key": state.signing_key,
        "handle": state.handle,
        "endpoint": state.endpoint,
    }
    for name, value in fields.items():
        if value == current[name]:
            continue
        if name == "signing_key" and reserved is not None and value == reserved:
            continue
        return True
    return False


async def sign_plc_operation(request: web.Request) -> web.Response:
    """com.atproto.identity.signPlcOperation: this node signs, with its rotation key
    for the account, an op on the current head with the fields given (the rest kept).
    The op is returned, not applied: submit it (anywhere) to apply it.

    A session is not enough: unless the op only names a signing key this node
    reserved, the body must carry the account's ``password`` (atproto asks for a
    one-time ``token`` it emails; skyfed has no email)."""
    node, row = await _account(request)
    body = await read_body(request)
    state = await node.portability.current_state(row.did)
    signer = SigningKey.from_str(row.rotation_key)
    if signer.did_key() not in state.rotation_keys:
        raise RemoteProtocolError(
            f"this node's rotation key no longer controls {row.did}", error="InvalidRequest"
        )
    fields = _op_fields(body, state)
    reserved = await node.portability.reserved_key(row.did)
    if _needs_password(fields, state, None if reserved is None else reserved.did_key()):
        client = client_addr(request)
        node.auth_limits.check(client)
        await node.login_limits.check(row.did, client)
        password = body.get("password")
        if not isinstance(password, str) or not await verify_password(row.password_hash, password):
            await node.login_limits.failed(row.did, client)
            raise RemoteProtocolError(
                "signing this op needs the account's password ('password' in the body)",
                error="AuthenticationRequired",
                status=401,
            )
    op = IdentityOp.update(state, signer, **fields)
    # Only hand out an op that would apply now.
    check_new_op(row.did, await node.storage.identity_ops(row.did), op.to_bytes())
    return _json({"operation": base64.b64encode(op.to_bytes()).decode("ascii")})


async def get_service_auth(request: web.Request) -> web.Response:
    """com.atproto.server.getServiceAuth: a token signed with the account's signing
    key, for ``aud`` (a node's DID) and one method ``lxm``."""
    node: Node = request.app[NODE_KEY]
    principal = await node.principal(request)
    _, key = await node.local_account(principal.did)
    aud = q_str(request, "aud")
    lxm = q_str(request, "lxm")
    assert aud is not None
    assert lxm is not None
    if aud.startswith("did:key:"):
        verify_key(aud)  # a node's DID is its node key
    else:
        validate_did(aud)
    validate_nsid(lxm)
    lifetime = q_int(request, "exp", 60, 1, 600)
    token = make_service_token(
        did=principal.did,
        aud=aud,
        lxm=lxm,
        key=key,
        now=int(time.time()),
        lifetime=lifetime,
        jti=secrets.token_hex(16),
    )
    return _json({"token": token})


def _signed_by(commit: Commit, did_key: str) -> bool:
    try:
        commit.verify(verify_key(did_key))
    except InvalidSignature:
        return False
    return True


async def _read_car(request: web.Request, limit: int, deadline: float, spool: Path) -> Any:
    """Receive the request body into a temporary file under ``spool``: at most
    ``limit`` bytes (413 as soon as it passes, whatever its declared length) within
    ``deadline`` seconds (408). Returns the file (the caller closes it); nothing the
    client sends is held in memory beyond one chunk."""
    too_large = RemoteProtocolError(
        f"a repository import is at most {limit} bytes", error="PayloadTooLarge", status=413
    )
    declared = request.content_length
    if declared is not None and declared > limit:
        raise too_large
    out = tempfile.TemporaryFile(dir=spool, prefix="import-")  # noqa: SIM115 - returned
    try:
        size = 0
        pending = bytearray()
        async with asyncio.timeout(deadline):
            async for chunk in request.content.iter_chunked(1 << 16):
                size += len(chunk)
                if size > limit or (declared is not None and size > declared):
                    raise too_large
                pending += chunk
                if len(pending) >= 1 << 20:
                    await asyncio.to_thread(out.write, pending)
                    pending = bytearray()
        await asyncio.to_thread(out.write, pending)
        if size == 0:
            raise RemoteProtocolError("the body must be a repository block stream (CAR)")
        out.flush()
        return out
    except TimeoutError:
        out.close()
        raise RemoteProtocolError(
            f"the import body was not received within {deadline:.0f}s",
            error="RequestTimeout",
            status=408,
        ) from None
    except BaseException:
        out.close()
        raise


async def import_repo(request: web.Request) -> web.Response:
    """com.atproto.repo.importRepo: load the authenticated account's repository from a
    block stream (a getRepo export, from any node). The head commit must be the
    account's and signed by a signing key its identity log has named; it replaces the
    held head only if it wins by the head rule (a newer replica here is kept).

    The stream is received into a temporary file (at most ``max_import_bytes``,
    within ``import_timeout`` seconds) and its blocks are parsed in memory, so a node
    runs one import at a time: another waits ``import_wait`` seconds for it, then
    answers 429; the slot is released on every way out, at the latest when the
    deadline passes; and each account may start ``imports_per_hour``."""
    node, row = await _account(request)
    portability = node.portability
    portability.import_limits.check(row.did)
    try:
        await asyncio.wait_for(portability.import_slot.acquire(), portability.import_wait)
    except TimeoutError:
        raise RemoteProtocolError(
            "another repository import is running on this node; try again shortly",
            error="RateLimitExceeded",
            status=429,
        ) from None
    try:
        return await _import_repo(node, row, request)
    finally:
        portability.import_slot.release()


async def _import_repo(node: Node, row: AccountRow, request: web.Request) -> web.Response:
    did = row.did
    limit = node.portability.max_import_bytes
    spool = node.config.data_dir
    with await _read_car(request, limit, node.config.import_timeout, spool) as body:
        # Read once it is whole and known to be within the limit: one allocation of
        # its real size (not of what the client declared), freed after parsing.
        body.seek(0)
        data = await asyncio.to_thread(body.read)
    roots, blocks = read_car(data, max_total=limit)
    del data
    if not roots or roots[0] not in blocks:
        raise DecodeError("the block stream lacks its head commit")
    commit_cid = roots[0]
    commit = Commit.from_bytes(blocks[commit_cid])
    if commit.did != did:
        raise RepoError(f"the repository is {commit.did}'s, not {did}'s")
    keys = chain_signing_keys(did, await node.storage.identity_ops(did))
    if not any(_signed_by(commit, k) for k in keys):
        raise InvalidSignature(f"the head commit is not signed by any signing key {did} had")
    imported = False
    async with node.repos.lock(did):
        held = await node.storage.head_state(did)
        if held is None or head_wins(commit.rev, commit_cid, held.rev, held.head):
            imported = await node.federation._apply_snapshot(
                did, commit_cid, commit, blocks, held, since="", full=True
            )
            if not imported:
                raise RepoError("the block stream lacks blocks of the tree or its records")
        await node.storage.write(
            lambda c: c.execute("UPDATE repos SET local = 1 WHERE did = ?", (did,))
        )
    node.repos.forget(did)
    if imported and await node.portability.deactivation(did) is None:
        # An active account's head must verify under its current key, and an import
        # may bring one signed by an older key: sign it over.
        await node.portability.resign(did)
    head = await node.storage.get_head(did)
    assert head is not None
    return _json({"did": did, "cid": str(head.head), "rev": head.rev, "imported": imported})


async def activate_account(request: web.Request) -> web.Response:
    """com.atproto.server.activateAccount: start writing for the account, once its
    identity names this node and the signing key it holds; the first act is a commit
    with a higher rev under that key."""
    node, row = await _account(request)
    state = await node.portability.current_state(row.did)
    ours = SigningKey.from_str(row.signing_key).did_key()
    if state.tombstoned or not same_url(state.endpoint, node.url) or state.signing_key != ours:
        raise RemoteProtocolError(
            f"the identity of {row.did} does not point here yet (home {state.endpoint}):"
            " submit an op naming this node's recommended credentials first",
            error="InvalidRequest",
        )
    if await node.storage.get_head(row.did) is None:
        raise RepoError("no repository here for this account: import it first")
    await node.portability.set_deactivated(row.did, None)
    outcome = await node.portability.resign(row.did)
    return _json(
        {"did": row.did, "cid": str(outcome.result.commit_cid), "rev": outcome.result.commit.rev}
    )


async def deactivate_account(request: web.Request) -> web.Response:
    """com.atproto.server.deactivateAccount: this node stops writing for the account
    (its repo stays readable). ``activateAccount`` undoes it while the identity still
    points here."""
    node, row = await _account(request)
    if await node.portability.deactivation(row.did) is None:
        await node.portability.set_deactivated(row.did, BY_USER)
    return _json({})


async def check_account_status(request: web.Request) -> web.Response:
    """com.atproto.server.checkAccountStatus: is the account active here, does its
    identity point here, and where is its repo."""
    node, row = await _account(request)
    state = await node.portability.current_state(row.did)
    ours = SigningKey.from_str(row.signing_key).did_key()
    head = await node.storage.get_head(row.did)
    reason = await node.portability.deactivation(row.did)
    out: dict[str, Any] = {
        "activated": reason is None,
        "validDid": same_url(state.endpoint, node.url) and state.signing_key == ours,
        "repoCommit": None if head is None else str(head.head),
        "repoRev": None if head is None else head.rev,
    }
    if reason is not None:
        out["reason"] = reason
    return _json(out)


ROUTES: dict[str, tuple[str, Any]] = {
    "skyfed.identity.submitOp": ("POST", submit_op),
    "com.atproto.server.reserveSigningKey": ("POST", reserve_signing_key),
    "com.atproto.server.getServiceAuth": ("GET", get_service_auth),
    "com.atproto.server.activateAccount": ("POST", activate_account),
    "com.atproto.server.deactivateAccount": ("POST", deactivate_account),
    "com.atproto.server.checkAccountStatus": ("GET", check_account_status),
    "com.atproto.identity.getRecommendedDidCredentials": (
        "GET",
        get_recommended_did_credentials,
    ),
    "com.atproto.identity.signPlcOperation": ("POST", sign_plc_operation),
    "com.atproto.repo.importRepo": ("POST", import_repo),
}
