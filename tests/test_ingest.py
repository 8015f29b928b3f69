"""Tests for protocol.ingest: the verdicts on commit events and snapshots, and the head rule.

A small history is built with :class:`protocol.repo.Repo` from seeded keys::

    G ── A  ── B ── E (rev exactly 5 minutes ahead of "now")
    │          └─── F (rev 5 minutes + 1 µs ahead)
    ├─── A2   (signed on G like A, same rev: the lower CID wins)
    └─── A3   (signed on G like A, a later rev: wins on rev)

and every verdict path of :func:`judge_event` and :func:`judge_snapshot` is taken.
Property tests check that :func:`head_wins` is a strict total order, and that
ingesting competing heads in any order leaves every receiver on the same head.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.cid import CID, cid_for_msgpack
from protocol.commit import Commit, CommitEvent
from protocol.errors import InvalidCommit, InvalidSignature, InvalidSyntax
from protocol.ingest import (
    MAX_FUTURE_MICROS,
    HeadState,
    Verdict,
    head_wins,
    judge_event,
    judge_snapshot,
    rev_micros,
)
from protocol.mst import MemoryBlockStore
from protocol.repo import CommitResult, Repo, Write
from protocol.syntax import tid_from_parts

from .seeds import seeded_key

DID = "did:skyfed:ocrlxjjqgc2kmohyklx24khp"
KEY = seeded_key(3)
SIGNER = KEY.did_key()
OTHER = seeded_key(4).did_key()
BASE = 1_767_225_600_000_000
NOW = BASE + 3600 * 1_000_000
TIME = "2026-01-01T00:00:00.000Z"


def rev(seconds: int, clock: int = 7) -> str:
    return tid_from_parts(BASE + seconds * 1_000_000, clock)


def post(text: str) -> dict[str, object]:
    return {"$type": "app.bsky.feed.post", "text": text, "createdAt": TIME}


@dataclass(frozen=True)
class History:
    results: dict[str, CommitResult]

    def event(self, name: str) -> CommitEvent:
        return self.results[name].event

    def state(self, name: str) -> HeadState:
        r = self.results[name]
        return HeadState(r.commit_cid, r.commit.rev, r.commit.data, r.event.since, r.commit.prev)

    def commit(self, name: str) -> tuple[Commit, CID]:
        r = self.results[name]
        return r.commit, r.commit_cid


def build_history() -> History:
    store = MemoryBlockStore()
    results: dict[str, CommitResult] = {}
    created = Repo.create(DID, KEY, rev=rev(0), time=TIME, source=store)
    store.update(created.blocks)
    results["G"] = created

    def child(name: str, parent: str, at: str, text: str | None) -> None:
        writes = (
            [] if text is None else [Write("create", "app.bsky.feed.post", rev(1, 0), post(text))]
        )
        res = results[parent].repo.apply_writes(writes, KEY, rev=at, time=TIME)
        store.update(res.blocks)
        results[name] = res

    child("A", "G", rev(1), "A")
    child("A2", "G", rev(1), "A2")
    child("A3", "G", rev(2), "A3")
    child("B", "A", rev(3), None)
    child("E", "B", tid_from_parts(NOW + MAX_FUTURE_MICROS, 7), None)
    child("F", "B", tid_from_parts(NOW + MAX_FUTURE_MICROS + 1, 7), None)
    return History(results)


H = build_history()
# Which of the two same-rev siblings wins is fixed by their CIDs.
WIN, LOSE = (
    ("A", "A2")
    if H.results["A"].commit_cid.to_bytes() < H.results["A2"].commit_cid.to_bytes()
    else ("A2", "A")
)


def judge(
    event: str, held: str | None, *, key: str = SIGNER, now: int = NOW
) -> tuple[Verdict, bool]:
    j = judge_event(
        H.event(event),
        signing_key=key,
        held=None if held is None else H.state(held),
        now_micros=now,
    )
    assert j.commit.cid == H.event(event).commit
    return j.verdict, j.equivocation


# ---------------------------------------------------------------------------- judge_event


@pytest.mark.parametrize(
    ("event", "held", "verdict", "equivocation"),
    [
        pytest.param("G", None, Verdict.APPLY, False, id="apply-genesis"),
        pytest.param("A", "G", Verdict.APPLY, False, id="apply-extends"),
        pytest.param("B", "A", Verdict.APPLY, False, id="apply-empty-commit"),
        pytest.param("E", "B", Verdict.APPLY, False, id="apply-at-future-bound"),
        pytest.param("A", "A", Verdict.DUPLICATE, False, id="duplicate"),
        pytest.param("G", "G", Verdict.DUPLICATE, False, id="duplicate-genesis"),
        pytest.param("A", "B", Verdict.STALE, False, id="stale-ancestor"),
        pytest.param("G", "B", Verdict.STALE, False, id="stale-genesis"),
        pytest.param(LOSE, WIN, Verdict.STALE, True, id="stale-sibling-same-rev"),
        pytest.param("A", "A3", Verdict.STALE, True, id="stale-sibling-lower-rev"),
        pytest.param(WIN, LOSE, Verdict.SWITCH, True, id="switch-sibling-same-rev"),
        pytest.param("A3", "A", Verdict.SWITCH, True, id="switch-sibling-higher-rev"),
        pytest.param("A", None, Verdict.GAP, False, id="gap-nothing-held"),
        pytest.param("B", "G", Verdict.GAP, False, id="gap-missed-commit"),
        pytest.param("B", "A2", Verdict.GAP, False, id="gap-since-matches-prevdata-differs"),
        pytest.param("B", "A3", Verdict.GAP, False, id="gap-newer-cousin"),
        pytest.param("F", "B", Verdict.FUTURE, False, id="future"),
        pytest.param("F", None, Verdict.FUTURE, False, id="future-nothing-held"),
        pytest.param("F", "F", Verdict.FUTURE, False, id="future-even-if-duplicate"),
    ],
)
def test_judge_event(event: str, held: str | None, verdict: Verdict, equivocation: bool) -> None:
    assert judge(event, held) == (verdict, equivocation)


def test_future_bound_moves_with_the_clock() -> None:
    assert judge("F", "B", now=NOW + 1) == (Verdict.APPLY, False)
    assert judge("E", "B", now=NOW - 1) == (Verdict.FUTURE, False)


def test_prev_data_mismatch_with_matching_since_is_not_apply() -> None:
    # since equal to the held rev is not enough: the tree must be the held one too.
    # B is signed on the held head, so a tree that differs means a rewritten event.
    held = replace(H.state("A"), data=H.results["A2"].commit.data)
    with pytest.raises(InvalidCommit, match="signed as prev"):
        judge_event(H.event("B"), signing_key=SIGNER, held=held, now_micros=NOW)


def test_wrong_signing_key_is_refused() -> None:
    with pytest.raises(InvalidSignature):
        judge("A", "G", key=OTHER)


def test_signature_is_checked_before_the_future_bound() -> None:
    with pytest.raises(InvalidSignature):
        judge("F", "B", key=OTHER)


def test_malformed_signing_key_is_refused() -> None:
    with pytest.raises(InvalidSyntax):
        judge("A", "G", key="did:key:nope")


def test_tampered_event_is_refused() -> None:
    event = replace(H.event("B"), prev_data=H.results["A2"].commit.data)
    with pytest.raises(InvalidCommit, match="prevData"):
        judge_event(event, signing_key=SIGNER, held=H.state("A"), now_micros=NOW)


def test_event_for_another_repo_is_refused() -> None:
    event = replace(H.event("A"), repo="did:skyfed:aaaaaaaaaaaaaaaaaaaaaaaa")
    with pytest.raises(InvalidCommit, match="another repository"):
        judge_event(event, signing_key=SIGNER, held=H.state("G"), now_micros=NOW)


# ---------------------------------------------------------------------------- judge_snapshot


@pytest.mark.parametrize(
    ("head", "held", "verdict"),
    [
        pytest.param("B", None, Verdict.APPLY, id="nothing-held"),
        pytest.param("B", "B", Verdict.DUPLICATE, id="duplicate"),
        pytest.param("B", "G", Verdict.SWITCH, id="fast-forward"),
        pytest.param("A", "B", Verdict.STALE, id="stale"),
        pytest.param(WIN, LOSE, Verdict.SWITCH, id="sibling-wins"),
        pytest.param(LOSE, WIN, Verdict.STALE, id="sibling-loses"),
        pytest.param("A3", "A", Verdict.SWITCH, id="sibling-later-rev"),
        pytest.param("E", "B", Verdict.SWITCH, id="at-future-bound"),
        pytest.param("F", "B", Verdict.FUTURE, id="future"),
        pytest.param("F", None, Verdict.FUTURE, id="future-nothing-held"),
    ],
)
def test_judge_snapshot(head: str, held: str | None, verdict: Verdict) -> None:
    commit, cid = H.commit(head)
    got = judge_snapshot(
        commit,
        cid,
        signing_key=SIGNER,
        held=None if held is None else H.state(held),
        now_micros=NOW,
    )
    assert got is verdict


def test_snapshot_wrong_key_is_refused() -> None:
    commit, cid = H.commit("B")
    with pytest.raises(InvalidSignature):
        judge_snapshot(commit, cid, signing_key=OTHER, held=None, now_micros=NOW)


# ---------------------------------------------------------------------------- head_wins

_revs = st.integers(0, 2**53 - 1).flatmap(
    lambda m: st.integers(0, 1023).map(lambda c: tid_from_parts(m, c))
)
# Few distinct revs and CIDs, so ties (the interesting part) are common.
_small_revs = st.integers(0, 3).map(lambda n: rev(n))
_cids = st.integers(0, 5).map(lambda n: cid_for_msgpack(bytes([n])))
_heads = st.tuples(st.one_of(_small_revs, _revs), _cids)

_PROPS = settings(max_examples=300, deadline=None)


@_PROPS
@given(_heads)
def test_head_wins_is_irreflexive(a: tuple[str, CID]) -> None:
    assert not head_wins(*a, *a)


@_PROPS
@given(_heads, _heads)
def test_head_wins_is_total_and_antisymmetric(a: tuple[str, CID], b: tuple[str, CID]) -> None:
    if a == b:
        return
    assert head_wins(*a, *b) != head_wins(*b, *a)


@_PROPS
@given(_heads, _heads, _heads)
def test_head_wins_is_transitive(
    a: tuple[str, CID], b: tuple[str, CID], c: tuple[str, CID]
) -> None:
    if head_wins(*a, *b) and head_wins(*b, *c):
        assert head_wins(*a, *c)


@_PROPS
@given(_heads, _heads)
def test_head_wins_is_rev_then_lower_cid(a: tuple[str, CID], b: tuple[str, CID]) -> None:
    expected = a[0] > b[0] or (a[0] == b[0] and a[1].to_bytes() < b[1].to_bytes())
    assert head_wins(*a, *b) == expected


def test_rev_micros() -> None:
    assert rev_micros(rev(5)) == BASE + 5_000_000
    assert rev_micros(tid_from_parts(BASE, 1023)) == BASE


def _keep_max(heads: list[tuple[str, CID]]) -> tuple[str, CID]:
    best = heads[0]
    for h in heads[1:]:
        if head_wins(*h, *best):
            best = h
    return best


@_PROPS
@given(st.lists(_heads, min_size=1, max_size=12), st.randoms(use_true_random=False))
def test_keep_the_max_converges_in_any_order(
    heads: list[tuple[str, CID]], rnd: random.Random
) -> None:
    shuffled = list(heads)
    rnd.shuffle(shuffled)
    assert _keep_max(heads) == _keep_max(shuffled) == _keep_max(list(reversed(heads)))


# Real signed commits: competing heads of one repo, with colliding revs, fed through
# judge_snapshot in different orders by different receivers.
_POOL = [
    Commit.sign(DID, cid_for_msgpack(bytes([i])), rev(i % 4), KEY, prev=None) for i in range(10)
]


def _receive_snapshots(order: list[int]) -> CID | None:
    held: HeadState | None = None
    for i in order:
        commit = _POOL[i]
        verdict = judge_snapshot(commit, commit.cid, signing_key=SIGNER, held=held, now_micros=NOW)
        if verdict in (Verdict.APPLY, Verdict.SWITCH):
            held = HeadState(commit.cid, commit.rev, commit.data, None, commit.prev)
        else:
            assert verdict in (Verdict.DUPLICATE, Verdict.STALE)
    return None if held is None else held.head


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.integers(0, len(_POOL) - 1), min_size=1, max_size=15),
    st.randoms(use_true_random=False),
)
def test_snapshot_receivers_converge_in_any_order(order: list[int], rnd: random.Random) -> None:
    other = list(order)
    rnd.shuffle(other)
    expected = _keep_max([(_POOL[i].rev, _POOL[i].cid) for i in order])[1]
    assert _receive_snapshots(order) == _receive_snapshots(other) == expected


# Sibling commit events on G (what an equivocating author publishes): a receiver
# applies the first, then keeps or switches; every order ends on the same head.
def _siblings() -> list[CommitEvent]:
    base = H.results["G"].repo
    out = []
    for i in range(6):
        res = base.apply_writes(
            [Write("create", "app.bsky.feed.post", rev(1, 0), post(f"sibling {i}"))],
            KEY,
            rev=rev(1 + i % 3),
            time=TIME,
        )
        out.append(res.event)
    return out


SIBLINGS = _siblings()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.permutations(range(len(SIBLINGS))), st.integers(1, len(SIBLINGS)))
def test_event_receivers_converge_in_any_order(order: list[int], n: int) -> None:
    chosen = order[:n]
    held = H.state("G")
    equivocations = 0
    for i in chosen:
        event = SIBLINGS[i]
        j = judge_event(event, signing_key=SIGNER, held=held, now_micros=NOW)
        equivocations += j.equivocation
        if j.verdict in (Verdict.APPLY, Verdict.SWITCH):
            held = HeadState(event.commit, j.commit.rev, j.commit.data, event.since, j.commit.prev)
        else:
            assert j.verdict is Verdict.STALE
    best = _keep_max([(SIBLINGS[i].rev, SIBLINGS[i].commit) for i in chosen])
    assert (held.rev, held.head) == best
    # The first sibling applies; every later one is evidence of equivocation.
    assert equivocations == len(chosen) - 1
