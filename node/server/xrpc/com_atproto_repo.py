"""com.atproto.repo: record writes (create, put, delete, applyWrites), reads, and blob
uploads (uploadBlob: size and type limits in protocol/blobs.py, storage in
node/store/blobs.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from protocol.blobs import BlobRef, BlobRefused, blob_refs_in, check_upload
from protocol.cid import CID, cid_for_raw
from protocol.commit import Action
from protocol.encoding import decode
from protocol.errors import RemoteProtocolError, RepoError
from protocol.handles import INVALID_HANDLE
from protocol.jsondata import from_json, to_json
from protocol.keys import SigningKey
from protocol.records import POST, PROFILE
from protocol.repo import Repo, Write
from protocol.syntax import (
    validate_nsid,
    validate_record_key,
)

from ...appview.graph import check_posts
from .base import (
    NODE_KEY,
    Handler,
    b_cid,
    b_str,
    bad,
    json_response,
    q_bool,
    q_int,
    q_str,
    read_body,
)

if TYPE_CHECKING:
    from ...wiring import Node


_POINTS = {"create": 3, "update": 2, "delete": 1}


async def _writer(request: web.Request, body: dict[str, Any]) -> tuple[str, str, SigningKey]:
    """The authenticated account, checked to be the repo's owner."""
    node = request.app[NODE_KEY]
    p = await node.principal(request)
    repo = b_str(body, "repo")
    assert repo is not None
    did = await node.resolve_repo(repo)
    if did != p.did:
        raise RemoteProtocolError(
            "you may only write to your own repo", error="Forbidden", status=403
        )
    handle, key = await node.local_account(did)
    return did, handle, key


def _record_value(body: dict[str, Any], name: str, collection: str) -> dict[str, Any]:
    raw = body.get(name)
    if not isinstance(raw, dict):
        raise RemoteProtocolError(f"{name} must be an object", error="InvalidRecord")
    value = from_json(raw, path=name)
    assert isinstance(value, dict)
    value.setdefault("$type", collection)
    return value


def _validate_flag(body: dict[str, Any]) -> bool:
    flag = body.get("validate", True)
    if flag is None:
        return True
    if not isinstance(flag, bool):
        raise bad("validate must be a boolean")
    return flag


async def _commit(
    request: web.Request,
    did: str,
    key: SigningKey,
    writes: list[Write],
    *,
    swap_commit: CID | None = None,
    check: Callable[[Repo], None] | None = None,
    validate: bool = True,
) -> tuple[Any, dict[str, str]]:
    node = request.app[NODE_KEY]
    # Threadgates and postgates bind the accounts hosted here (node/appview/graph.py).
    posts = [dict(w.record) for w in writes if w.collection == POST and w.record is not None]
    if posts:
        await node.storage.read(lambda conn: check_posts(conn, did, posts))
    points = sum(_POINTS[w.action] for w in writes)
    state = node.write_limits.check_and_consume(did, points)
    await _check_blobs(node, did, writes)
    outcome = await node.repos.write(
        did, writes, key, swap_commit=swap_commit, check=check, validate=validate
    )
    node.m_commits.inc()
    return outcome, state.headers()


async def _check_blobs(node: Node, did: str, writes: list[Write]) -> None:
    """Every blob a new record points at was uploaded here by its author (as
    Bluesky's PDS requires), or is one the account's records already point at (an
    account moved here keeps its pictures in a profile it edits): otherwise nobody
    could ever serve it."""
    store = node.blobs
    for w in writes:
        for ref in blob_refs_in(w.record) if w.record is not None else ():
            if await store.uploaded(did, ref.cid) is None and not await store.referenced(
                did, ref.cid
            ):
                raise RemoteProtocolError(
                    f"could not find blob: {ref.cid} (upload it first)", error="BlobNotFound"
                )


def _swap_record_check(path: str, swap: CID | None, present: bool) -> Callable[[Repo], None]:
    def check(repo: Repo) -> None:
        if present and repo.tree.get(path) != swap:
            raise RemoteProtocolError(
                f"record was at {repo.tree.get(path)}", error="InvalidSwap", status=400
            )

    return check


def _commit_meta(outcome: Any) -> dict[str, str]:
    return {"cid": str(outcome.result.commit_cid), "rev": outcome.result.commit.rev}


def _new_rkey(node: Node, collection: str) -> str:
    # The profile's key is the literal "self" (the atproto SDK's profile.create sends
    # none); everything else gets a fresh TID.
    return "self" if collection == PROFILE else node.repos._next_rev(None)


async def create_record(request: web.Request) -> web.Response:
    body = await read_body(request)
    did, _, key = await _writer(request, body)
    node = request.app[NODE_KEY]
    collection = b_str(body, "collection")
    assert collection is not None
    validate_nsid(collection)
    rkey = b_str(body, "rkey", required=False) or _new_rkey(node, collection)
    validate_record_key(rkey)
    record = _record_value(body, "record", collection)
    validate = _validate_flag(body)
    outcome, headers = await _commit(
        request,
        did,
        key,
        [Write("create", collection, rkey, record)],
        swap_commit=b_cid(body, "swapCommit"),
        validate=validate,
    )
    cid = outcome.result.written[0]
    return json_response(
        {
            "uri": f"at://{did}/{collection}/{rkey}",
            "cid": str(cid),
            "commit": _commit_meta(outcome),
            "validationStatus": "valid" if validate else "unknown",
        },
        headers=headers,
    )


def _record_path(body: dict[str, Any]) -> tuple[str, str]:
    """The (collection, rkey) a write names, both checked."""
    collection = b_str(body, "collection")
    rkey = b_str(body, "rkey")
    assert collection is not None
    assert rkey is not None
    validate_nsid(collection)
    validate_record_key(rkey)
    return collection, rkey


async def put_record(request: web.Request) -> web.Response:
    body = await read_body(request)
    did, _, key = await _writer(request, body)
    collection, rkey = _record_path(body)
    record = _record_value(body, "record", collection)
    validate = _validate_flag(body)
    path = f"{collection}/{rkey}"
    has_swap = "swapRecord" in body
    swap = b_cid(body, "swapRecord")
    node = request.app[NODE_KEY]
    current = (await node.repos.head(did)).tree.get(path)
    action: Action = "update" if current is not None else "create"
    outcome, headers = await _commit(
        request,
        did,
        key,
        [Write(action, collection, rkey, record)],
        swap_commit=b_cid(body, "swapCommit"),
        check=_swap_record_check(path, swap, has_swap),
        validate=validate,
    )
    return json_response(
        {
            "uri": f"at://{did}/{path}",
            "cid": str(outcome.result.written[0]),
            "commit": _commit_meta(outcome),
            "validationStatus": "valid" if validate else "unknown",
        },
        headers=headers,
    )


async def delete_record(request: web.Request) -> web.Response:
    body = await read_body(request)
    did, _, key = await _writer(request, body)
    collection, rkey = _record_path(body)
    path = f"{collection}/{rkey}"
    node = request.app[NODE_KEY]
    if (await node.repos.head(did)).tree.get(path) is None and "swapRecord" not in body:
        # Deleting what is not there is a no-op, as in atproto.
        return json_response({})
    outcome, headers = await _commit(
        request,
        did,
        key,
        [Write("delete", collection, rkey)],
        swap_commit=b_cid(body, "swapCommit"),
        check=_swap_record_check(path, b_cid(body, "swapRecord"), "swapRecord" in body),
    )
    return json_response({"commit": _commit_meta(outcome)}, headers=headers)


_WRITE_TYPES: dict[str, Action] = {
    "com.atproto.repo.applyWrites#create": "create",
    "com.atproto.repo.applyWrites#update": "update",
    "com.atproto.repo.applyWrites#delete": "delete",
}


async def apply_writes(request: web.Request) -> web.Response:
    body = await read_body(request)
    did, _, key = await _writer(request, body)
    node = request.app[NODE_KEY]
    raw = body.get("writes")
    if not isinstance(raw, list) or not raw:
        raise bad("writes must be a non-empty list")
    if len(raw) > 200:
        raise bad("at most 200 writes")
    writes: list[Write] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise bad(f"writes[{i}] must be an object")
        kind = item.get("$type")
        action = _WRITE_TYPES.get(kind) if isinstance(kind, str) else None
        if action is None:
            raise bad(f"writes[{i}] has an unknown $type")
        collection = b_str(item, "collection")
        assert collection is not None
        validate_nsid(collection)
        rkey = b_str(item, "rkey", required=action != "create") or _new_rkey(node, collection)
        validate_record_key(rkey)
        value = None if action == "delete" else _record_value(item, "value", collection)
        writes.append(Write(action, collection, rkey, value))
    outcome, headers = await _commit(
        request,
        did,
        key,
        writes,
        swap_commit=b_cid(body, "swapCommit"),
        validate=_validate_flag(body),
    )
    results = []
    for w, cid in zip(writes, outcome.result.written, strict=True):
        kind = f"com.atproto.repo.applyWrites#{w.action}Result"
        if w.action == "delete":
            results.append({"$type": kind})
        else:
            results.append(
                {
                    "$type": kind,
                    "uri": f"at://{did}/{w.path}",
                    "cid": str(cid),
                    "validationStatus": "valid",
                }
            )
    return json_response({"commit": _commit_meta(outcome), "results": results}, headers=headers)


def _record_json(did: str, collection: str, rkey: str, cid: CID, value: bytes) -> dict[str, Any]:
    return {
        "uri": f"at://{did}/{collection}/{rkey}",
        "cid": str(cid),
        "value": to_json(decode(value)),
    }


async def get_record(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    repo = q_str(request, "repo")
    collection = q_str(request, "collection")
    rkey = q_str(request, "rkey")
    assert repo is not None
    assert collection is not None
    assert rkey is not None
    validate_nsid(collection)
    validate_record_key(rkey)
    did = await node.resolve_repo(repo)
    node.moderation.check_serve(did)
    row = await node.storage.get_record(did, collection, rkey)
    want = q_str(request, "cid", required=False)
    if row is None or (want is not None and str(row.cid) != want):
        raise RepoError(
            f"could not locate record: at://{did}/{collection}/{rkey}", error="RecordNotFound"
        )
    return json_response(_record_json(did, collection, rkey, row.cid, row.value))


async def list_records(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    repo = q_str(request, "repo")
    collection = q_str(request, "collection")
    assert repo is not None
    assert collection is not None
    validate_nsid(collection)
    limit = q_int(request, "limit", 50, 1, 100)
    cursor = q_str(request, "cursor", required=False)
    if cursor is not None:
        validate_record_key(cursor)
    did = await node.resolve_repo(repo)
    node.moderation.check_serve(did)
    rows = await node.storage.list_records(
        did, collection, limit, cursor, q_bool(request, "reverse")
    )
    out: dict[str, Any] = {
        "records": [_record_json(did, collection, r.rkey, r.cid, r.value) for r in rows]
    }
    if len(rows) == limit:
        out["cursor"] = rows[-1].rkey
    return json_response(out)


async def describe_repo(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    repo = q_str(request, "repo")
    assert repo is not None
    did = await node.resolve_repo(repo)
    node.moderation.check_serve(did)
    ident = await node.storage.identity(did)
    if ident is None or await node.storage.get_head(did) is None:
        raise RepoError(f"could not find repo: {repo}", error="RepoNotFound")
    handle = await node.storage.confirmed_handle(did)
    return json_response(
        {
            "handle": handle or INVALID_HANDLE,
            "did": did,
            "didDoc": await node.did_doc(did),
            "collections": await node.storage.list_collections(did),
            "handleIsCorrect": handle is not None,
        }
    )


async def _read_upload(request: web.Request, limit: int) -> bytes:
    """The request body, refused as soon as it passes ``limit`` bytes (declared or not)."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise BlobRefused(
            f"the blob is {declared} bytes, over the limit of {limit}",
            error="BlobTooLarge",
            status=413,
        )
    buf = bytearray()
    while len(buf) <= limit:
        chunk = await request.content.read(limit + 1 - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


async def upload_blob(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    p = await node.principal(request)
    await node.local_account(p.did)  # hosted here and active
    state = node.write_limits.check_and_consume(p.did, _POINTS["create"])
    limit = node.config.blob_max_bytes
    data = await _read_upload(request, limit)
    mime = check_upload(data, request.headers.get("Content-Type"), limit)
    cid = cid_for_raw(data)
    await node.blobs.put_upload(p.did, cid, mime, data)
    ref = BlobRef(cid, mime, len(data))
    return json_response({"blob": ref.to_value()}, headers=state.headers())


ROUTES: dict[str, tuple[str, Handler]] = {
    "com.atproto.repo.uploadBlob": ("POST", upload_blob),
    "com.atproto.repo.createRecord": ("POST", create_record),
    "com.atproto.repo.putRecord": ("POST", put_record),
    "com.atproto.repo.deleteRecord": ("POST", delete_record),
    "com.atproto.repo.applyWrites": ("POST", apply_writes),
    "com.atproto.repo.getRecord": ("GET", get_record),
    "com.atproto.repo.listRecords": ("GET", list_records),
    "com.atproto.repo.describeRepo": ("GET", describe_repo),
}
