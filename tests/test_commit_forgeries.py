"""Forgeries of commits and commit events that a relay or a peer without keys can make
(issue 12, findings 2, 3 and 9), refused at the protocol level and by real nodes.

* a later commit wrapped as a first commit (``since`` null, ``prevData`` its own tree,
  no ops) so that a node holding nothing stores a head without its tree;
* an honest commit re-sent with a rewritten ``since``/``prevData``/ops so that it
  looks like a sibling of the receiver's head (fabricated equivocation);
* a no-op ``update`` (``cid == prev``) added for a record the commit left alone.

Property tests: any single-byte change to a signed commit or a commit event is
refused (or, for the unsigned ``time``, changes nothing); and random interleavings of
honest and forged events from several peers leave every receiver on the honest head
with a tree that verifies in full.
"""

from __future__ import annotations

import base64
import random
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.client import Client
from node.config import NodeConfig
from node.wiring import Node
from protocol.cid import CID, cid_for_msgpack
from protocol.commit import (
    EMPTY_TREE,
    Commit,
    CommitEvent,
    RepoOp,
    blocks_for_ops,
    verify_commit_event,
)
from protocol.encoding import encode
from protocol.errors import DecodeError, InvalidCommit, SkyfedError
from protocol.ingest import (
    HeadState,
    Verdict,
    check_equivocation,
    check_tree_complete,
    judge_event,
    judge_snapshot,
)
from protocol.keys import SigningKey
from protocol.mst import MST, BlockSource, MemoryBlockStore
from protocol.peerwire import encode_message
from protocol.repo import CommitResult, Repo, Write
from protocol.syntax import tid_from_parts

from .seeds import seeded_key
from .test_federation import PASSWORD, FakePeer, all_agree, link, start_nodes, until

DID = "did:skyfed:ocrlxjjqgc2kmohyklx24khp"
KEY = seeded_key(3)
SIGNER = KEY.did_key()
BASE = 1_767_225_600_000_000
NOW = BASE + 3600 * 1_000_000
TIME = "2026-01-01T00:00:00.000Z"


def rev(seconds: int, clock: int = 7) -> str:
    return tid_from_parts(BASE + seconds * 1_000_000, clock)


def post(text: str) -> dict[str, object]:
    return {"$type": "app.bsky.feed.post", "text": text, "createdAt": TIME}


class Overlay:
    """New blocks first, then another source."""

    def __init__(self, new: Mapping[CID, bytes], base: BlockSource):
        self.new, self.base = new, base

    def get_block(self, cid: CID) -> bytes | None:
        block = self.new.get(cid)
        return block if block is not None else self.base.get_block(cid)


def ops_between(old: MST, new: MST) -> tuple[RepoOp, ...]:
    """The ops that turn ``old`` into ``new`` (what a forger computes)."""
    ops = []
    for d in old.diff(new):
        if d.old is None:
            ops.append(RepoOp("create", d.key, d.new, None))
        elif d.new is None:
            ops.append(RepoOp("delete", d.key, None, d.old))
        else:
            ops.append(RepoOp("update", d.key, d.new, d.old))
    return tuple(ops)


def rebase(
    event: CommitEvent, tree: MST, base: Commit, base_tree: MST, source: BlockSource
) -> CommitEvent:
    """Re-send ``event`` (whose commit heads ``tree``) as if built on ``base``: a
    relay's rewrite of the unsigned since/prevData/ops, with the blocks to match."""
    ops = ops_between(base_tree, tree)
    blocks = event.block_map()
    records = [source.get_block(op.cid) for op in ops if op.cid is not None]
    assert all(r is not None for r in records)
    return replace(
        event,
        since=base.rev,
        prev_data=base.data,
        ops=ops,
        blocks=(
            blocks[event.commit],
            *(r for r in records if r is not None),
            *blocks_for_ops(tree, source, ops).values(),
        ),
    )


def wrap_as_first(event: CommitEvent, root_block: bytes) -> CommitEvent:
    """A later commit re-sent as a first commit, with only the commit and root node."""
    return replace(
        event,
        since=None,
        prev_data=cid_for_msgpack(root_block),
        ops=(),
        blocks=(event.block_map()[event.commit], root_block),
    )


def with_no_op_update(event: CommitEvent, path: str, cid: CID, block: bytes) -> bytes:
    """``event`` plus an update of ``path`` from ``cid`` to ``cid`` and the record's
    ``block`` (a relay's extra op; RepoOp refuses to build one, so the bytes are
    written out by hand)."""
    value = event.to_value()
    ops, blocks = value["ops"], value["blocks"]
    assert isinstance(ops, list)
    assert isinstance(blocks, list)
    value["ops"] = [
        *ops,
        {"action": "update", "cid": cid.to_bytes(), "path": path, "prev": cid.to_bytes()},
    ]
    value["blocks"] = [*blocks, block]
    return encode(value)


# -- an honest history ---------------------------------------------------------------------


@dataclass
class Chain:
    """G -> C1 -> ... -> Cn by one author, every block in ``store``."""

    store: MemoryBlockStore = field(default_factory=MemoryBlockStore)
    results: list[CommitResult] = field(default_factory=list)

    @classmethod
    def build(cls, n: int, key: SigningKey = KEY) -> Chain:
        chain = cls()
        created = Repo.create(DID, key, rev=rev(0), time=TIME, source=chain.store)
        chain.store.update(created.blocks)
        chain.results.append(created)
        for i in range(1, n + 1):
            repo = chain.results[-1].repo
            writes = [Write("create", "app.bsky.feed.post", rev(i, 0), post(f"post {i}"))]
            if i % 3 == 0:  # now and then an update and a delete too
                writes.append(
                    Write("update", "app.bsky.feed.post", rev(i - 1, 0), post(f"edit {i}"))
                )
            if i % 4 == 0:
                writes.append(Write("delete", "app.bsky.feed.post", rev(i - 2, 0)))
            res = repo.apply_writes(writes, key, rev=rev(i), time=TIME)
            chain.store.update(res.blocks)
            chain.results.append(res)
        return chain

    def state(self, i: int) -> HeadState:
        r = self.results[i]
        return HeadState(r.commit_cid, r.commit.rev, r.commit.data, r.event.since, r.commit.prev)

    def event(self, i: int) -> CommitEvent:
        return self.results[i].event

    def tree(self, i: int) -> MST:
        return MST.load(self.store, self.results[i].commit.data)


CHAIN = Chain.build(6)


def judge(event: CommitEvent, held: HeadState | None) -> Verdict:
    return judge_event(event, signing_key=SIGNER, held=held, now_micros=NOW).verdict


# -- finding 2: a later commit wrapped as a first commit -------------------------------------


def test_a_later_commit_wrapped_as_a_first_commit_is_refused() -> None:
    event = CHAIN.event(3)
    root = CHAIN.store.get_block(CHAIN.results[3].commit.data)
    assert root is not None
    wrapped = wrap_as_first(CommitEvent.from_bytes(event.to_bytes()), root)
    # Before the fix a node holding nothing answered APPLY and stored the head alone.
    with pytest.raises(InvalidCommit, match="previous commit"):
        judge(wrapped, None)
    with pytest.raises(InvalidCommit):
        verify_commit_event(CommitEvent.from_bytes(wrapped.to_bytes()), KEY.public)


def test_since_null_means_prev_data_is_the_empty_tree() -> None:
    genesis = CHAIN.event(0)
    assert genesis.prev_data == EMPTY_TREE == MST.empty().root()
    assert judge(genesis, None) is Verdict.APPLY
    elsewhere = replace(genesis, prev_data=CHAIN.results[2].commit.data)
    with pytest.raises(InvalidCommit, match="empty tree"):
        judge(elsewhere, None)


def test_a_first_commit_may_not_claim_a_since() -> None:
    with pytest.raises(InvalidCommit, match="first commit"):
        judge(replace(CHAIN.event(0), since=rev(-5)), None)


def test_nothing_held_takes_only_a_first_commit() -> None:
    # An honest later event to a node holding nothing: a gap (fetch the whole tree).
    assert judge(CHAIN.event(2), None) is Verdict.GAP


def test_a_whole_tree_is_checked_block_by_block() -> None:
    commit = CHAIN.results[5].commit
    assert check_tree_complete(CHAIN.store, commit) == len(list(CHAIN.tree(5).items()))
    some_record = next(iter(CHAIN.tree(5).items()))[1]
    blocks = {
        c: b
        for c, b in ((c, CHAIN.store.get_block(c)) for c in CHAIN.store.blocks)
        if b is not None and c != some_record
    }
    with pytest.raises(InvalidCommit, match="missing"):
        check_tree_complete(MemoryBlockStore(blocks), commit)
    root_only = {commit.data: CHAIN.store.get_block(commit.data) or b""}
    with pytest.raises(InvalidCommit):
        check_tree_complete(MemoryBlockStore(root_only), commit)


# -- finding 3: fabricated equivocation -------------------------------------------------------


def test_a_rewritten_since_is_refused_not_taken_as_equivocation() -> None:
    # The receiver holds C1. The relay re-sends the honest C2 (signed on C1) as if it
    # were built on G, the commit C1 was built on: the same since as the held head.
    forged = rebase(
        CHAIN.event(2), CHAIN.tree(2), CHAIN.results[0].commit, CHAIN.tree(0), CHAIN.store
    )
    assert forged.since == CHAIN.state(1).since
    # The inductive proof alone holds (the ops do turn G's tree into C2's) ...
    verify_commit_event(CommitEvent.from_bytes(forged.to_bytes()), KEY.public)
    # ... but C2 is signed on C1: before the fix this was SWITCH with "equivocation".
    with pytest.raises(InvalidCommit, match="signed as prev"):
        judge(forged, CHAIN.state(1))
    assert judge(CHAIN.event(2), CHAIN.state(1)) is Verdict.APPLY


def test_a_rewritten_since_on_a_sibling_of_the_held_head_is_refused() -> None:
    # Held: a real sibling S of C2 (signed on C1). A real C2 whose since a relay
    # changed is still judged on its signed prev, and its since must be C1's rev.
    sibling = CHAIN.results[1].repo.apply_writes(
        [Write("create", "app.bsky.feed.post", rev(50, 0), post("the other history"))],
        KEY,
        rev=rev(2, 9),
        time=TIME,
    )
    held = HeadState(
        sibling.commit_cid,
        sibling.commit.rev,
        sibling.commit.data,
        CHAIN.results[1].commit.rev,
        sibling.commit.prev,
    )
    honest = judge_event(CHAIN.event(2), signing_key=SIGNER, held=held, now_micros=NOW)
    assert honest.evidence == "same-prev"
    with pytest.raises(InvalidCommit, match="since"):
        judge(replace(CHAIN.event(2), since=rev(0)), held)


def test_evidence_is_two_signed_commits_that_cannot_share_a_chain() -> None:
    c1, c2 = CHAIN.results[1], CHAIN.results[2]
    sibling = c1.repo.apply_writes(
        [Write("create", "app.bsky.feed.post", rev(50, 0), post("the other history"))],
        KEY,
        rev=rev(2, 9),
        time=TIME,
    )
    same_rev = CHAIN.results[0].repo.apply_writes([], KEY, rev=c2.commit.rev, time=TIME)
    blocks = {
        name: r.commit.to_bytes()
        for name, r in {"c1": c1, "c2": c2, "sibling": sibling, "same-rev": same_rev}.items()
    }
    keys = [SIGNER]
    assert check_equivocation(blocks["c2"], blocks["sibling"], signing_keys=keys) == "same-prev"
    assert check_equivocation(blocks["c2"], blocks["same-rev"], signing_keys=keys) == "same-rev"
    with pytest.raises(InvalidCommit, match="one chain"):
        check_equivocation(blocks["c1"], blocks["c2"], signing_keys=keys)
    with pytest.raises(InvalidCommit, match="one chain"):
        check_equivocation(blocks["c2"], blocks["c2"], signing_keys=keys)
    with pytest.raises(SkyfedError):
        check_equivocation(blocks["c2"], blocks["sibling"], signing_keys=[seeded_key(4).did_key()])


def test_commits_sign_their_prev() -> None:
    for before, after in zip(CHAIN.results, CHAIN.results[1:], strict=False):
        assert after.commit.prev == before.commit_cid
    assert CHAIN.results[0].commit.prev is None
    # Changing prev breaks the signature.
    c = CHAIN.results[2].commit
    moved = replace(c, prev=CHAIN.results[0].commit_cid)
    with pytest.raises(SkyfedError):
        moved.verify(KEY.public)


def test_version_3_commits_are_refused() -> None:
    c = CHAIN.results[0].commit
    old = encode({**_commit_value(c), "version": 3})
    with pytest.raises(DecodeError, match="version"):
        Commit.from_bytes(old)


def _commit_value(c: Commit) -> dict[str, object]:
    return {
        "data": c.data.to_bytes(),
        "did": c.did,
        "prev": None if c.prev is None else c.prev.to_bytes(),
        "rev": c.rev,
        "sig": c.sig,
        "version": c.version,
    }


# -- finding 9: no-op updates ---------------------------------------------------------------


def test_a_no_op_update_added_by_a_relay_is_refused() -> None:
    event = CHAIN.event(5)
    touched = {op.path for op in event.ops}
    path, cid = next((k, v) for k, v in CHAIN.tree(5).items() if k not in touched)
    block = CHAIN.store.get_block(cid)
    assert block is not None
    data = with_no_op_update(event, path, cid, block)
    with pytest.raises(DecodeError, match="must change"):
        CommitEvent.from_bytes(data)


def test_an_update_to_the_same_record_makes_no_op() -> None:
    repo = CHAIN.results[2].repo
    path_rkey = rev(2, 0)
    same = repo.apply_writes(
        [Write("update", "app.bsky.feed.post", path_rkey, post("post 2"))],
        KEY,
        rev=rev(100),
        time=TIME,
    )
    assert same.ops == ()
    assert same.written == (repo.get("app.bsky.feed.post", path_rkey),)
    assert same.commit.data == repo.commit.data
    assert judge(same.event, CHAIN.state(2)) is Verdict.APPLY


def test_creates_and_deletes_always_change_the_tree() -> None:
    # A create of a key the tree held before, or a delete of one it did not, cannot
    # pass the inversion: the tree after must hold the create and lack the delete.
    event = CHAIN.event(4)
    held = CHAIN.state(3)
    path, cid = next(iter(CHAIN.tree(3).items()))
    extra_create = replace(event, ops=(*event.ops, RepoOp("create", path, cid)))
    absent = "app.bsky.feed.post/" + rev(999, 0)
    extra_delete = replace(event, ops=(*event.ops, RepoOp("delete", absent, None, cid)))
    for forged in (extra_create, extra_delete):
        with pytest.raises(InvalidCommit):
            judge(forged, held)


# -- property: one changed byte is refused --------------------------------------------------

_FLIPS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_COMMIT_BLOCK = CHAIN.results[4].commit.to_bytes()
_EVENT = CHAIN.event(4)
_EVENT_BYTES = _EVENT.to_bytes()


@_FLIPS
@given(st.integers(0, len(_COMMIT_BLOCK) - 1), st.integers(1, 255))
def test_any_changed_byte_of_a_signed_commit_is_refused(i: int, delta: int) -> None:
    changed = bytearray(_COMMIT_BLOCK)
    changed[i] = (changed[i] + delta) % 256
    with pytest.raises(SkyfedError):
        Commit.from_bytes(bytes(changed)).verify(KEY.public)


@_FLIPS
@given(st.integers(0, len(_EVENT_BYTES) - 1), st.integers(1, 255))
def test_any_changed_byte_of_a_commit_event_is_refused(i: int, delta: int) -> None:
    changed = bytearray(_EVENT_BYTES)
    changed[i] = (changed[i] + delta) % 256
    try:
        event = CommitEvent.from_bytes(bytes(changed))
        judged = judge_event(event, signing_key=SIGNER, held=CHAIN.state(3), now_micros=NOW)
    except SkyfedError:
        return
    # Only the unsigned, informational time may change and still verify: then the
    # event says exactly what the author signed.
    assert replace(event, time=_EVENT.time) == _EVENT
    assert judged.verdict is Verdict.APPLY
    assert judged.commit.cid == _EVENT.commit


# -- property: interleaved honest and forged events -----------------------------------------


def _forgeries(chain: Chain) -> list[bytes]:
    """What relays and keyless peers can make from the honest events."""
    out: list[bytes] = []
    impostor = seeded_key(4)
    for i in range(1, len(chain.results)):
        event = chain.event(i)
        root = chain.store.get_block(chain.results[i].commit.data)
        assert root is not None
        out.append(wrap_as_first(event, root).to_bytes())
        if i >= 2:  # re-sent as built on its grandparent: a fabricated sibling
            base = chain.results[i - 2]
            rebased = rebase(event, chain.tree(i), base.commit, chain.tree(i - 2), chain.store)
            out.append(rebased.to_bytes())
        touched = {op.path for op in event.ops}
        untouched = [(k, v) for k, v in chain.tree(i).items() if k not in touched]
        if untouched:
            path, cid = untouched[0]
            block = chain.store.get_block(cid)
            assert block is not None
            out.append(with_no_op_update(event, path, cid, block))
        forged = chain.results[i - 1].repo.apply_writes(
            [Write("create", "app.bsky.feed.post", rev(80 + i, 0), post("impostor"))],
            impostor,
            rev=chain.results[i].commit.rev,
            time=TIME,
        )
        out.append(forged.event.to_bytes())
    return out


FORGERIES = _forgeries(CHAIN)
HONEST = [CHAIN.event(i).to_bytes() for i in range(len(CHAIN.results))]


@dataclass
class Receiver:
    """A protocol-level node: the ingest rules, a block store and a head. A gap
    fetches a full snapshot of the newest honest head the network has shown it."""

    store: MemoryBlockStore = field(default_factory=MemoryBlockStore)
    head: HeadState | None = None
    refused: int = 0

    def snapshot(self, i: int) -> None:
        r = CHAIN.results[i]
        verdict = judge_snapshot(
            r.commit, r.commit_cid, signing_key=SIGNER, held=self.head, now_micros=NOW
        )
        if verdict not in (Verdict.APPLY, Verdict.SWITCH):
            return
        tree = CHAIN.tree(i)
        blocks = {r.commit_cid: r.commit.to_bytes(), **dict(tree.all_blocks())}
        for _, cid in tree.items():
            block = CHAIN.store.get_block(cid)
            assert block is not None
            blocks[cid] = block
        check_tree_complete(MemoryBlockStore(blocks), r.commit)
        self.store.update(blocks)
        self.head = HeadState(r.commit_cid, r.commit.rev, r.commit.data, "", r.commit.prev)

    def receive(self, data: bytes, newest_seen: int) -> None:
        try:
            event = CommitEvent.from_bytes(data)
            j = judge_event(event, signing_key=SIGNER, held=self.head, now_micros=NOW)
        except SkyfedError:
            self.refused += 1
            return
        # The honest author never equivocates: no forgery may look like evidence.
        assert j.evidence is None
        if j.verdict is Verdict.APPLY:
            # No completeness check of its own here (a real node has one): the rules
            # alone must keep a receiver from holding a head without its tree.
            self.store.update(event.block_map())
            self.head = HeadState(
                event.commit, j.commit.rev, j.commit.data, event.since, j.commit.prev
            )
        elif j.verdict is Verdict.GAP:
            self.snapshot(newest_seen)
        else:
            assert j.verdict in (Verdict.DUPLICATE, Verdict.STALE)


def _flip(data: bytes, rnd: random.Random) -> bytes:
    changed = bytearray(data)
    i = rnd.randrange(len(changed))
    changed[i] ^= 1 << rnd.randrange(8)
    return bytes(changed)


def _deliveries(rnd: random.Random, peers: int) -> list[tuple[bytes, int]]:
    """One receiver's input: each peer relays the honest events (some reordered, some
    twice) mixed with forgeries and bit flips; the peers' streams are interleaved."""
    streams: list[list[tuple[bytes, int]]] = []
    for _ in range(peers):
        order = list(range(len(HONEST)))
        for _ in range(rnd.randrange(3)):  # a few adjacent swaps: reorders
            k = rnd.randrange(len(order) - 1)
            order[k], order[k + 1] = order[k + 1], order[k]
        stream: list[tuple[bytes, int]] = []
        for i in order:
            for _ in range(rnd.randrange(3)):  # noise before (so also first) ...
                kind = rnd.randrange(3)
                if kind == 0:
                    stream.append((rnd.choice(FORGERIES), -1))
                elif kind == 1:
                    stream.append((_flip(HONEST[rnd.randrange(len(HONEST))], rnd), -1))
                elif stream:  # ... or a replay of something already sent
                    stream.append(rnd.choice(stream))
            stream.append((HONEST[i], i))
        streams.append(stream)
    merged: list[tuple[bytes, int]] = []
    while any(streams):
        s = rnd.choice([s for s in streams if s])
        merged.append(s.pop(0))
    return merged


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=False), st.integers(1, 3), st.integers(1, 3))
def test_interleaved_honest_and_forged_events_leave_every_receiver_on_the_honest_head(
    rnd: random.Random, peers: int, receivers: int
) -> None:
    final = CHAIN.results[-1]
    for _ in range(receivers):
        node = Receiver()
        newest = 0
        for data, honest_index in _deliveries(rnd, peers):
            newest = max(newest, honest_index)
            node.receive(data, newest)
        assert node.head is not None
        assert (node.head.head, node.head.rev) == (final.commit_cid, final.commit.rev)
        assert check_tree_complete(node.store, final.commit) == len(list(CHAIN.tree(-1).items()))
        held = MST.load(node.store, node.head.data)
        assert list(held.items()) == list(CHAIN.tree(-1).items())


# -- real nodes --------------------------------------------------------------------------------


async def _alice_history(a: Node) -> tuple[str, SigningKey]:
    async with Client(a.url) as alice:
        await alice.create_account("alice.skyfed.test", PASSWORD)
        await alice.post("first")
        await alice.post("second")
        row = await a.storage.account_by_did(alice.did)
        assert row is not None
        return alice.did, SigningKey.from_str(row.signing_key)


async def test_a_node_holding_nothing_refuses_a_commit_wrapped_as_first(tmp_path: Path) -> None:
    a, b = await start_nodes(tmp_path, 2)
    try:
        did, _ = await _alice_history(a)
        # b knows alice's identity (so it can check signatures) but not her repo.
        assert await b.federation.ingest_identity(did, await a.storage.identity_ops(did))
        head = await a.repos.head(did)
        root = a.storage.read_block(head.commit.data)
        assert root is not None
        head_event = head.apply_writes(
            [], await _key(a, did), rev=a.repos._next_rev(head.rev), time=TIME
        ).event
        wrapped = wrap_as_first(head_event, root)
        # The head itself (not only a fresh commit on it) wrapped the same way.
        commit_block = a.storage.read_block(head.commit_cid)
        assert commit_block is not None
        wrapped_head = replace(
            wrapped,
            commit=head.commit_cid,
            rev=head.rev,
            blocks=(commit_block, root),
        )
        for forged in (wrapped, wrapped_head):
            with pytest.raises(InvalidCommit):
                await b.federation.ingest_event(forged, None)
        assert await b.storage.head_state(did) is None
        # Linked, b fetches the whole repo and holds every record.
        await link([a, b], [(1, 0)])
        await until(lambda: all_agree([a, b], 1))
        got = await b.repos.head(did)
        check_tree_complete(b.storage, got.commit)
        assert len(list(got.tree.items())) == 2
    finally:
        for node in (a, b):
            await node.stop()


async def _key(node: Node, did: str) -> SigningKey:
    row = await node.storage.account_by_did(did)
    assert row is not None
    return SigningKey.from_str(row.signing_key)


async def test_a_node_refuses_a_rewritten_since_and_records_no_evidence(tmp_path: Path) -> None:
    a, b = await start_nodes(tmp_path, 2)
    try:
        await link([a, b], [(1, 0)])
        did, key = await _alice_history(a)
        await until(lambda: all_agree([a, b], 1))
        held = await b.storage.head_state(did)
        assert held is not None
        assert held.since is not None
        # The next commit, signed on the held head, not yet published.
        head = await a.repos.head(did)
        nxt = head.apply_writes(
            [Write("create", "app.bsky.feed.post", a.repos._next_rev(head.rev), post("third"))],
            key,
            rev=a.repos._next_rev(head.rev),
            time=TIME,
        )
        source = Overlay(nxt.blocks, a.storage)
        parent_cid = head.commit.prev
        assert parent_cid is not None
        parent = Repo.load(a.storage, parent_cid)
        forged = rebase(
            nxt.event, MST.load(source, nxt.commit.data), parent.commit, parent.tree, source
        )
        assert forged.since == held.since  # what used to make it a "sibling"
        with pytest.raises(InvalidCommit):
            await b.federation.ingest_event(forged, None)
        assert await b.storage.equivocations() == []
        assert (await b.storage.head_state(did)) == held
        # The honest event still applies.
        assert await b.federation.ingest_event(nxt.event, None) is Verdict.APPLY
    finally:
        for node in (a, b):
            await node.stop()


async def test_evidence_from_real_equivocation_re_verifies_from_the_api(tmp_path: Path) -> None:
    a, b = await start_nodes(tmp_path, 2)
    try:
        await link([a, b], [(1, 0)])
        did, key = await _alice_history(a)
        await until(lambda: all_agree([a, b], 1))
        head = await a.repos.head(did)
        forks = [
            head.apply_writes(
                [Write("create", "app.bsky.feed.post", a.repos._next_rev(head.rev), post(t))],
                key,
                rev=a.repos._next_rev(head.rev),
                time=TIME,
            ).event
            for t in ("history one", "history two")
        ]
        verdicts = [await b.federation.ingest_event(f, None) for f in forks]
        assert verdicts[0] is Verdict.APPLY
        assert verdicts[1] in (Verdict.STALE, Verdict.SWITCH)
        async with aiohttp.ClientSession() as http:
            url = b.url + "/xrpc/skyfed.sync.listEquivocations"
            async with http.get(url) as resp:
                assert resp.status == 200
                got = (await resp.json())["equivocations"]
        assert len(got) == 1
        entry = got[0]
        assert entry["did"] == did
        assert entry["reason"] == "same-prev"
        assert {entry["kept"], entry["dropped"]} == {str(f.commit) for f in forks}
        kept, dropped = (base64.b64decode(entry[k]) for k in ("keptCommit", "droppedCommit"))
        assert str(cid_for_msgpack(kept)) == entry["kept"]
        assert str(cid_for_msgpack(dropped)) == entry["dropped"]
        assert check_equivocation(kept, dropped, signing_keys=[key.did_key()]) == "same-prev"
    finally:
        for node in (a, b):
            await node.stop()


async def _push_raw(http: aiohttp.ClientSession, node: Node, commit: CID, data: bytes) -> FakePeer:
    """Push ``data`` as a commit from a fresh keyless peer (a forger gets cut off after
    two refusals, so each forgery comes from a new one). The caller closes it."""
    peer = await FakePeer.connect(http, node)
    await until(lambda: _linked(node, peer.key.did_key()))
    await peer.ws.send_bytes(
        encode_message("push", id=commit.to_bytes(), kind="commit", data=data, round=0)
    )
    return peer


async def _linked(node: Node, did: str) -> bool:
    return did in node.federation.links


async def test_a_node_fed_honest_and_forged_events_ends_on_the_honest_head(
    tmp_path: Path,
) -> None:
    """Keyless peers relay alice's new commits to b, each shuffled among forgeries of
    it (wrapped as first, rebased on its grandparent, a no-op update added), so a
    forgery often arrives before the honest event under the same id."""
    # Many keyless peers, all from 127.0.0.1: admission must not cap or slow them.
    a, b = await start_nodes(
        tmp_path, 2, shared_networks=("127.0.0.0/8",), peer_accept_rate=1e6, peer_accept_burst=10**6
    )
    rnd = random.Random(12)
    try:
        await link([a, b], [(1, 0)])
        did, key = await _alice_history(a)
        await until(lambda: all_agree([a, b], 1))
        a.repos.on_commit = None  # a does not gossip these itself: the relays do
        rejected = b.federation.rejected
        peers: list[FakePeer] = []
        async with aiohttp.ClientSession() as http:
            for i in range(4):
                head = await a.repos.head(did)
                grandparent_cid = head.commit.prev
                assert grandparent_cid is not None
                grandparent = Repo.load(a.storage, grandparent_cid)
                writes = [Write("create", "app.bsky.feed.post", rev(200 + i, 0), post(f"n{i}"))]
                outcome = await a.repos.write(did, writes, key)
                event = outcome.result.event
                new_tree = outcome.result.repo.tree
                root = a.storage.read_block(new_tree.root())
                assert root is not None
                untouched = next(iter(head.tree.items()))
                block = a.storage.read_block(untouched[1])
                assert block is not None
                sends = [
                    event.to_bytes(),
                    wrap_as_first(event, root).to_bytes(),
                    rebase(
                        event, new_tree, grandparent.commit, grandparent.tree, a.storage
                    ).to_bytes(),
                    with_no_op_update(event, *untouched, block),
                ]
                rnd.shuffle(sends)
                for data in sends:
                    peers.append(await _push_raw(http, b, event.commit, data))
            await until(lambda: all_agree([a, b], 1))
            for peer in peers:
                await peer.ws.close()
        want = await a.repos.head(did)
        got = await b.repos.head(did)
        assert got.commit_cid == want.commit_cid
        assert check_tree_complete(b.storage, got.commit) == len(list(want.tree.items()))
        assert list(got.tree.items()) == list(want.tree.items())
        assert await b.storage.equivocations() == []
        # Forgeries that came before their honest event were judged, and refused.
        assert b.federation.rejected > rejected
    finally:
        for node in (a, b):
            await node.stop()


async def test_a_sibling_met_by_reconciliation_is_recorded_as_evidence(tmp_path: Path) -> None:
    a, b = await start_nodes(tmp_path, 2)
    try:
        await link([a, b], [(1, 0)])
        did, key = await _alice_history(a)
        await until(lambda: all_agree([a, b], 1))
        head = await a.repos.head(did)
        parent_cid = head.commit.prev
        assert parent_cid is not None
        parent = Repo.load(a.storage, parent_cid)
        # A sibling of the head (signed on the same prev) with a later rev: it wins.
        sibling = parent.apply_writes(
            [Write("create", "app.bsky.feed.post", rev(300, 0), post("the other history"))],
            key,
            rev=a.repos._next_rev(head.rev),
            time=TIME,
        ).event
        # a takes it as an event (and does not pass it on); b only learns of it when
        # it reconciles with a and fetches a's head as a snapshot.
        assert await a.federation.ingest_event(sibling, None) is Verdict.SWITCH
        await until(lambda: all_agree([a, b], 1))
        held = await b.storage.head_state(did)
        assert held is not None
        assert held.head == sibling.commit
        evidence = await b.storage.equivocations()
        assert [(e.reason, e.kept, e.dropped) for e in evidence] == [
            ("same-prev", sibling.commit, head.commit_cid)
        ]
        assert (
            check_equivocation(
                evidence[0].kept_commit, evidence[0].dropped_commit, signing_keys=[key.did_key()]
            )
            == "same-prev"
        )
    finally:
        for node in (a, b):
            await node.stop()


async def test_a_database_with_version_3_commits_is_refused_plainly(tmp_path: Path) -> None:
    config = NodeConfig(data_dir=tmp_path / "node", port=0)
    async with Node(config) as node, Client(node.url) as alice:
        await alice.create_account("alice.skyfed.test", PASSWORD)
        head = await node.storage.get_head(alice.did)
        assert head is not None
        block = node.storage.read_block(head.head)
        assert block is not None
    # What a node of schema v6 held: the same head, written as a version-3 commit.
    old = Commit.from_bytes(block)
    v3 = encode({**_commit_value(old), "prev": None, "version": 3})
    conn = sqlite3.connect(config.db_path)
    conn.execute("UPDATE blocks SET data = ? WHERE cid = ?", (v3, head.head.to_bytes()))
    conn.execute("DROP TABLE equivocations")
    conn.execute(
        "CREATE TABLE equivocations (did TEXT NOT NULL, since TEXT, kept BLOB NOT NULL,"
        " dropped BLOB NOT NULL, seen_at TEXT NOT NULL, PRIMARY KEY (did, kept, dropped))"
    )
    conn.execute("PRAGMA user_version = 6")  # the last schema before signed prev
    conn.commit()
    conn.close()
    stale = Node(config)
    try:
        with pytest.raises(RuntimeError, match="new data directory"):
            await stale.start()
    finally:
        await stale.stop()
