"""Ingest rules: what a node does with a commit or repo snapshot from elsewhere.

Every path by which another node's data arrives (eager push, a fetched snapshot, an
import) goes through these rules, so every node judges the same input the same way:

* the commit is signed by the signing key of the DID's *current* identity state;
* its rev is a TID no more than :data:`MAX_FUTURE_MICROS` (5 minutes) ahead of the
  receiver's clock (a later one is dropped, not stored, as atproto relays do);
* a commit event must chain: ``since`` equal to the held head's rev and ``prevData``
  equal to its tree root. A gap marks the repo desynchronized and asks for a resync;
  events for other repos keep flowing;
* the head of a repo is the greatest by **(rev, then lower commit CID)** of all the
  heads a node has seen. That one rule settles equivocation (two different commits
  claiming the same ``since``) identically on every node, whatever order they arrive
  in, and makes reconciliation a simple max: the side with the lesser head fetches.

The functions here decide; the IO shell stores. Invalid input raises our errors
(the peer that sent it is at fault); everything else is a :class:`Verdict`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .cid import CID
from .commit import Commit, CommitEvent, verify_commit_event
from .keys import verify_key
from .syntax import tid_to_parts

__all__ = [
    "MAX_FUTURE_MICROS",
    "HeadState",
    "Judgement",
    "Verdict",
    "head_wins",
    "judge_event",
    "judge_snapshot",
    "rev_micros",
]

MAX_FUTURE_MICROS = 5 * 60 * 1_000_000


class Verdict(enum.Enum):
    APPLY = "apply"  # extends the held head: store it and pass it on
    DUPLICATE = "duplicate"  # already the head
    STALE = "stale"  # loses to the held head: drop (maybe record equivocation)
    SWITCH = "switch"  # a sibling of the held head that wins: rebuild on its parent
    GAP = "gap"  # newer but does not chain: the repo needs a resync
    FUTURE = "future"  # rev too far ahead of our clock: drop


@dataclass(frozen=True, slots=True)
class HeadState:
    """What a node holds for a repo: its head commit and where it came from."""

    head: CID
    rev: str
    data: CID
    since: str | None


@dataclass(frozen=True, slots=True)
class Judgement:
    verdict: Verdict
    commit: Commit
    #: True when the event and the held head are two different commits claiming the
    #: same ``since``: evidence an author signed conflicting histories.
    equivocation: bool = False


def rev_micros(rev: str) -> int:
    return tid_to_parts(rev)[0]


def head_wins(rev_a: str, cid_a: CID, rev_b: str, cid_b: CID) -> bool:
    """Does head A beat head B? Higher rev wins; equal revs: the lower CID."""
    if rev_a != rev_b:
        return rev_a > rev_b
    return cid_a.to_bytes() < cid_b.to_bytes()


def judge_event(
    event: CommitEvent,
    *,
    signing_key: str,
    held: HeadState | None,
    now_micros: int,
) -> Judgement:
    """Verify ``event`` (signature by ``signing_key``, inductive proof) and decide.

    Raises InvalidCommit / InvalidSignature / DecodeError for a bad event."""
    commit = verify_commit_event(event, verify_key(signing_key))
    if rev_micros(commit.rev) > now_micros + MAX_FUTURE_MICROS:
        return Judgement(Verdict.FUTURE, commit)
    if held is None:
        verdict = Verdict.APPLY if event.since is None else Verdict.GAP
        return Judgement(verdict, commit)
    if event.commit == held.head:
        return Judgement(Verdict.DUPLICATE, commit)
    sibling = event.since == held.since
    if event.since == held.rev and event.prev_data == held.data:
        return Judgement(Verdict.APPLY, commit)
    if not head_wins(commit.rev, event.commit, held.rev, held.head):
        return Judgement(Verdict.STALE, commit, equivocation=sibling)
    if sibling:
        return Judgement(Verdict.SWITCH, commit, equivocation=True)
    return Judgement(Verdict.GAP, commit)


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
