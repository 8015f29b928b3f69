"""atproto signed commits and their verification, as a Sync 1.1 relay does it.

A **commit** (repository spec, version 3) is the DAG-CBOR map ``{did, version: 3,
data, rev, prev, sig}``: ``data`` is the CID of the MST root, ``rev`` a TID,
``prev`` a CID or null (kept for compatibility, not checked), ``sig`` the compact
low-S ECDSA signature by the account's ``#atproto`` key over the DAG-CBOR encoding
of the same map without ``sig``.

:func:`verify_commit_event` checks a ``#commit`` message on its own, with nothing
but the account's signing key (the relay's "inductive" check; see the docstring for
the full list). :func:`chain_status` compares an event with the last commit the
caller holds for the repo (``rev`` / ``data``) and says whether it extends it, is
stale, or shows a gap (then the caller resynchronises with ``getRepo``).
:func:`verify_sync_event` checks a ``#sync`` message; :func:`verify_repo` a whole
repository export (``com.atproto.sync.getRepo``).

:func:`build_commit_event` makes a signed event with its proof the way a PDS does
(for tests, vectors and benchmarks); :func:`proof_blocks` is the set of tree nodes
such an event must carry.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from ..errors import DecodeError, InvalidCommit, InvalidSyntax, LocalProtocolError, RepoError
from ..syntax import validate_did, validate_tid
from . import dagcbor
from .car import Car, read_car, write_car
from .cid import CID, CODEC_DAG_CBOR, cid_for_dag_cbor
from .crypto import PublicKey, SigningKey
from .firehose import MAX_EVENT_BLOCKS, CommitEvent, RepoOp, SyncEvent
from .mst import MST, MissingBlock

__all__ = [
    "MAX_COMMIT",
    "MAX_REPO",
    "ChainStatus",
    "Commit",
    "VerifiedCommit",
    "build_commit_event",
    "chain_status",
    "proof_blocks",
    "verify_commit_event",
    "verify_repo",
    "verify_sync_event",
]

#: Bound on a commit block (a commit is a few hundred bytes).
MAX_COMMIT = 10_000
#: Default bound on a repository export read by :func:`verify_repo`.
MAX_REPO = 1024 * 1024 * 1024
_FIELDS = frozenset({"did", "version", "data", "rev", "prev", "sig"})
_EMPTY_ROOT = MST.empty().root_cid()


@dataclass(frozen=True, slots=True)
class Commit:
    """A signed (or, with ``sig == b""``, not yet signed) version-3 commit."""

    did: str
    data: CID
    rev: str
    prev: CID | None = None
    sig: bytes = b""
    version: int = 3

    def unsigned_bytes(self) -> bytes:
        """The bytes the signature covers: the commit map without ``sig``."""
        return dagcbor.encode(
            {
                "did": self.did,
                "version": self.version,
                "data": self.data,
                "rev": self.rev,
                "prev": self.prev,
            },
            trusted=True,
        )

    def to_bytes(self) -> bytes:
        return dagcbor.encode(
            {
                "did": self.did,
                "version": self.version,
                "data": self.data,
                "rev": self.rev,
                "prev": self.prev,
                "sig": self.sig,
            }
        )

    def cid(self) -> CID:
        return cid_for_dag_cbor(self.to_bytes())

    @classmethod
    def from_bytes(cls, block: bytes) -> Commit:
        """Parse a commit block strictly (exact fields, version 3, valid DID and TID)."""
        value = dagcbor.decode(block, max_size=MAX_COMMIT, shape_checked=True)
        if not isinstance(value, dict) or set(value) != _FIELDS:
            raise InvalidCommit("commit must be exactly {did, version, data, rev, prev, sig}")
        did, version, data = value["did"], value["version"], value["data"]
        rev, prev, sig = value["rev"], value["prev"], value["sig"]
        if type(version) is not int or version != 3:
            raise InvalidCommit("only version 3 commits are accepted")
        if not isinstance(did, str) or not isinstance(rev, str):
            raise InvalidCommit("commit did and rev must be strings")
        if not isinstance(data, CID) or data.codec != CODEC_DAG_CBOR:
            raise InvalidCommit("commit data must be a dag-cbor CID")
        if prev is not None and not isinstance(prev, CID):
            raise InvalidCommit("commit prev must be a CID or null")
        if not isinstance(sig, bytes):
            raise InvalidCommit("commit sig must be bytes")
        try:
            validate_did(did)
            validate_tid(rev)
        except InvalidSyntax as e:
            raise InvalidCommit(f"commit: {e.message}") from e
        return cls(did, data, rev, prev, sig)

    def verify(self, key: PublicKey) -> None:
        """Raise :class:`InvalidSignature` unless ``sig`` is ``key``'s over the commit."""
        key.verify(self.sig, self.unsigned_bytes())

    def signed(self, key: SigningKey) -> Commit:
        return Commit(self.did, self.data, self.rev, self.prev, key.sign(self.unsigned_bytes()))


@dataclass(frozen=True, slots=True)
class VerifiedCommit:
    """What a verified ``#commit`` proved.

    ``records`` holds the record block of every create and update by path (each
    already checked against its CID); ``tree`` is the new tree, partial (only the
    nodes the event carried), usable for :meth:`~.mst.MST.get` on the changed paths.
    """

    commit: Commit
    cid: CID
    ops: tuple[RepoOp, ...]
    records: dict[str, bytes] = field(repr=False)
    tree: MST = field(repr=False)


def _commit_from_car(car: Car, cid: CID, did: str, rev: str, key: PublicKey) -> Commit:
    if car.root != cid:
        raise InvalidCommit("the CAR's root is not the event's commit")
    block = car.blocks.get(cid)
    if block is None:
        raise InvalidCommit("the CAR does not hold the commit block")
    try:
        commit = Commit.from_bytes(block)
    except DecodeError as e:
        raise InvalidCommit(f"commit block: {e.message}") from e
    if commit.did != did:
        raise InvalidCommit("the commit is for another DID than the event names")
    if commit.rev != rev:
        raise InvalidCommit("the commit's rev is not the event's rev")
    commit.verify(key)
    return commit


def _check_ops(ops: tuple[RepoOp, ...], require_prev: bool) -> None:
    seen: set[str] = set()
    for op in ops:
        if op.path in seen:
            raise InvalidCommit(f"two ops on {op.path}")
        seen.add(op.path)
        if op.action == "create":
            if op.cid is None or op.prev is not None:
                raise InvalidCommit(f"create {op.path}: needs cid and no prev")
        elif op.action == "update":
            if op.cid is None or (require_prev and op.prev is None):
                raise InvalidCommit(f"update {op.path}: needs cid and prev")
            if op.cid == op.prev:
                # A no-op the proof cannot see: anyone between the PDS and us could
                # add one for any record and consumers would index a fake update.
                raise InvalidCommit(f"update {op.path}: cid equals prev")
        elif op.cid is not None or (require_prev and op.prev is None):
            raise InvalidCommit(f"delete {op.path}: needs prev and no cid")


def verify_commit_event(
    event: CommitEvent, key: PublicKey, *, require_proof: bool = True
) -> VerifiedCommit:
    """Verify a ``#commit`` as a Sync 1.1 relay does; raise on the first failure.

    Checked, in order (:class:`InvalidCommit` unless noted):

    1. ``tooBig`` and ``rebase`` are false (both are retired in Sync 1.1), ``since``
       (if any) is before ``rev``, and ``blocks`` is within bounds.
    2. ``blocks`` is a well-formed CAR whose every block hashes to its CID
       (:class:`~protocol.errors.DecodeError` otherwise), whose root is ``commit``
       and which holds the commit block.
    3. The commit is a strict v3 commit for ``repo`` with ``rev``, signed by ``key``
       (:class:`~protocol.errors.InvalidSignature` otherwise: the caller may
       re-resolve the DID once, as the key may have rotated).
    4. The ops: unique paths; a create has ``cid`` and no ``prev``; an update has
       ``cid`` and ``prev``, and they differ; a delete has ``prev`` and no ``cid``.
    5. In the new tree (``commit.data``, loaded only from the CAR), every created or
       updated path holds its ``cid`` and every deleted path is absent; the record
       block of every create and update is in the CAR.
    6. The **inductive proof**: undoing the ops on the new tree (delete what was
       created, put ``prev`` back for updates and deletes), with only the CAR's
       blocks, gives a tree whose root is ``prevData``. A tree node the undo needs
       that the CAR lacks fails the proof. A malformed or non-canonical tree node is
       a :class:`~protocol.errors.DecodeError`.

    A first commit (``since`` null) without ``prevData`` is proved against the
    empty tree: its ops must build the whole tree. ``require_proof=False`` accepts
    any other event without ``prevData`` (pre-1.1 hosts)
    after checks 1-5 only (and ``prev`` on updates and deletes is then optional).
    """
    if event.too_big or event.rebase:
        raise InvalidCommit("tooBig and rebase events are not accepted (Sync 1.1)")
    if event.since is not None and event.since >= event.rev:
        raise InvalidCommit("since must be an earlier rev than rev")
    if len(event.blocks) > MAX_EVENT_BLOCKS:
        raise InvalidCommit("the event's blocks are over-size")
    prev_data = event.prev_data
    if prev_data is None and event.since is None:
        prev_data = _EMPTY_ROOT  # a first commit builds its tree from nothing
    if prev_data is None and require_proof:
        raise InvalidCommit("no prevData: the event cannot be verified inductively")
    car = read_car(event.blocks, max_total=MAX_EVENT_BLOCKS)
    commit = _commit_from_car(car, event.commit, event.repo, event.rev, key)
    _check_ops(event.ops, require_prev=prev_data is not None)
    records: dict[str, bytes] = {}
    try:
        tree = MST.load(car.blocks, commit.data)
        for op in event.ops:
            if tree.get(op.path) != op.cid:
                raise InvalidCommit(f"{op.action} {op.path}: the new tree disagrees")
            if op.cid is not None:
                block = car.blocks.get(op.cid)
                if block is None:
                    raise InvalidCommit(f"{op.action} {op.path}: record block missing")
                records[op.path] = block
        if prev_data is not None:
            old = tree
            for op in event.ops:
                if op.action == "create":
                    old = old.delete(op.path)
                elif op.action == "update":
                    assert op.prev is not None
                    old = old.update(op.path, op.prev)
                else:
                    assert op.prev is not None
                    old = old.add(op.path, op.prev)
            if old.root_cid() != prev_data:
                raise InvalidCommit("undoing the ops does not give prevData")
    except MissingBlock as e:
        raise InvalidCommit(f"the proof is incomplete: {e.message}") from e
    except RepoError as e:
        raise InvalidCommit(f"the ops do not fit the tree: {e.message}") from e
    return VerifiedCommit(commit, event.commit, event.ops, records, tree)


class ChainStatus(enum.Enum):
    """How an event relates to the last commit the caller holds for its repo."""

    #: No earlier commit known, or ``since`` and ``prevData`` match the last one.
    NEXT = "next"
    #: ``rev`` is not after the last rev: a replay or an old event; drop it.
    STALE = "stale"
    #: ``since`` or ``prevData`` does not match: events were missed; resync the repo.
    GAP = "gap"


def chain_status(event: CommitEvent, last_rev: str | None, last_data: CID | None) -> ChainStatus:
    """Compare a (verified) event with the last commit held: its ``rev`` and its
    ``data``. Pure bookkeeping; the caller acts on the answer."""
    if last_rev is None:
        return ChainStatus.NEXT
    if event.rev <= last_rev:
        return ChainStatus.STALE
    if event.since != last_rev:
        return ChainStatus.GAP
    if last_data is not None and event.prev_data is not None and event.prev_data != last_data:
        return ChainStatus.GAP
    return ChainStatus.NEXT


def verify_sync_event(event: SyncEvent, key: PublicKey) -> Commit:
    """Verify a ``#sync``: its CAR holds exactly the signed commit for ``did`` at
    ``rev`` (root = that commit). The caller then compares ``commit.data`` with
    what it holds and fetches the repo if they differ."""
    car = read_car(event.blocks, max_total=MAX_EVENT_BLOCKS, max_blocks=1)
    return _commit_from_car(car, car.root, event.did, event.rev, key)


def verify_repo(
    data: bytes, did: str, key: PublicKey, *, max_total: int = MAX_REPO, max_blocks: int = 10**7
) -> tuple[Commit, dict[str, tuple[CID, bytes]]]:
    """Verify a whole repository export: CAR (every block hashed), signed commit
    for ``did``, a complete and canonical tree, and every record present. Returns
    the commit and ``{path: (record CID, record block)}``."""
    car = read_car(data, max_total=max_total, max_blocks=max_blocks)
    block = car.blocks.get(car.root)
    if block is None:
        raise InvalidCommit("the CAR does not hold its root commit")
    commit = Commit.from_bytes(block)
    if commit.did != did:
        raise InvalidCommit("the repo's commit is for another DID")
    commit.verify(key)
    records: dict[str, tuple[CID, bytes]] = {}
    try:
        for path, cid in MST.load(car.blocks, commit.data).walk():
            record = car.blocks.get(cid)
            if record is None:
                raise InvalidCommit(f"record {path} is missing from the repo")
            records[path] = (cid, record)
    except MissingBlock as e:
        raise InvalidCommit(f"the repo's tree is incomplete: {e.message}") from e
    return commit, records


class _Recording(Mapping[CID, bytes]):
    """A block map that remembers which blocks were read."""

    def __init__(self, blocks: Mapping[CID, bytes]):
        self.blocks = blocks
        self.read: set[CID] = set()

    def __getitem__(self, cid: CID) -> bytes:
        block = self.blocks[cid]
        self.read.add(cid)
        return block

    def __iter__(self) -> Iterator[CID]:
        return iter(self.blocks)

    def __len__(self) -> int:
        return len(self.blocks)


def proof_blocks(new_tree: MST, ops: tuple[RepoOp, ...]) -> dict[CID, bytes]:
    """The nodes of ``new_tree`` that checking ``ops`` needs (what a PDS must put
    in the event's CAR besides the commit and the records): every node read while
    finding the changed paths and undoing the ops."""
    blocks = new_tree.blocks()
    store = _Recording(blocks)
    tree = MST.load(store, new_tree.root_cid())
    store.read.add(new_tree.root_cid())
    for op in ops:
        tree.get(op.path)
    for op in ops:
        if op.action == "create":
            tree = tree.delete(op.path)
        elif op.action == "update":
            assert op.prev is not None
            tree = tree.update(op.path, op.prev)
        else:
            assert op.prev is not None
            tree = tree.add(op.path, op.prev)
    tree.root_cid()
    return {cid: blocks[cid] for cid in store.read}


def build_commit_event(
    *,
    key: SigningKey,
    did: str,
    old_tree: MST,
    ops: list[tuple[str, str, bytes | None]],
    rev: str,
    since: str | None,
    seq: int,
    time: str,
) -> tuple[CommitEvent, MST]:
    """Apply ``ops`` (``(action, path, record block or None)``) to ``old_tree``,
    sign the new commit and return the ``#commit`` event (with ``prevData`` and the
    proof) and the new tree. For tests, vectors and benchmarks."""
    tree = old_tree
    repo_ops: list[RepoOp] = []
    records: dict[CID, bytes] = {}
    for action, path, record in ops:
        prev = tree.get(path)
        cid = cid_for_dag_cbor(record) if record is not None else None
        if record is not None and cid is not None:
            records[cid] = record
        if action == "create":
            tree = tree.add(path, _need(cid))
        elif action == "update":
            tree = tree.update(path, _need(cid))
        else:
            tree = tree.delete(path)
        repo_ops.append(RepoOp(action, path, cid, prev))  # type: ignore[arg-type]
    commit = Commit(did, tree.root_cid(), rev, None).signed(key)
    commit_block = commit.to_bytes()
    commit_cid = cid_for_dag_cbor(commit_block)
    proof = proof_blocks(tree, tuple(repo_ops))
    car = write_car([commit_cid], [(commit_cid, commit_block), *proof.items(), *records.items()])
    event = CommitEvent(
        seq=seq,
        repo=did,
        commit=commit_cid,
        rev=rev,
        since=since,
        blocks=car,
        ops=tuple(repo_ops),
        time=time,
        prev_data=old_tree.root_cid(),
    )
    return event, tree


def _need(cid: CID | None) -> CID:
    if cid is None:
        raise LocalProtocolError("create and update need a record block")
    return cid
