"""Signed commits and the commit events that carry a change between nodes.

A commit is ``{did, version: 4, data, rev, prev, sig}``: ``data`` is the root of the
repository's tree, ``rev`` a TID that only ever grows, ``prev`` the CID of the previous
commit (null only for the first), ``sig`` the ed25519 signature by the account's
signing key over the canonical encoding of the other five fields. Its CID is the CID
of its encoding *with* ``sig``. Because ``prev`` is signed, two commits with the same
``prev`` (or the same ``rev``) are proof that the author signed two histories, and a
relay cannot make an honest commit look like one.

A commit event (atproto's ``#commit`` without the stream's ``seq``) carries one
commit and everything a receiver needs to check it while holding nothing but the
previous tree root (atproto Sync 1.1, the "inductive firehose"):

* ``ops``: ``{action, path, cid, prev}`` for every record touched;
* ``since``: the rev of the previous commit (None for the first commit, and only
  for it: ``since`` is null exactly when the signed ``prev`` is);
* ``prevData``: the previous tree root (the empty tree's root for the first commit);
* ``blocks``: the commit block, the new record blocks, and every node of the new tree
  that inverting the ops reads (the path to each key, plus the nodes on both sides of
  each created key that inverting must merge).

The receiver checks the signature, checks that the new tree holds each op's value,
applies the inverse of every op to the partial tree, and requires the result to be
``prevData`` exactly. It refuses: a bad signature, a commit for another DID or rev,
a ``since`` that is null when ``prev`` is not (or the reverse), a first commit whose
``prevData`` is not the empty tree, an update op that does not change its record,
ops that disagree with the tree, missing blocks, a non-increasing rev, more than
:data:`MAX_OPS` ops or :data:`MAX_BLOCKS_BYTES` of blocks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import msgpack

from .cid import CID, cid_for_msgpack
from .encoding import Value, decode_unchecked, encode
from .errors import DecodeError, InvalidCommit, InvalidSyntax, RepoError
from .keys import SigningKey, VerifyKey
from .mst import (
    MST,
    BlockSource,
    HashedBlocks,
    MissingBlock,
    RecordingSource,
    validate_key,
)
from .syntax import validate_datetime, validate_did, validate_tid

__all__ = [
    "COMMIT_VERSION",
    "EMPTY_TREE",
    "MAX_BLOCKS_BYTES",
    "MAX_OPS",
    "MAX_RECORD_BYTES",
    "Action",
    "Commit",
    "CommitEvent",
    "RepoOp",
    "blocks_for_ops",
    "invert_ops",
    "verify_commit_event",
]

#: 4 since commits sign ``prev`` (docs/protocol.md §8); version 3 is refused.
COMMIT_VERSION = 4
_COMMIT_FIELDS = ["data", "did", "prev", "rev", "sig", "version"]
_OP_FIELDS = ["action", "cid", "path", "prev"]
_EVENT_FIELDS = ["blocks", "commit", "ops", "prevData", "repo", "rev", "since", "time"]
_EVENT_FIELDS_SEQ = ["blocks", "commit", "ops", "prevData", "repo", "rev", "seq", "since", "time"]
MAX_OPS = 200
MAX_RECORD_BYTES = 1024 * 1024
MAX_BLOCKS_BYTES = 2 * 1024 * 1024

#: The root of the tree with no keys: the ``prevData`` of every first commit.
EMPTY_TREE = MST.empty().root()

_BYTES_ONLY = frozenset([bytes])

Action = Literal["create", "update", "delete"]
_ACTIONS = ("create", "update", "delete")


def _cid_field(data: Mapping[str, Value], name: str, *, nullable: bool = False) -> CID | None:
    raw = data.get(name)
    if raw is None:
        if nullable:
            return None
        raise DecodeError(f"'{name}' is required")
    if type(raw) is not bytes:
        raise DecodeError(f"'{name}' must be a binary CID")
    return CID.from_bytes(raw)


def _str_field(data: Mapping[str, Value], name: str, *, nullable: bool = False) -> str | None:
    raw = data.get(name)
    if raw is None and nullable:
        return None
    if type(raw) is not str:
        raise DecodeError(f"'{name}' must be a string")
    return raw


@dataclass(frozen=True, slots=True)
class Commit:
    """A signed repository commit."""

    did: str
    data: CID
    rev: str
    sig: bytes = field(repr=False)
    version: int = COMMIT_VERSION
    prev: CID | None = None

    # Commits are built here from typed fields in canonical key order, so plain
    # packing is canonical; encode()'s generic checks would only cost time.
    @staticmethod
    def _unsigned(did: str, data: CID, rev: str, version: int, prev: CID | None) -> bytes:
        return msgpack.packb(  # type: ignore[no-any-return]
            {
                "data": data.to_bytes(),
                "did": did,
                "prev": None if prev is None else prev.to_bytes(),
                "rev": rev,
                "version": version,
            }
        )

    @classmethod
    def sign(cls, did: str, data: CID, rev: str, key: SigningKey, *, prev: CID | None) -> Commit:
        """Sign a commit on ``prev``: the CID of the commit before it, None for the first."""
        sig = key.sign(cls._unsigned(did, data, rev, COMMIT_VERSION, prev))
        return cls(did=did, data=data, rev=rev, sig=sig, prev=prev)

    def unsigned_bytes(self) -> bytes:
        return self._unsigned(self.did, self.data, self.rev, self.version, self.prev)

    def to_bytes(self) -> bytes:
        return msgpack.packb(  # type: ignore[no-any-return]
            {
                "data": self.data.to_bytes(),
                "did": self.did,
                "prev": None if self.prev is None else self.prev.to_bytes(),
                "rev": self.rev,
                "sig": self.sig,
                "version": self.version,
            }
        )

    @classmethod
    def from_bytes(cls, block: bytes) -> Commit:
        # decode_unchecked guarantees the bytes are the value's minimal encoding; the
        # exact key list (order included) and exact types below make it canonical.
        d = decode_unchecked(block)
        if type(d) is not dict or list(d) != _COMMIT_FIELDS:
            raise DecodeError(f"commit must be a map of exactly {_COMMIT_FIELDS} in order")
        if d["version"] != COMMIT_VERSION or type(d["version"]) is not int:
            raise DecodeError(f"commit version must be {COMMIT_VERSION}")
        sig, did, rev = d["sig"], d["did"], d["rev"]
        if type(sig) is not bytes or type(did) is not str or type(rev) is not str:
            raise DecodeError("commit sig must be bytes, did and rev strings")
        try:
            validate_did(did)
            validate_tid(rev)
        except InvalidSyntax as e:
            raise DecodeError(f"commit: {e.message}") from e
        data = _cid_field(d, "data")
        assert data is not None
        return cls(did=did, data=data, rev=rev, sig=sig, prev=_cid_field(d, "prev", nullable=True))

    @property
    def cid(self) -> CID:
        return cid_for_msgpack(self.to_bytes())

    def verify(self, key: VerifyKey) -> None:
        """Raise InvalidSignature unless ``key`` signed this commit."""
        key.verify(self.sig, self.unsigned_bytes())


@dataclass(frozen=True, slots=True)
class RepoOp:
    """One record change: create (cid), update (cid and prev), delete (prev)."""

    action: Action
    path: str
    cid: CID | None
    prev: CID | None = None

    def __post_init__(self) -> None:
        if self.action not in _ACTIONS:
            raise DecodeError(f"unknown op action {self.action!r}")
        want_cid = self.action != "delete"
        want_prev = self.action != "create"
        if (self.cid is not None) != want_cid or (self.prev is not None) != want_prev:
            raise DecodeError(f"a {self.action} op must have cid={want_cid}, prev={want_prev}")
        # A create or delete always changes the tree (inverting proves the key was
        # absent, resp. present); an update to the same CID would not, and firehose
        # consumers would see a change that never happened.
        if self.cid is not None and self.cid == self.prev:
            raise DecodeError(f"an update of {self.path} must change its record")

    def to_value(self) -> Value:
        return {
            "action": self.action,
            "cid": None if self.cid is None else self.cid.to_bytes(),
            "path": self.path,
            "prev": None if self.prev is None else self.prev.to_bytes(),
        }

    @classmethod
    def from_value(cls, value: Value) -> RepoOp:
        if type(value) is not dict or list(value) != _OP_FIELDS:
            raise DecodeError(f"op must be a map of exactly {_OP_FIELDS} in order")
        d = value
        action = d["action"]
        path = _str_field(d, "path")
        assert path is not None
        if action not in _ACTIONS:
            raise DecodeError(f"unknown op action {action!r}")
        try:
            validate_key(path)
        except RepoError as e:
            raise DecodeError(f"op path: {e.message}") from e
        return cls(
            action=action,  # type: ignore[arg-type]
            path=path,
            cid=_cid_field(d, "cid", nullable=True),
            prev=_cid_field(d, "prev", nullable=True),
        )


@dataclass(frozen=True, slots=True)
class CommitEvent:
    """A commit with the ops and blocks that let a receiver verify it inductively."""

    repo: str
    rev: str
    since: str | None
    commit: CID
    ops: tuple[RepoOp, ...]
    blocks: tuple[bytes, ...] = field(repr=False)
    prev_data: CID
    time: str

    def to_value(self) -> dict[str, Value]:
        return {
            "blocks": list(self.blocks),
            "commit": self.commit.to_bytes(),
            "ops": [op.to_value() for op in self.ops],
            "prevData": self.prev_data.to_bytes(),
            "repo": self.repo,
            "rev": self.rev,
            "since": self.since,
            "time": self.time,
        }

    def to_bytes(self) -> bytes:
        return encode(self.to_value())

    @classmethod
    def from_value(cls, value: Value) -> CommitEvent:
        if type(value) is not dict:
            raise DecodeError("commit event must be a map")
        keys = list(value)
        if keys != _EVENT_FIELDS and keys != _EVENT_FIELDS_SEQ:
            raise DecodeError(f"commit event must be a map of exactly {_EVENT_FIELDS} in order")
        d = value
        if "seq" in d and (type(d["seq"]) is not int or not 0 <= d["seq"] <= 2**63 - 1):
            raise DecodeError("'seq' must be an integer from 0 to 2^63-1")
        blocks, ops = d["blocks"], d["ops"]
        if type(blocks) is not list or not _BYTES_ONLY.issuperset(map(type, blocks)):
            raise DecodeError("'blocks' must be a list of byte strings")
        if type(ops) is not list:
            raise DecodeError("'ops' must be a list")
        if len(ops) > MAX_OPS:
            raise InvalidCommit(f"more than {MAX_OPS} ops in one commit")
        commit = _cid_field(d, "commit")
        prev_data = _cid_field(d, "prevData")
        repo = _str_field(d, "repo")
        rev = _str_field(d, "rev")
        time = _str_field(d, "time")
        assert commit
        assert prev_data
        assert repo
        assert rev
        assert time is not None
        since = _str_field(d, "since", nullable=True)
        try:
            validate_did(repo)
            validate_tid(rev)
            if since is not None:
                validate_tid(since)
            validate_datetime(time)
        except InvalidSyntax as e:
            raise DecodeError(f"commit event: {e.message}") from e
        return cls(
            repo=repo,
            rev=rev,
            since=since,
            commit=commit,
            ops=tuple(map(RepoOp.from_value, ops)),
            blocks=tuple(blocks),  # type: ignore[arg-type]
            prev_data=prev_data,
            time=time,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> CommitEvent:
        # Minimal encoding from decode_unchecked; key order and exact types from
        # from_value: together, one byte form per event.
        return cls.from_value(decode_unchecked(data))

    def block_map(self) -> dict[CID, bytes]:
        return self.hashed_blocks().to_dict()

    def hashed_blocks(self) -> HashedBlocks:
        """The blocks by CID; InvalidCommit if they exceed :data:`MAX_BLOCKS_BYTES`."""
        total = sum(map(len, self.blocks))
        if total > MAX_BLOCKS_BYTES:
            raise InvalidCommit(f"commit blocks exceed {MAX_BLOCKS_BYTES} bytes")
        return HashedBlocks(self.blocks)


def invert_ops(tree: MST, ops: Sequence[RepoOp]) -> MST:
    """Check that ``tree`` holds what ``ops`` say and return the tree before them."""
    seen: set[str] = set()
    for op in ops:
        if op.path in seen:
            raise InvalidCommit(f"two ops touch {op.path}")
        seen.add(op.path)
        if tree.get(op.path) != op.cid:
            raise InvalidCommit(f"tree does not hold the {op.action} of {op.path}")
    for op in reversed(ops):
        if op.action == "create":
            tree = tree.delete(op.path)
        else:
            assert op.prev is not None
            tree = tree.set(op.path, op.prev)
    return tree


def blocks_for_ops(
    tree: MST, source: BlockSource | None, ops: Sequence[RepoOp]
) -> dict[CID, bytes]:
    """The nodes of ``tree`` that checking and inverting ``ops``, then checking the
    new tree's key ranges, reads: the tree part of a commit event's blocks. They are
    read from ``source``, or with None from the tree in memory (and its source)."""
    if source is None:
        after, read = tree.reloaded()
    else:
        recording = RecordingSource(source)
        after, read = MST.load(recording, tree.root()), recording.read
    after.verify_against(invert_ops(after, ops))
    return read


def verify_commit_event(
    event: CommitEvent,
    key: VerifyKey,
    *,
    prev_data: CID | None = None,
    prev_rev: str | None = None,
    prev_commit: CID | None = None,
) -> Commit:
    """Verify a commit event holding only the previous root (or nothing).

    On its own the event must be consistent with its signed ``prev``: ``since`` is
    null exactly when ``prev`` is, and then ``prevData`` is the empty tree's root.

    ``prev_data`` and ``prev_rev``, when the receiver holds the repo, must equal the
    event's ``prevData`` and ``since`` (neither is signed: the receiver's own state is
    what they are checked against). A mismatch is an InvalidCommit with error
    ``Desynchronized``. ``prev_commit`` is the CID of the held head: a commit signed
    on another ``prev`` is ``Desynchronized``; one signed on it must have ``since``
    and ``prevData`` equal to ``prev_rev`` and ``prev_data`` (given with it), or the
    unsigned fields were rewritten: a plain InvalidCommit. Returns the commit;
    raises InvalidCommit, InvalidSignature or DecodeError.
    """
    if len(event.ops) > MAX_OPS:
        raise InvalidCommit(f"more than {MAX_OPS} ops in one commit")
    blocks = event.hashed_blocks()
    commit_block = blocks.get_block(event.commit)
    if commit_block is None:
        raise InvalidCommit("the commit block is missing")
    commit = Commit.from_bytes(commit_block)
    if commit.did != event.repo:
        raise InvalidCommit("commit is for another repository")
    if commit.rev != event.rev:
        raise InvalidCommit("commit rev differs from the event's rev")
    if event.since is None:
        if commit.prev is not None:
            raise InvalidCommit("since is null but the commit is signed on a previous commit")
        if event.prev_data != EMPTY_TREE:
            raise InvalidCommit("a first commit's prevData must be the empty tree")
    else:
        if commit.prev is None:
            raise InvalidCommit("since is set but the commit is signed as a first commit")
        if not event.since < event.rev:
            raise InvalidCommit("rev must be greater than since")
    commit.verify(key)
    if prev_commit is not None:
        if commit.prev != prev_commit:
            raise InvalidCommit("the commit is not signed on the held head", error="Desynchronized")
        if event.since != prev_rev or event.prev_data != prev_data:
            raise InvalidCommit("since or prevData disagree with the commit signed as prev")
    if prev_data is not None and prev_data != event.prev_data:
        raise InvalidCommit("prevData is not the root this node holds", error="Desynchronized")
    if prev_rev is not None and prev_rev != event.since:
        raise InvalidCommit("since is not the rev this node holds", error="Desynchronized")
    for op in event.ops:
        if op.cid is not None:
            block = blocks.get_block(op.cid)
            if block is None:
                raise InvalidCommit(f"record block for {op.path} is missing")
            if len(block) > MAX_RECORD_BYTES:
                raise InvalidCommit(f"record {op.path} exceeds {MAX_RECORD_BYTES} bytes")
    try:
        after = MST.load(blocks, commit.data)
        before = invert_ops(after, event.ops)
        if before.root() != event.prev_data:
            raise InvalidCommit("inverting the ops does not give prevData")
        # prevData is canonical (held, or the empty tree): check the new tree's key
        # ranges against it where they differ (§7.4, §9.4 step 13).
        after.verify_against(before)
    except MissingBlock as e:
        raise InvalidCommit(f"blocks are incomplete: {e.message}") from e
    return commit
