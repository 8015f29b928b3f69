"""com.atproto.moderation.createReport, and the queues reports land in.

``createReport`` takes a session of an account hosted here. Without an
``atproto-proxy`` header the report goes to this node's admin; with
``atproto-proxy: <did>#atproto_labeler`` naming a labeler hosted here (an account of
this node with an app.bsky.labeler.service declaration), to that labeler's queue.
A labeler hosted elsewhere is refused (``InvalidRequest``): this node does not
forward reports to other services.

The queues: ``skyfed.admin.listReports`` / ``skyfed.admin.resolveReport`` (the node's
admin token; every queue) and ``skyfed.moderation.listReports`` /
``skyfed.moderation.resolveReport`` (a hosted labeler's own session; its queue only).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from protocol.errors import RemoteProtocolError
from protocol.syntax import validate_did

from ...accounts.moderation import _admin
from ...accounts.reports import Report, parse_proxy
from .. import inputs
from .base import NODE_KEY, Handler, json_response, q_bool, q_int, q_str, read_body

#: Bytes a createReport body may take: a 20,000-byte reason, a subject and the rest.
MAX_REPORT_BODY = 64 * 1024
PROXY_HEADER = "atproto-proxy"


async def create_report(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    reporter = (await node.principal(request)).did
    labeler = parse_proxy(request.headers.get(PROXY_HEADER))
    body = await read_body(request, max_bytes=MAX_REPORT_BODY)
    if labeler is not None:
        hosted = await node.storage.account_by_did(labeler)
        if hosted is None:
            raise RemoteProtocolError(
                f"{labeler} is not a labeler hosted on this node, and this node does not "
                "forward reports to other services: send the report to the labeler's own node"
            )
        if not await node.graph.is_labeler(labeler):
            raise RemoteProtocolError(
                f"{labeler} has no app.bsky.labeler.service declaration: it takes no reports"
            )
    report = await node.reports.create(reporter, body, labeler)
    return json_response(report.to_json())


def _page(reports: list[Report], limit: int) -> dict[str, Any]:
    out: dict[str, Any] = {"reports": [r.to_queue_json() for r in reports]}
    if len(reports) == limit:
        out["cursor"] = str(reports[-1].id)
    return out


def _query(request: web.Request) -> tuple[int, int | None, bool]:
    limit = q_int(request, "limit", 50, 1, 500)
    before = inputs.query_optional_int(request, "cursor", 0, inputs.INT64_MAX)
    return limit, before, q_bool(request, "resolved")


async def admin_list_reports(request: web.Request) -> web.Response:
    """skyfed.admin.listReports: reports newest first; ``labeler`` picks a labeler's
    queue, ``queue=node`` the admin's own, default every queue."""
    _admin(request)
    node = request.app[NODE_KEY]
    limit, before, resolved = _query(request)
    labeler = q_str(request, "labeler", required=False)
    if labeler is not None:
        validate_did(labeler)
    queue = q_str(request, "queue", required=False) or "all"
    if queue not in ("all", "node"):
        raise RemoteProtocolError("queue must be all or node")
    reports = await node.reports.queue(
        labeler=labeler,
        every_queue=labeler is None and queue == "all",
        limit=limit,
        before=before,
        resolved=resolved,
    )
    return json_response(_page(reports, limit))


async def _resolution(request: web.Request) -> tuple[int, str]:
    body = await read_body(request, max_bytes=MAX_REPORT_BODY)
    report_id = body.get("id")
    if not isinstance(report_id, int) or isinstance(report_id, bool) or report_id < 1:
        raise RemoteProtocolError('Input must have the property "id" (a report number)')
    note = body.get("resolution")
    if not isinstance(note, str) or not note.strip() or len(note) > 2000:
        raise RemoteProtocolError('Input must have the property "resolution" (what was done)')
    return report_id, note


async def admin_resolve_report(request: web.Request) -> web.Response:
    """skyfed.admin.resolveReport {id, resolution}: close any report."""
    _admin(request)
    report_id, note = await _resolution(request)
    report = await request.app[NODE_KEY].reports.resolve(report_id, note)
    return json_response({"report": report.to_queue_json()})


async def labeler_list_reports(request: web.Request) -> web.Response:
    """skyfed.moderation.listReports: a hosted labeler's own queue (its session)."""
    node = request.app[NODE_KEY]
    me = (await node.principal(request)).did
    limit, before, resolved = _query(request)
    reports = await node.reports.queue(labeler=me, limit=limit, before=before, resolved=resolved)
    return json_response(_page(reports, limit))


async def labeler_resolve_report(request: web.Request) -> web.Response:
    """skyfed.moderation.resolveReport {id, resolution}: a labeler closes its own."""
    node = request.app[NODE_KEY]
    me = (await node.principal(request)).did
    report_id, note = await _resolution(request)
    report = await node.reports.resolve(report_id, note, labeler=me, any_queue=False)
    return json_response({"report": report.to_queue_json()})


ROUTES: dict[str, tuple[str, Handler]] = {
    "com.atproto.moderation.createReport": ("POST", create_report),
    "skyfed.admin.listReports": ("GET", admin_list_reports),
    "skyfed.admin.resolveReport": ("POST", admin_resolve_report),
    "skyfed.moderation.listReports": ("GET", labeler_list_reports),
    "skyfed.moderation.resolveReport": ("POST", labeler_resolve_report),
}
