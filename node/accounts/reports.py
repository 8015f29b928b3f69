"""Reports of abuse (com.atproto.moderation.createReport), queued for a moderator.

A report from an account hosted here goes to one of two queues on this node: the
node's admin (``skyfed admin reports``, through ``skyfed.admin.listReports``), or,
when the request's ``atproto-proxy`` header names a labeler (``did#atproto_labeler``)
that is an account hosted here with an app.bsky.labeler.service declaration, that
labeler's queue (read by the labeler's own session through
``skyfed.moderation.listReports``). Reports for labelers hosted elsewhere are not
forwarded: the request is refused with a message saying so, and nothing is stored.

Bounds (each a node setting with its default in node/config.py): reports per account
per second and burst (``report_rate``, ``report_burst``), open reports per reporting
account (``max_open_reports_per_account``) and in the whole node
(``max_open_reports``); past them, 429 ``RateLimitExceeded`` and nothing stored.

What it refuses: a ``reasonType`` that is not ``<nsid>#<name>``, a ``reason`` over
20,000 bytes, a subject that is neither a ``com.atproto.admin.defs#repoRef`` with a
valid DID nor a ``com.atproto.repo.strongRef`` with a valid AT-URI and CID.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from typing import Any, Final

import orjson

from protocol.cid import CID
from protocol.errors import RemoteProtocolError, SkyfedError
from protocol.syntax import is_valid_did, validate_at_uri

from ..server.ratelimit import RequestLimiter
from ..store.repos import iso_now
from ..store.sqlite import SqliteStorage

__all__ = ["MAX_REASON_BYTES", "REPO_REF", "STRONG_REF", "Reports", "parse_proxy"]

REPO_REF: Final = "com.atproto.admin.defs#repoRef"
STRONG_REF: Final = "com.atproto.repo.strongRef"
#: The lexicon's maxLength for ``reason``.
MAX_REASON_BYTES: Final = 20_000
_REASON_TYPE: Final = re.compile(r"[a-zA-Z][a-zA-Z0-9.\-]{0,200}#[a-zA-Z][a-zA-Z0-9]{0,63}")
LABELER_SERVICE: Final = "atproto_labeler"


class ReportQueueFull(RemoteProtocolError):
    error = "RateLimitExceeded"
    status = 429


def parse_proxy(value: str | None) -> str | None:
    """The labeler DID an ``atproto-proxy`` header names (``did#atproto_labeler``), or
    None when there is no header; anything else is refused."""
    if value is None:
        return None
    did, sep, service = value.strip().partition("#")
    if not sep or service != LABELER_SERVICE or not is_valid_did(did):
        raise RemoteProtocolError(
            "atproto-proxy must name a labeler as did#atproto_labeler for createReport"
        )
    return did


def parse_subject(value: Any) -> tuple[dict[str, str], str]:
    """The subject as stored, and the DID of the account it concerns."""
    kind = value.get("$type") if isinstance(value, dict) else None
    if kind == REPO_REF and isinstance(value, dict):
        did = value.get("did")
        if isinstance(did, str) and is_valid_did(did):
            return {"$type": REPO_REF, "did": did}, did
        raise RemoteProtocolError("subject.did must be a DID")
    if kind == STRONG_REF and isinstance(value, dict):
        uri, cid = value.get("uri"), value.get("cid")
        if not isinstance(uri, str) or not isinstance(cid, str):
            raise RemoteProtocolError("subject must have a uri and a cid")
        try:
            validate_at_uri(uri)
            CID.from_str(cid)
        except SkyfedError as e:
            raise RemoteProtocolError(f"subject: {e}") from None
        authority = uri[len("at://") :].split("/", 1)[0]
        if not is_valid_did(authority):
            raise RemoteProtocolError("subject.uri must name its repo by DID")
        return {"$type": STRONG_REF, "uri": uri, "cid": cid}, authority
    raise RemoteProtocolError(f"subject must be a {REPO_REF} or a {STRONG_REF}")


@dataclass(frozen=True, slots=True)
class Report:
    id: int
    reported_by: str
    reason_type: str
    reason: str | None
    subject: dict[str, Any]
    labeler: str | None
    created_at: str
    resolved_at: str | None = None
    resolution: str | None = None

    def to_json(self) -> dict[str, Any]:
        """createReport's output (with skyfed's queue fields after it)."""
        out: dict[str, Any] = {
            "id": self.id,
            "reasonType": self.reason_type,
            "subject": self.subject,
            "reportedBy": self.reported_by,
            "createdAt": self.created_at,
        }
        if self.reason is not None:
            out["reason"] = self.reason
        return out

    def to_queue_json(self) -> dict[str, Any]:
        out = self.to_json()
        out["labeler"] = self.labeler
        out["resolvedAt"] = self.resolved_at
        out["resolution"] = self.resolution
        return out


def _row(r: Any) -> Report:
    return Report(r[0], r[1], r[2], r[3], orjson.loads(r[4]), r[5], r[6], r[7], r[8])


_COLUMNS: Final = (
    "id, reported_by, reason_type, reason, subject, labeler, created_at, resolved_at, resolution"
)


class Reports:
    """The report queues of this node."""

    def __init__(
        self,
        storage: SqliteStorage,
        *,
        rate: float,
        burst: int,
        max_open_per_account: int,
        max_open: int,
    ):
        self.storage = storage
        self.limits = RequestLimiter(rate=rate, burst=burst)
        self.max_open_per_account = max_open_per_account
        self.max_open = max_open

    async def create(self, reported_by: str, body: dict[str, Any], labeler: str | None) -> Report:
        reason_type = body.get("reasonType")
        if not isinstance(reason_type, str) or not _REASON_TYPE.fullmatch(reason_type):
            raise RemoteProtocolError('Input must have the property "reasonType" (nsid#name)')
        reason = body.get("reason")
        if reason is not None and (
            not isinstance(reason, str) or len(reason.encode("utf-8", "replace")) > MAX_REASON_BYTES
        ):
            raise RemoteProtocolError(
                f"reason must be a string of at most {MAX_REASON_BYTES} bytes"
            )
        subject, subject_did = parse_subject(body.get("subject"))
        self.limits.check(reported_by)
        now = iso_now()
        limits = (self.max_open_per_account, self.max_open)

        def w(conn: sqlite3.Connection) -> int:
            mine = conn.execute(
                "SELECT COUNT(*) FROM reports WHERE reported_by = ? AND resolved_at IS NULL",
                (reported_by,),
            ).fetchone()[0]
            if mine >= limits[0]:
                raise ReportQueueFull(
                    f"you have {mine} open reports here; wait until a moderator acts on them"
                )
            total = conn.execute(
                "SELECT COUNT(*) FROM reports WHERE resolved_at IS NULL"
            ).fetchone()[0]
            if total >= limits[1]:
                raise ReportQueueFull("this node's report queue is full; try again later")
            cur = conn.execute(
                "INSERT INTO reports (reported_by, reason_type, reason, subject, subject_did,"
                " labeler, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    reported_by,
                    reason_type,
                    reason,
                    orjson.dumps(subject),
                    subject_did,
                    labeler,
                    now,
                ),
            )
            return int(cur.lastrowid or 0)

        row_id = await self.storage.write(w)
        return Report(row_id, reported_by, reason_type, reason, subject, labeler, now)

    async def queue(
        self,
        *,
        labeler: str | None,
        every_queue: bool = False,
        limit: int = 50,
        before: int | None = None,
        resolved: bool = False,
    ) -> list[Report]:
        """Reports newest first: the node admin's queue (``labeler`` None), one
        labeler's, or all of them (``every_queue``); open ones unless ``resolved``."""
        sql = f"SELECT {_COLUMNS} FROM reports WHERE id < ?"
        args: list[Any] = [before if before is not None else 2**62]
        if not every_queue:
            if labeler is None:
                sql += " AND labeler IS NULL"
            else:
                sql += " AND labeler = ?"
                args.append(labeler)
        if not resolved:
            sql += " AND resolved_at IS NULL"
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        rows = await self.storage.read(lambda conn: conn.execute(sql, args).fetchall())
        return [_row(r) for r in rows]

    async def resolve(
        self, report_id: int, resolution: str, *, labeler: str | None = None, any_queue: bool = True
    ) -> Report:
        """Close a report with a note (the admin any; a labeler only its own)."""
        now = iso_now()

        def w(conn: sqlite3.Connection) -> Report:
            row = conn.execute(f"SELECT {_COLUMNS} FROM reports WHERE id = ?", (report_id,))
            found = row.fetchone()
            if found is None or (not any_queue and found[5] != labeler):
                raise RemoteProtocolError(f"no report {report_id} here", error="NotFound")
            conn.execute(
                "UPDATE reports SET resolved_at = ?, resolution = ? WHERE id = ?",
                (now, resolution, report_id),
            )
            report = _row(found)
            return Report(
                report.id,
                report.reported_by,
                report.reason_type,
                report.reason,
                report.subject,
                report.labeler,
                report.created_at,
                now,
                resolution,
            )

        return await self.storage.write(w)
