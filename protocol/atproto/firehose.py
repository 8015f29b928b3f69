"""``com.atproto.sync.subscribeRepos`` frames: decoding every message type.

One WebSocket binary message is one frame: two DAG-CBOR objects back to back, a
header and a body (:func:`.dagcbor.decode_many`). The header is ``{"op": 1, "t":
"#commit"}`` for a message (``t`` names the body's type) or ``{"op": -1}`` for an
error, whose body is ``{"error": name, "message"?: text}``; after an error frame the
server closes the stream. Error names of this endpoint: ``FutureCursor``,
``ConsumerTooSlow`` (and ``OutdatedCursor`` arrives as an ``#info`` message whose
``name`` is ``OutdatedCursor``, as well as in the error form from some servers).

:func:`decode_frame` returns one of :class:`CommitEvent`, :class:`SyncEvent`,
:class:`IdentityEvent`, :class:`AccountEvent`, :class:`InfoEvent`,
:class:`ErrorFrame`, or :class:`UnknownEvent` for a ``t`` it does not know (the
event-stream spec says to skip those, not to fail). It checks the types and syntax
of every field it reads (DIDs, TIDs, datetimes, CIDs, paths, actions, ``seq`` in
int64) and refuses a frame over ``max_size`` bytes before decoding it. Fields it
does not know are ignored (lexicons may grow). It does **not** verify signatures or
proofs: that is :func:`.commit.verify_commit_event` and :func:`.commit.verify_sync_event`.

Bounds (from the lexicon and the sync spec): a frame at most :data:`MAX_FRAME`
bytes, a commit's ``blocks`` at most :data:`MAX_EVENT_BLOCKS` bytes and ``ops`` at
most :data:`MAX_OPS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import DecodeError, InvalidSyntax
from ..syntax import validate_datetime, validate_did, validate_handle, validate_tid
from . import dagcbor
from .cid import CID
from .mst import validate_key

__all__ = [
    "ERROR_NAMES",
    "MAX_EVENT_BLOCKS",
    "MAX_FRAME",
    "MAX_OPS",
    "AccountEvent",
    "CommitEvent",
    "ErrorFrame",
    "Frame",
    "IdentityEvent",
    "InfoEvent",
    "RepoOp",
    "SyncEvent",
    "UnknownEvent",
    "decode_frame",
    "encode_frame",
]

#: Bound on one frame (the reference relay's read limit is a few MB).
MAX_FRAME = 5 * 1024 * 1024
#: Bound on a ``#commit``'s or ``#sync``'s ``blocks`` (the lexicon's 2,000,000 bytes).
MAX_EVENT_BLOCKS = 2_000_000
#: Bound on a ``#commit``'s ``ops`` (the lexicon's maxLength).
MAX_OPS = 200
#: The error names a consumer should recognise.
ERROR_NAMES = frozenset({"FutureCursor", "ConsumerTooSlow", "OutdatedCursor"})
_MAX_TEXT = 10_000
_INT64_MAX = 2**63 - 1

Action = Literal["create", "update", "delete"]
_ACTIONS: dict[object, Action] = {"create": "create", "update": "update", "delete": "delete"}


@dataclass(frozen=True, slots=True)
class RepoOp:
    """One record change: ``cid`` is the new record (``None`` for a delete), ``prev``
    the old one (``None`` for a create; required otherwise in Sync 1.1)."""

    action: Action
    path: str
    cid: CID | None
    prev: CID | None = None


@dataclass(frozen=True, slots=True)
class CommitEvent:
    """A ``#commit``: a new signed commit with a CAR slice proving its ops."""

    seq: int
    repo: str
    commit: CID
    rev: str
    since: str | None
    blocks: bytes
    ops: tuple[RepoOp, ...]
    time: str
    prev_data: CID | None = None
    too_big: bool = False
    rebase: bool = False


@dataclass(frozen=True, slots=True)
class SyncEvent:
    """A ``#sync``: the repo's current commit (``blocks`` is a CAR holding just it);
    the consumer should resynchronise the repo if it disagrees."""

    seq: int
    did: str
    blocks: bytes
    rev: str
    time: str


@dataclass(frozen=True, slots=True)
class IdentityEvent:
    """An ``#identity``: the DID document or handle may have changed; re-resolve."""

    seq: int
    did: str
    time: str
    handle: str | None = None


@dataclass(frozen=True, slots=True)
class AccountEvent:
    """An ``#account``: hosting status changed (``status`` when not active)."""

    seq: int
    did: str
    time: str
    active: bool
    status: str | None = None


@dataclass(frozen=True, slots=True)
class InfoEvent:
    """An ``#info``: informational, e.g. ``name == "OutdatedCursor"``."""

    name: str
    message: str | None = None


@dataclass(frozen=True, slots=True)
class ErrorFrame:
    """An error frame (``op: -1``); the stream ends after it."""

    error: str
    message: str | None = None


@dataclass(frozen=True, slots=True)
class UnknownEvent:
    """A message of a type this code does not know; skip it."""

    type: str


Frame = (
    CommitEvent | SyncEvent | IdentityEvent | AccountEvent | InfoEvent | ErrorFrame | UnknownEvent
)


def decode_frame(data: bytes, *, max_size: int = MAX_FRAME) -> Frame:
    """Decode one WebSocket binary message (see the module doc)."""
    header, body = dagcbor.decode_many(data, 2, max_size=max_size)
    if not isinstance(header, dict) or not set(header) <= {"op", "t"}:
        raise DecodeError("frame header must be {op, t?}")
    if not isinstance(body, dict):
        raise DecodeError("frame body must be a map")
    op = header.get("op")
    if type(op) is not int or op not in (1, -1):
        raise DecodeError("frame header op must be 1 or -1")
    if op == -1:
        return ErrorFrame(_text(body, "error"), _opt_text(body, "message"))
    t = header.get("t")
    if not isinstance(t, str) or not t:
        raise DecodeError("message frame needs a header t")
    try:
        if t == "#commit":
            return _commit(body)
        if t == "#sync":
            return SyncEvent(
                _seq(body),
                _did(body, "did"),
                _bytes(body, "blocks", MAX_EVENT_BLOCKS),
                _tid(body, "rev"),
                _time(body),
            )
        if t == "#identity":
            handle = _opt_text(body, "handle")
            if handle is not None:
                validate_handle(handle)
            return IdentityEvent(_seq(body), _did(body, "did"), _time(body), handle)
        if t == "#account":
            active = body.get("active")
            if type(active) is not bool:
                raise DecodeError("#account active must be a boolean")
            return AccountEvent(
                _seq(body), _did(body, "did"), _time(body), active, _opt_text(body, "status")
            )
        if t == "#info":
            return InfoEvent(_text(body, "name"), _opt_text(body, "message"))
    except InvalidSyntax as e:
        raise DecodeError(f"{t}: {e.message}") from e
    if len(t) > 100:
        raise DecodeError("frame type is too long")
    return UnknownEvent(t)


def _commit(body: dict[str, dagcbor.Value]) -> CommitEvent:
    commit = body.get("commit")
    if not isinstance(commit, CID):
        raise DecodeError("#commit commit must be a CID")
    since = body.get("since")
    if since is not None:
        since = _tid(body, "since")
    raw_ops = body.get("ops")
    if not isinstance(raw_ops, list) or len(raw_ops) > MAX_OPS:
        raise DecodeError(f"#commit ops must be a list of at most {MAX_OPS}")
    prev_data = body.get("prevData")
    if prev_data is not None and not isinstance(prev_data, CID):
        raise DecodeError("#commit prevData must be a CID")
    flags = []
    for name in ("tooBig", "rebase"):
        flag = body.get(name, False)
        if type(flag) is not bool:
            raise DecodeError(f"#commit {name} must be a boolean")
        flags.append(flag)
    return CommitEvent(
        seq=_seq(body),
        repo=_did(body, "repo"),
        commit=commit,
        rev=_tid(body, "rev"),
        since=since,
        blocks=_bytes(body, "blocks", MAX_EVENT_BLOCKS),
        ops=tuple(_op(o) for o in raw_ops),
        time=_time(body),
        prev_data=prev_data,
        too_big=flags[0],
        rebase=flags[1],
    )


def _op(raw: dagcbor.Value) -> RepoOp:
    if not isinstance(raw, dict):
        raise DecodeError("a repo op must be a map")
    raw_action = raw.get("action")
    action = _ACTIONS.get(raw_action) if isinstance(raw_action, str) else None
    path = raw.get("path")
    cid = raw.get("cid")
    prev = raw.get("prev")
    if action is None:
        raise DecodeError("repo op action must be create, update or delete")
    if not isinstance(path, str):
        raise DecodeError("repo op path must be a string")
    validate_key(path)
    if cid is not None and not isinstance(cid, CID):
        raise DecodeError("repo op cid must be a CID or null")
    if prev is not None and not isinstance(prev, CID):
        raise DecodeError("repo op prev must be a CID")
    return RepoOp(action, path, cid, prev)


def _seq(body: dict[str, dagcbor.Value]) -> int:
    seq = body.get("seq")
    if type(seq) is not int or not 0 <= seq <= _INT64_MAX:
        raise DecodeError("seq must be a non-negative integer")
    return seq


def _text(body: dict[str, dagcbor.Value], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value or len(value) > _MAX_TEXT:
        raise DecodeError(f"{name} must be a non-empty string")
    return value


def _opt_text(body: dict[str, dagcbor.Value], name: str) -> str | None:
    return None if body.get(name) is None else _text(body, name)


def _did(body: dict[str, dagcbor.Value], name: str) -> str:
    value = _text(body, name)
    validate_did(value)
    return value


def _tid(body: dict[str, dagcbor.Value], name: str) -> str:
    value = _text(body, name)
    validate_tid(value)
    return value


def _time(body: dict[str, dagcbor.Value]) -> str:
    value = _text(body, "time")
    validate_datetime(value)
    return value


def _bytes(body: dict[str, dagcbor.Value], name: str, limit: int) -> bytes:
    value = body.get(name)
    if not isinstance(value, bytes) or len(value) > limit:
        raise DecodeError(f"{name} must be bytes, at most {limit}")
    return value


def encode_frame(frame: Frame) -> bytes:
    """The wire form of a frame (for tests, vectors and benchmarks)."""
    body: dict[str, dagcbor.Value]
    if isinstance(frame, ErrorFrame):
        body = {"error": frame.error}
        if frame.message is not None:
            body["message"] = frame.message
        return dagcbor.encode({"op": -1}) + dagcbor.encode(body)
    if isinstance(frame, CommitEvent):
        t = "#commit"
        ops: list[dagcbor.Value] = []
        for op in frame.ops:
            o: dict[str, dagcbor.Value] = {"action": op.action, "path": op.path, "cid": op.cid}
            if op.prev is not None:
                o["prev"] = op.prev
            ops.append(o)
        body = {
            "seq": frame.seq,
            "repo": frame.repo,
            "commit": frame.commit,
            "rev": frame.rev,
            "since": frame.since,
            "blocks": frame.blocks,
            "ops": ops,
            "blobs": [],
            "time": frame.time,
            "tooBig": frame.too_big,
            "rebase": frame.rebase,
        }
        if frame.prev_data is not None:
            body["prevData"] = frame.prev_data
    elif isinstance(frame, SyncEvent):
        t = "#sync"
        body = {
            "seq": frame.seq,
            "did": frame.did,
            "blocks": frame.blocks,
            "rev": frame.rev,
            "time": frame.time,
        }
    elif isinstance(frame, IdentityEvent):
        t = "#identity"
        body = {"seq": frame.seq, "did": frame.did, "time": frame.time}
        if frame.handle is not None:
            body["handle"] = frame.handle
    elif isinstance(frame, AccountEvent):
        t = "#account"
        body = {"seq": frame.seq, "did": frame.did, "time": frame.time, "active": frame.active}
        if frame.status is not None:
            body["status"] = frame.status
    elif isinstance(frame, InfoEvent):
        t = "#info"
        body = {"name": frame.name}
        if frame.message is not None:
            body["message"] = frame.message
    else:
        t = frame.type
        body = {}
    return dagcbor.encode({"op": 1, "t": t}) + dagcbor.encode(body)
