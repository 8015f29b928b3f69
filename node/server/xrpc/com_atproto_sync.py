"""com.atproto.sync: repos as CAR files, latest commits, repo listings, the firehose,
and blobs (getBlob, listBlobs)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from protocol.car import write_car
from protocol.cid import CID
from protocol.errors import RemoteProtocolError, RepoError
from protocol.mst import MST
from protocol.syntax import (
    validate_did,
    validate_nsid,
    validate_record_key,
)

from ...limits import (
    AddressSlots,
    stream_chunks,
)
from .. import inputs
from .base import (
    NODE_KEY,
    Handler,
    bad,
    json_response,
    q_int,
    q_str,
)

if TYPE_CHECKING:
    from ...wiring import Node


async def _head_or_404(node: Node, did: str) -> Any:
    validate_did(did)
    head = await node.storage.get_head(did)
    if head is None:
        raise RepoError(f"could not find repo for DID: {did}", error="RepoNotFound")
    if head.status == "takendown":
        raise RepoError(f"repo has been taken down: {did}", error="RepoTakendown")
    node.moderation.check_serve(did)
    return head


async def _car_response(request: web.Request, chunks: list[bytes]) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/vnd.ipld.car"})
    await response.prepare(request)
    for chunk in chunks:
        await response.write(chunk)
    await response.write_eof()
    return response


REPO_STREAMS_KEY = web.AppKey("repo_streams", AddressSlots)


async def sync_get_repo(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    did = q_str(request, "did")
    assert did is not None
    head = await _head_or_404(node, did)
    since = q_str(request, "since", required=False)
    old_root: CID | None = None
    if since is not None:
        at = await node.storage.commit_at(did, since)
        if at is None:
            raise bad(f"no commit at rev {since}")
        old_root = at[1]
    # Streamed from storage a chunk at a time, each waiting for the reader: a
    # client that never reads holds one chunk, for send_timeout, then is cut off.
    streams = request.app[REPO_STREAMS_KEY]
    key = streams.acquire(request.remote)
    try:
        response = web.StreamResponse(headers={"Content-Type": "application/vnd.ipld.car"})
        await response.prepare(request)
        chunks = node.car_chunks(head.head, head.root, old_root)
        try:
            await stream_chunks(request, response, chunks, node.config.send_timeout)
        finally:
            await chunks.aclose()
        return response
    finally:
        streams.release(key)


async def sync_get_latest_commit(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    did = q_str(request, "did")
    assert did is not None
    head = await _head_or_404(node, did)
    return json_response({"cid": str(head.head), "rev": head.rev})


async def sync_list_repos(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    limit = q_int(request, "limit", 500, 1, 1000)
    cursor = q_str(request, "cursor", required=False)
    heads = await node.storage.list_repos(cursor, limit)
    repos = []
    for h in heads:
        item: dict[str, Any] = {"did": h.did, "head": str(h.head), "rev": h.rev, "active": h.active}
        if h.status:
            item["status"] = h.status
        repos.append(item)
    out: dict[str, Any] = {"repos": repos}
    if len(heads) == limit:
        out["cursor"] = heads[-1].did
    return json_response(out)


async def sync_get_record(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    did = q_str(request, "did")
    collection = q_str(request, "collection")
    rkey = q_str(request, "rkey")
    assert did is not None
    assert collection is not None
    assert rkey is not None
    validate_nsid(collection)
    validate_record_key(rkey)
    head = await _head_or_404(node, did)
    path = f"{collection}/{rkey}"

    def proof() -> list[bytes]:
        source = node.storage
        commit_block = source.read_block(head.head)
        assert commit_block is not None
        tree = MST.load(source, head.root)
        blocks = [(head.head, commit_block), *tree.proof(path).items()]
        cid = tree.get(path)
        if cid is not None:
            record = source.read_block(cid)
            if record is not None:
                blocks.append((cid, record))
        return list(write_car([head.head], blocks))

    return await _car_response(request, await node.storage.run_in_reader(proof))


async def sync_get_repo_status(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    did = q_str(request, "did")
    assert did is not None
    validate_did(did)
    head = await node.storage.get_head(did)
    if head is None:
        raise RepoError(f"could not find repo for DID: {did}", error="RepoNotFound")
    out: dict[str, Any] = {"did": did, "active": head.active, "rev": head.rev}
    if head.status:
        out["status"] = head.status
    return json_response(out)


async def subscribe_repos(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    cursor = inputs.query_optional_int(request, "cursor", 0, inputs.INT64_MAX)
    if request.headers.get("Upgrade", "").lower() != "websocket":
        raise bad("subscribeRepos is a WebSocket endpoint")
    return await node.firehose.serve(request, cursor)


#: Headers on every blob: the bytes are whatever an account uploaded, so a browser must
#: never run them (no sniffing into HTML, no scripts, no plugins, a sandboxed origin).
BLOB_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; sandbox",
    "Cross-Origin-Resource-Policy": "cross-origin",
    "Cache-Control": "public, max-age=3600",
}


async def sync_get_blob(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    did = q_str(request, "did")
    raw_cid = q_str(request, "cid")
    assert did is not None
    assert raw_cid is not None
    validate_did(did)
    cid = CID.from_str(raw_cid)
    node.moderation.check_serve(did)
    # A blob is held whole from storage until it is sent: a bounded number at once,
    # and a reader that does not read is cut off after send_timeout.
    slots = node.blob_fetch.answers
    key = slots.acquire(request.remote)
    try:
        row = await node.blob_fetch.get(did, cid)
        if row is None:
            raise RemoteProtocolError(f"blob not found: {raw_cid}", error="BlobNotFound")
        headers = {
            **BLOB_HEADERS,
            "Content-Type": row.mime,  # the sniffed type, never a claim
            "ETag": f'"{raw_cid}"',
            "Content-Disposition": f'inline; filename="{raw_cid}"',
        }
        response = web.StreamResponse(headers=headers)
        response.content_length = len(row.data)
        await response.prepare(request)
        if request.method != "HEAD":
            pieces = (row.data[i : i + 65536] for i in range(0, len(row.data), 65536))
            await stream_chunks(request, response, _aiter(pieces), node.config.send_timeout)
        return response
    finally:
        slots.release(key)


async def _aiter(items: Iterable[bytes]) -> AsyncIterator[bytes]:
    for item in items:
        yield item


async def sync_list_blobs(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    did = q_str(request, "did")
    assert did is not None
    await _head_or_404(node, did)
    since = q_str(request, "since", required=False)
    if since is not None:
        validate_record_key(since)  # a TID is a valid record key; anything longer is not
    cursor = q_str(request, "cursor", required=False)
    after = None if cursor is None else CID.from_str(cursor).to_bytes()
    limit = q_int(request, "limit", 500, 1, 1000)
    cids = await node.blobs.list_refs(did, since, after, limit)
    out: dict[str, Any] = {"cids": [str(c) for c in cids]}
    if len(cids) == limit:
        out["cursor"] = str(cids[-1])
    return json_response(out)


ROUTES: dict[str, tuple[str, Handler]] = {
    "com.atproto.sync.getBlob": ("GET", sync_get_blob),
    "com.atproto.sync.listBlobs": ("GET", sync_list_blobs),
    "com.atproto.sync.getRepo": ("GET", sync_get_repo),
    "com.atproto.sync.getLatestCommit": ("GET", sync_get_latest_commit),
    "com.atproto.sync.listRepos": ("GET", sync_list_repos),
    "com.atproto.sync.getRecord": ("GET", sync_get_record),
    "com.atproto.sync.getRepoStatus": ("GET", sync_get_repo_status),
    "com.atproto.sync.subscribeRepos": ("GET", subscribe_repos),
}
