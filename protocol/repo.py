"""A repository: the tree of an account's records and its signed head commit.

:class:`Repo` is a value. :meth:`Repo.apply_writes` checks a batch of writes against
the current tree, builds the new tree, signs the commit and returns a
:class:`CommitResult` with every new block to store and the :class:`CommitEvent` to
publish; the caller (the IO shell) stores the blocks atomically and only then treats
the result as the new head. The caller passes in the rev (a TID from its clock) and
the time, so this module reads no clock.

An update that leaves a record as it was makes no op (an op must change the tree,
§9.1), so a commit may carry fewer ops than writes: :attr:`CommitResult.written`
says what each write left at its path.

Refuses: a create where a record exists, an update or delete where none does, two
writes to one path in one batch, more than :data:`~protocol.commit.MAX_OPS` writes,
records over 1 MB, records that break their lexicon, a rev not above the head's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .cid import CID, cid_for_msgpack
from .commit import (
    MAX_OPS,
    MAX_RECORD_BYTES,
    Action,
    Commit,
    CommitEvent,
    RepoOp,
    blocks_for_ops,
)
from .encoding import encode
from .errors import InvalidRecord, LocalProtocolError, RepoError
from .keys import SigningKey
from .mst import MST, BlockSource
from .records import validate_record
from .syntax import validate_nsid, validate_record_key

__all__ = ["CommitResult", "Repo", "Write"]


@dataclass(frozen=True, slots=True)
class Write:
    """One requested change. ``record`` is required for create and update."""

    action: Action
    collection: str
    rkey: str
    record: Mapping[str, Any] | None = None

    @property
    def path(self) -> str:
        return f"{self.collection}/{self.rkey}"


@dataclass(frozen=True, slots=True)
class CommitResult:
    """What a write produced: store ``blocks``, then publish ``event``."""

    repo: Repo
    commit: Commit
    commit_cid: CID
    ops: tuple[RepoOp, ...]
    blocks: dict[CID, bytes] = field(repr=False)
    event: CommitEvent = field(repr=False)
    #: Per write, in order: the record CID at its path afterwards (None: deleted).
    written: tuple[CID | None, ...] = ()


@dataclass(frozen=True, slots=True)
class Repo:
    """An account's repository at one commit."""

    did: str
    tree: MST
    commit: Commit
    commit_cid: CID

    @classmethod
    def create(
        cls,
        did: str,
        key: SigningKey,
        *,
        rev: str,
        time: str,
        source: BlockSource | None = None,
    ) -> CommitResult:
        """The first commit of a new repository: an empty tree."""
        tree = MST.empty(source)
        empty = tree.root()
        commit = Commit.sign(did, empty, rev, key, prev=None)
        commit_block = commit.to_bytes()
        commit_cid = cid_for_msgpack(commit_block)
        blocks = dict(tree.new_blocks())
        blocks[commit_cid] = commit_block
        event = CommitEvent(
            repo=did,
            rev=rev,
            since=None,
            commit=commit_cid,
            ops=(),
            blocks=(commit_block, *tree.new_blocks().values()),
            prev_data=empty,
            time=time,
        )
        repo = cls(did, tree, commit, commit_cid)
        return CommitResult(repo, commit, commit_cid, (), blocks, event)

    @classmethod
    def load(cls, source: BlockSource, commit_cid: CID) -> Repo:
        block = source.get_block(commit_cid)
        if block is None:
            raise RepoError(f"commit block {commit_cid} is missing", error="RepoNotFound")
        commit = Commit.from_bytes(block)
        return cls(commit.did, MST.load(source, commit.data), commit, commit_cid)

    @property
    def rev(self) -> str:
        return self.commit.rev

    def get(self, collection: str, rkey: str) -> CID | None:
        return self.tree.get(f"{collection}/{rkey}")

    def apply_writes(
        self,
        writes: Sequence[Write],
        key: SigningKey,
        *,
        rev: str,
        time: str,
        validate: bool = True,
    ) -> CommitResult:
        """Apply ``writes`` atomically and sign the new commit with ``key``."""
        if len(writes) > MAX_OPS:
            raise RepoError(f"at most {MAX_OPS} writes per commit")
        if not rev > self.commit.rev:
            raise LocalProtocolError(f"rev {rev} is not above the head's {self.commit.rev}")
        tree = self.tree
        ops: list[RepoOp] = []
        written: list[CID | None] = []
        record_blocks: dict[CID, bytes] = {}
        seen: set[str] = set()
        for i, w in enumerate(writes):
            validate_nsid(w.collection)
            validate_record_key(w.rkey)
            path = w.path
            if path in seen:
                raise RepoError(f"writes[{i}]: {path} is written twice in one batch")
            seen.add(path)
            prev = tree.get(path)
            if w.action == "delete":
                if prev is None:
                    raise RepoError(f"no record at {path}", error="RecordNotFound")
                tree = tree.delete(path)
                ops.append(RepoOp("delete", path, None, prev))
                written.append(None)
                continue
            if w.record is None:
                raise InvalidRecord("a record is required", field=f"writes[{i}].record")
            record = dict(w.record)
            if validate:
                validate_record(w.collection, record, w.rkey)
            try:
                block = encode(record)
            except LocalProtocolError as e:
                raise InvalidRecord(str(e), field=f"writes[{i}].record") from e
            if len(block) > MAX_RECORD_BYTES:
                raise InvalidRecord(
                    f"must be at most {MAX_RECORD_BYTES} bytes encoded", field="record"
                )
            cid = cid_for_msgpack(block)
            written.append(cid)
            if w.action == "update" and cid == prev:
                continue  # the record is already this: no change, no op
            record_blocks[cid] = block
            if w.action == "create":
                if prev is not None:
                    raise RepoError(f"a record exists at {path}", error="RecordAlreadyExists")
                ops.append(RepoOp("create", path, cid, None))
            elif w.action == "update":
                if prev is None:
                    raise RepoError(f"no record at {path}", error="RecordNotFound")
                ops.append(RepoOp("update", path, cid, prev))
            else:  # pragma: no cover - Write.action is typed
                raise RepoError(f"unknown action {w.action!r}")
            tree = tree.set(path, cid)

        # Only what this commit built: the nodes of earlier commits are stored already.
        new_nodes = tree.new_blocks(since=self.tree)
        commit = Commit.sign(self.did, tree.root(), rev, key, prev=self.commit_cid)
        commit_block = commit.to_bytes()
        commit_cid = cid_for_msgpack(commit_block)
        blocks = {**new_nodes, **record_blocks, commit_cid: commit_block}

        # The event carries exactly the nodes a receiver's inversion reads.
        needed = blocks_for_ops(tree, None, ops)
        op_records = [record_blocks[op.cid] for op in ops if op.cid is not None]
        event = CommitEvent(
            repo=self.did,
            rev=rev,
            since=self.commit.rev,
            commit=commit_cid,
            ops=tuple(ops),
            blocks=(commit_block, *op_records, *needed.values()),
            prev_data=self.commit.data,
            time=time,
        )
        repo = Repo(self.did, tree, commit, commit_cid)
        return CommitResult(
            repo, commit, commit_cid, tuple(ops), blocks, event, written=tuple(written)
        )
