"""skyfed.*: the node's own methods (identity logs, labels, peers, equivocations, node info)."""

from __future__ import annotations

import base64
import dataclasses
import time
from typing import TYPE_CHECKING

from aiohttp import web

from protocol.errors import RemoteProtocolError
from protocol.identity import did_document, resolve_log
from protocol.labels import Label
from protocol.syntax import (
    validate_did,
)

from ... import VERSION
from ...net.federation import label_row
from ...store.repos import iso_now
from .base import (
    NODE_KEY,
    Handler,
    b_str,
    bad,
    json_response,
    q_int,
    q_str,
    read_body,
    viewer_of,
)

if TYPE_CHECKING:
    pass


async def get_identity_log(request: web.Request) -> web.Response:
    """skyfed.identity.getLog: an account's signed identity ops, oldest first."""
    node = request.app[NODE_KEY]
    did = q_str(request, "did")
    assert did is not None
    validate_did(did)
    ops = await node.storage.identity_ops(did)
    if not ops:
        raise RemoteProtocolError(f"no identity log for {did}", error="DidNotFound")
    state = resolve_log(did, ops).state
    return json_response(
        {
            "did": did,
            "ops": [base64.b64encode(op).decode("ascii") for op in ops],
            "didDoc": did_document(state),
        }
    )


async def peer_connect(request: web.Request) -> web.StreamResponse:
    """skyfed.peer.connect: the WebSocket another node links to."""
    node = request.app[NODE_KEY]
    if request.headers.get("Upgrade", "").lower() != "websocket":
        raise bad("skyfed.peer.connect is a WebSocket endpoint")
    return await node.federation.handle_inbound(request)


async def list_peers(request: web.Request) -> web.Response:
    """skyfed.node.listPeers: the links this node holds now."""
    node = request.app[NODE_KEY]
    fed = node.federation
    return json_response(
        {
            "peers": [
                {
                    "did": link.peer_did,
                    "url": link.peer_url,
                    "outbound": link.outbound,
                    "score": link.score,
                    "bytesIn": link.bytes_in,
                    "bytesOut": link.bytes_out,
                    "retries": link.retries,
                }
                for link in fed.links.values()
            ],
            "eager": sorted(fed.plumtree.eager_peers),
            "lazy": sorted(fed.plumtree.lazy_peers),
            "gossip": dataclasses.asdict(fed.plumtree.stats),
            "bytesIn": fed.bytes_in,
            "bytesOut": fed.bytes_out,
            "ingested": fed.ingested,
            "rejected": fed.rejected,
            "retries": fed.retries,
            # Outbound connections and admission (docs/security.md).
            "admission": {
                "learnedAddresses": len(fed.learned),
                "learnedDials": fed.learned_dials,
                "addressesRefused": fed.addresses_refused,
                "inbound": fed.inbound,
                "linksRefused": fed.links_refused,
                "identitiesRefused": fed.identities_refused,
            },
        }
    )


async def list_equivocations(request: web.Request) -> web.Response:
    """skyfed.sync.listEquivocations: evidence of authors who signed two histories.
    Each entry carries both signed commit blocks (base64), so anyone can re-verify it
    (``protocol.ingest.check_equivocation``)."""
    node = request.app[NODE_KEY]
    rows = await node.storage.equivocations(q_int(request, "limit", 50, 1, 500))
    return json_response(
        {
            "equivocations": [
                {
                    "did": e.did,
                    "reason": e.reason,
                    "kept": str(e.kept),
                    "dropped": str(e.dropped),
                    "keptCommit": base64.b64encode(e.kept_commit).decode("ascii"),
                    "droppedCommit": base64.b64encode(e.dropped_commit).decode("ascii"),
                    "seenAt": e.seen_at,
                }
                for e in rows
            ]
        }
    )


async def get_latest(request: web.Request) -> web.Response:
    """skyfed.feed.getLatest: every post this node holds, newest first."""
    node = request.app[NODE_KEY]
    limit = q_int(request, "limit", 50, 1, 100)
    cursor = q_str(request, "cursor", required=False)
    return json_response(await node.views.latest(await viewer_of(request), limit, cursor))


_MAX_CREATE_LABELS = 100


async def create_labels(request: web.Request) -> web.Response:
    """skyfed.label.createLabels: the authenticated account labels subjects, as a
    labeler; the node signs with the account's key and gossips the labels."""
    node = request.app[NODE_KEY]
    p = await node.principal(request)
    body = await read_body(request)
    specs = body.get("labels")
    if not isinstance(specs, list) or not specs:
        raise bad("labels must be a non-empty array")
    if len(specs) > _MAX_CREATE_LABELS:
        raise bad(f"labels: at most {_MAX_CREATE_LABELS} per request")
    _, key = await node.local_account(p.did)
    cts = iso_now()
    labels = []
    for spec in specs:
        if not isinstance(spec, dict) or not set(spec) <= {"uri", "cid", "val", "neg", "exp"}:
            raise bad("each label is {uri, cid?, val, neg?, exp?}")
        neg = spec.get("neg", False)
        if not isinstance(neg, bool):
            raise bad("neg must be a boolean")
        uri, val = b_str(spec, "uri"), b_str(spec, "val")
        assert uri is not None
        assert val is not None
        label = Label(
            src=p.did,
            uri=uri,
            cid=b_str(spec, "cid", required=False),
            val=val,
            neg=neg,
            # A negation ties a held label dated ahead of us, and wins (protocol §12).
            cts=await node.moderation.retraction_cts(p.did, uri, val, cts) if neg else cts,
            exp=b_str(spec, "exp", required=False),
        )
        labels.append(label.sign(key))
    state = node.write_limits.check_and_consume(p.did, len(labels))
    await node.storage.put_labels([label_row(label) for label in labels])
    for label in labels:
        node.federation.publish_label(label)
    return json_response({"labels": [label.to_json() for label in labels]}, headers=state.headers())


async def health(request: web.Request) -> web.Response:
    return json_response({"version": VERSION})


async def node_info(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    cfg = node.config
    return json_response(
        {
            "version": VERSION,
            "did": node.node_did,
            "url": node.url,
            "accounts": await node.storage.account_count(),
            "uptime": int(time.time() - node.started_at),
            "firehose": {
                "subscribers": node.firehose.subscriber_count,
                "lastSeq": node.firehose.last_seq,
                "replayWindow": cfg.replay_window,
            },
            "limits": {
                "maxBody": cfg.max_body,
                "pointsPerHour": cfg.points_per_hour,
                "pointsPerDay": cfg.points_per_day,
                "maxOpsPerCommit": 200,
                "maxRecordBytes": 1024 * 1024,
            },
            "handleDomains": list(cfg.handle_domains),
            "moderation": await node.moderation.info(),
        }
    )


async def metrics(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    body, content_type = node.metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": content_type})


ROUTES: dict[str, tuple[str, Handler]] = {
    "skyfed.identity.getLog": ("GET", get_identity_log),
    "skyfed.label.createLabels": ("POST", create_labels),
    "skyfed.feed.getLatest": ("GET", get_latest),
    "skyfed.node.getInfo": ("GET", node_info),
    "skyfed.node.listPeers": ("GET", list_peers),
    "skyfed.peer.connect": ("GET", peer_connect),
    "skyfed.sync.listEquivocations": ("GET", list_equivocations),
    "_health": ("GET", health),
}
