"""com.atproto.server: the node's description, accounts and sessions."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from aiohttp import web

from protocol.errors import RemoteProtocolError, SkyfedError
from protocol.identity import resolve_log
from protocol.keys import SigningKey
from protocol.syntax import (
    is_valid_did,
    normalize_handle,
)

from ...accounts.portability import create_account_for_did, same_url
from ..auth import hash_password, parse_bearer, verify_password
from .base import (
    NODE_KEY,
    Handler,
    b_str,
    check_new_handle,
    client_addr,
    json_response,
    read_body,
)

if TYPE_CHECKING:
    from ...wiring import Node


async def describe_server(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    return json_response(
        {
            "did": node.node_did,
            "availableUserDomains": list(node.config.handle_domains),
            "inviteCodeRequired": False,
            "phoneVerificationRequired": False,
            "links": {},
            "contact": {},
        }
    )


async def create_account(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    node.auth_limits.check(client_addr(request))
    body = await read_body(request)
    if body.get("did") is not None:  # an existing identity moving here
        return await create_account_for_did(request, body)
    handle_raw = b_str(body, "handle")
    password = b_str(body, "password")
    assert handle_raw is not None
    assert password is not None
    email = b_str(body, "email", required=False)
    recovery = b_str(body, "recoveryKey", required=False)
    try:
        handle = normalize_handle(handle_raw)
    except SkyfedError:
        raise RemoteProtocolError("handle is not a valid handle", error="InvalidHandle") from None
    check_new_handle(node, handle)
    if recovery is not None:
        from protocol.keys import verify_key

        verify_key(recovery)
    # Taken: registered here, or confirmed to another DID (a shared domain's node).
    if (
        await node.storage.account_by_handle(handle) is not None
        or await node.storage.resolve_handle(handle) is not None
    ):
        raise RemoteProtocolError("handle already taken", error="HandleNotAvailable")
    password_hash = await hash_password(password)
    signing = SigningKey.from_seed(secrets.token_bytes(32))
    rotation = SigningKey.from_seed(secrets.token_bytes(32))
    try:
        did, outcome = await node.repos.create_account(
            handle=handle,
            email=email,
            password_hash=password_hash,
            signing_key=signing,
            rotation_key=rotation,
            user_rotation_key=recovery,
            endpoint=node.url,
        )
    except Exception as e:
        if "UNIQUE constraint failed: accounts.handle" in str(e):
            raise RemoteProtocolError("handle already taken", error="HandleNotAvailable") from e
        raise
    node.m_commits.inc()
    ops = await node.storage.identity_ops(did)
    head = resolve_log(did, ops).state.head
    confirmation = await node.storage.handle_confirmation(did)
    node.federation.publish_identity(did, ops, head, confirmation)
    node.federation.publish_commit(outcome.result.event)
    tokens = await node.auth.create_session(did)
    return json_response(
        {
            "accessJwt": tokens.access_jwt,
            "refreshJwt": tokens.refresh_jwt,
            "handle": handle,
            "did": did,
            **await _session_did_doc(node, did),
        }
    )


async def _session_did_doc(node: Node, did: str) -> dict[str, Any]:
    """``{"didDoc": doc}`` for a session answer, or ``{}`` if the document names
    another PDS endpoint than this node's URL: the node's URL changed after the account
    was made, or the account moved away. The atproto SDK moves a session to the
    endpoint the document names, carrying this node's tokens, which no other node
    accepts; without a document it stays here (and ``active`` says what it may do)."""
    doc = await node.did_doc(did)
    if doc is None:
        return {}
    endpoints = [
        s.get("serviceEndpoint") for s in doc.get("service", []) if s.get("id") == "#atproto_pds"
    ]
    if len(endpoints) != 1 or not isinstance(endpoints[0], str):
        return {}
    return {"didDoc": doc} if same_url(endpoints[0], node.url) else {}


async def _activity(node: Node, did: str) -> dict[str, Any]:
    # The lexicon's `active`, with `status` when false: an account that moved away or
    # awaits its migration may log in here but not write.
    if await node.portability.deactivation(did) is None:
        return {"active": True}
    return {"active": False, "status": "deactivated"}


def _email(email: str | None) -> dict[str, Any]:
    # Optional in the lexicon: absent, never null.
    return {} if email is None else {"email": email}


async def create_session(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    node.auth_limits.check(client_addr(request))
    body = await read_body(request)
    ident = b_str(body, "identifier")
    password = b_str(body, "password")
    assert ident is not None
    assert password is not None
    failure = RemoteProtocolError(
        "Invalid identifier or password", error="AuthenticationRequired", status=401
    )
    if ident.startswith("did:"):
        row = await node.storage.account_by_did(ident) if is_valid_did(ident) else None
    else:
        try:
            row = await node.storage.account_by_handle(normalize_handle(ident))
        except SkyfedError:
            row = None
    client = client_addr(request)
    if row is not None:
        # Guesses at one account spread over many addresses are limited too, but not
        # from addresses that have logged in to it before (node/server/ratelimit.py).
        await node.login_limits.check(row.did, client)
    # An unknown account costs the same time as a wrong password.
    ok = await verify_password(row.password_hash if row else None, password)
    if row is None or not ok:
        if row is not None:
            await node.login_limits.failed(row.did, client)
        raise failure
    await node.login_limits.succeeded(row.did, client)
    node.moderation.check_host(row.did)
    tokens = await node.auth.create_session(row.did)
    return json_response(
        {
            "accessJwt": tokens.access_jwt,
            "refreshJwt": tokens.refresh_jwt,
            "handle": row.handle,
            "did": row.did,
            **await _session_did_doc(node, row.did),
            **_email(row.email),
            "emailConfirmed": False,
            **await _activity(node, row.did),
        }
    )


async def refresh_session(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    token = parse_bearer(request.headers.get("Authorization"))
    tokens = await node.auth.refresh(token)
    principal = await node.auth.verify_access(tokens.access_jwt)
    row = await node.storage.account_by_did(principal.did)
    if row is None:
        raise RemoteProtocolError("account is gone", error="AccountNotFound")
    return json_response(
        {
            "accessJwt": tokens.access_jwt,
            "refreshJwt": tokens.refresh_jwt,
            "handle": row.handle,
            "did": row.did,
            **await _session_did_doc(node, row.did),
            **await _activity(node, row.did),
        }
    )


async def get_session(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    p = await node.principal(request)
    row = await node.storage.account_by_did(p.did)
    if row is None:
        raise RemoteProtocolError("account is gone", error="AccountNotFound")
    return json_response(
        {
            "handle": row.handle,
            "did": row.did,
            **_email(row.email),
            "emailConfirmed": False,
            **await _session_did_doc(node, row.did),
            **await _activity(node, row.did),
        }
    )


async def delete_session(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    token = parse_bearer(request.headers.get("Authorization"))
    await node.auth.revoke(token)
    return json_response({})


ROUTES: dict[str, tuple[str, Handler]] = {
    "com.atproto.server.describeServer": ("GET", describe_server),
    "com.atproto.server.createAccount": ("POST", create_account),
    "com.atproto.server.createSession": ("POST", create_session),
    "com.atproto.server.refreshSession": ("POST", refresh_session),
    "com.atproto.server.getSession": ("GET", get_session),
    "com.atproto.server.deleteSession": ("POST", delete_session),
}
