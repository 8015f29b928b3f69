"""Ingest rules: what a node does with a commit or repo snapshot from elsewhere.

Every path by which another node's data arrives (eager push, a fetched snapshot, an
import) goes through these rules, so every node judges the same input the same way:

* the commit is signed by the signing key of the DID's *current* identity state;
* its rev is a TID no more than :data:`MAX_FUTURE_MICROS` (5 minutes) ahead of the
  receiver's clock (a later one is dropped, not stored, as atproto relays do);
* a commit event must chain: its commit signed on the held head (``prev``), with
  ``since`` equal to the held head's rev and ``prevData`` equal to its tree root (an
  event signed on the held head whose unsigned ``since``/``prevData`` say otherwise
  was rewritten, and is refused). A gap marks the repo desynchronized and asks for a
  resync; events for other repos keep flowing;
* a node that holds nothing takes only a first commit (``prev`` null) from an event;
  anything later needs the whole tree, from a snapshot;
* the head of a repo is the greatest by **(rev, then lower commit CID)** of all the
  heads a node has seen. That one rule settles equivocation identically on every
  node, whatever order the commits arrive in, and makes reconciliation a simple max:
  the side with the lesser head fetches;
* equivocation evidence rests on signed data only: two commits signed for one DID
  that cannot both be on one chain (the same signed ``prev``, or the same ``rev``).
  :func:`check_equivocation` re-verifies a stored pair.

The functions here decide; the IO shell stores. Invalid input raises our errors
(the peer that sent it is at fault); everything else is a :class:`Verdict`.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal

from .cid import CID
from .commit import Commit, CommitEvent, verify_commit_event
from .errors import (
    DecodeError,
    InvalidCommit,
    InvalidRecord,
    InvalidSignature,
    InvalidSyntax,
    RemoteProtocolError,
    RepoError,
    SkyfedError,
)
from .keys import verify_key
from .mst import MST, BlockSource, MissingBlock
from .syntax import tid_to_parts

__all__ = [
    "MAX_FUTURE_MICROS",
    "Checked",
    "Evidence",
    "HeadState",
    "Judgement",
    "Verdict",
    "check_equivocation",
    "check_tree_complete",
    "decide_event",
    "equivocation_between",
    "head_wins",
    "judge_event",
    "judge_snapshot",
    "rev_micros",
    "verified_commit",
    "verify_event",
    "verify_events",
]

MAX_FUTURE_MICROS = 5 * 60 * 1_000_000


class Verdict(enum.Enum):
    APPLY = "apply"  # extends the held head: store it and pass it on
    DUPLICATE = "duplicate"  # already the head
    STALE = "stale"  # loses to the held head: drop (maybe record equivocation)
    SWITCH = "switch"  # a sibling of the held head that wins: rebuild on its parent
    GAP = "gap"  # newer but does not chain: the repo needs a resync
    FUTURE = "future"  # rev too far ahead of our clock: drop


#: Why two signed commits cannot both be on one chain.
Evidence = Literal["same-prev", "same-rev"]


@dataclass(frozen=True, slots=True)
class HeadState:
    """What a node holds for a repo: its head commit and where it came from.

    ``prev`` is the head commit's signed ``prev``; ``since`` the rev of that commit
    when the node knows it (None for a first commit, "" when unknown: a snapshot)."""

    head: CID
    rev: str
    data: CID
    since: str | None
    prev: CID | None


@dataclass(frozen=True, slots=True)
class Judgement:
    verdict: Verdict
    commit: Commit
    #: Set when the event's commit and the held head are two different commits the
    #: author signed that cannot both be on one chain (see :func:`check_equivocation`).
    evidence: Evidence | None = None

    @property
    def equivocation(self) -> bool:
        return self.evidence is not None


def rev_micros(rev: str) -> int:
    return tid_to_parts(rev)[0]


def head_wins(rev_a: str, cid_a: CID, rev_b: str, cid_b: CID) -> bool:
    """Does head A beat head B? Higher rev wins; equal revs: the lower CID."""
    if rev_a != rev_b:
        return rev_a > rev_b
    return cid_a.to_bytes() < cid_b.to_bytes()


def equivocation_between(commit: Commit, cid: CID, held: HeadState) -> Evidence | None:
    """Do ``commit`` (with CID ``cid``) and the held head prove equivocation? Only
    signed fields are compared; both commits must already be verified."""
    if cid == held.head:
        return None
    if commit.prev == held.prev:
        return "same-prev"
    if commit.rev == held.rev:
        return "same-rev"
    return None


def judge_event(
    event: CommitEvent,
    *,
    signing_key: str,
    held: HeadState | None,
    now_micros: int,
) -> Judgement:
    """Verify ``event`` (signature by ``signing_key``, inductive proof) and decide.

    Raises InvalidCommit / InvalidSignature / DecodeError for a bad event, including
    one whose unsigned ``since``/``prevData`` contradict what its signed ``prev``
    names. The same as :func:`verify_event` then :func:`decide_event`."""
    return decide_event(event, verify_event(event, signing_key), held=held, now_micros=now_micros)


def verify_event(event: CommitEvent, signing_key: str) -> Commit:
    """The half of judging that depends only on the event and the key: its commit
    is signed by ``signing_key`` and its blocks prove the ops inductively. Returns
    the commit; raises as :func:`judge_event` does."""
    return verify_commit_event(event, verify_key(signing_key))


#: What :func:`verify_events` says of one event: the index in ``event.blocks`` of the
#: commit block it verified, or the error it raised (class name, message, XRPC error).
Checked = int | tuple[str, str, str]

#: Errors :func:`verify_events` may answer, by name (anything else it raises whole).
_REMOTE_ERRORS: dict[str, type[RemoteProtocolError]] = {
    cls.__name__: cls
    for cls in (
        DecodeError,
        InvalidCommit,
        InvalidRecord,
        InvalidSignature,
        InvalidSyntax,
        RepoError,
    )
}


def verify_events(items: Sequence[tuple[bytes, str]]) -> list[Checked]:
    """:func:`verify_event` for each ``(event bytes, signing key)``, for a worker
    process (bytes in, plain values out: one call per batch keeps pickling cheap).

    The answer is about those exact bytes and that key only: the caller, holding the
    same bytes, gets the commit back with :func:`verified_commit`, and must judge
    again if the DID's key is no longer the one it passed."""
    out: list[Checked] = []
    for data, signing_key in items:
        try:
            event = CommitEvent.from_bytes(data)
            verify_event(event, signing_key)
        except SkyfedError as e:
            name = type(e).__name__ if type(e).__name__ in _REMOTE_ERRORS else "InvalidCommit"
            message = getattr(e, "message", str(e))
            error = getattr(e, "error", "InvalidCommit")
            out.append((name, message, error))
            continue
        block = event.block_map()[event.commit]  # there: verify_event checked it
        out.append(event.blocks.index(block))
    return out


def verified_commit(event: CommitEvent, checked: Checked) -> Commit:
    """The commit :func:`verify_events` verified in ``event`` (parsed from the bytes it
    was given), or its error raised again."""
    if isinstance(checked, tuple):
        name, message, error = checked
        raise _REMOTE_ERRORS[name](message, error=error)
    return Commit.from_bytes(event.blocks[checked])


def decide_event(
    event: CommitEvent,
    commit: Commit,
    *,
    held: HeadState | None,
    now_micros: int,
) -> Judgement:
    """The half of judging that depends on the held head: ``commit`` must be what
    :func:`verify_event` returned for ``event`` with the DID's current key."""
    if rev_micros(commit.rev) > now_micros + MAX_FUTURE_MICROS:
        return Judgement(Verdict.FUTURE, commit)
    if held is None:
        # Only a first commit proves its whole tree (prevData is the empty tree, so
        # inverting the ops visits every node and record); any other needs a snapshot.
        verdict = Verdict.APPLY if commit.prev is None else Verdict.GAP
        return Judgement(verdict, commit)
    if event.commit == held.head:
        return Judgement(Verdict.DUPLICATE, commit)
    if commit.prev == held.head:
        if event.since != held.rev or event.prev_data != held.data:
            raise InvalidCommit("since or prevData disagree with the commit signed as prev")
        return Judgement(Verdict.APPLY, commit)
    evidence = equivocation_between(commit, event.commit, held)
    if evidence == "same-prev" and held.since != "" and event.since != held.since:
        # Both are signed on one commit, so both must name its rev.
        raise InvalidCommit("since disagrees with the rev of the commit signed as prev")
    if not head_wins(commit.rev, event.commit, held.rev, held.head):
        return Judgement(Verdict.STALE, commit, evidence)
    if evidence is not None:
        return Judgement(Verdict.SWITCH, commit, evidence)
    return Judgement(Verdict.GAP, commit)


def check_equivocation(first: bytes, second: bytes, *, signing_keys: Collection[str]) -> Evidence:
    """Re-verify stored evidence: two commit blocks for one DID, each signed by one of
    ``signing_keys`` (the DID's signing keys), that cannot both be on one chain.
    Returns why; raises InvalidCommit (or DecodeError, InvalidSignature) if they
    prove nothing."""
    a, b = Commit.from_bytes(first), Commit.from_bytes(second)
    if a.did != b.did:
        raise InvalidCommit("the two commits are for different repositories")
    for c in (a, b):
        if not any(_signed_by(c, k) for k in signing_keys):
            raise InvalidSignature("a commit is not signed by any of the signing keys given")
    evidence = equivocation_between(a, a.cid, HeadState(b.cid, b.rev, b.data, "", b.prev))
    if evidence is None:
        raise InvalidCommit("the two commits can be on one chain")
    return evidence


def _signed_by(commit: Commit, did_key: str) -> bool:
    try:
        commit.verify(verify_key(did_key))
    except InvalidSignature:
        return False
    return True


def check_tree_complete(source: BlockSource, commit: Commit) -> int:
    """Every node of ``commit``'s tree and every record it names must be in
    ``source``, in canonical structure: what a node checks before it first calls a
    repo held. Returns the number of records; raises InvalidCommit (MissingBlock)."""
    tree = MST.load(source, commit.data)
    count = tree.verify_structure()
    for _, cid in tree.items():
        if source.get_block(cid) is None:
            raise MissingBlock(cid)
    return count


def judge_snapshot(
    commit: Commit, commit_cid: CID, *, signing_key: str, held: HeadState | None, now_micros: int
) -> Verdict:
    """A whole-repo (or since-a-rev) snapshot headed by ``commit``: apply it only if
    its head beats the held one. The caller checks the tree itself."""
    commit.verify(verify_key(signing_key))
    if rev_micros(commit.rev) > now_micros + MAX_FUTURE_MICROS:
        return Verdict.FUTURE
    if held is None:
        return Verdict.APPLY
    if commit_cid == held.head:
        return Verdict.DUPLICATE
    if head_wins(commit.rev, commit_cid, held.rev, held.head):
        return Verdict.SWITCH
    return Verdict.STALE
