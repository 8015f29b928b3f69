"""Non-canonical trees a signer can build by hand are refused on every path that
admits a tree: a commit event, a whole snapshot, a partial (``since``) resync, and
plain reads (issue 12, finding 4).

Each tree here is locally valid node by node (sorted keys of one height, canonical
bytes); only a key's place relative to the keys above it is wrong.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.client import Client
from protocol.car import write_car
from protocol.cid import CID, cid_for_msgpack
from protocol.commit import Commit, CommitEvent, RepoOp, verify_commit_event
from protocol.encoding import Value, decode, encode
from protocol.errors import InvalidCommit
from protocol.ingest import HeadState, judge_event, judge_snapshot
from protocol.mst import MST, MemoryBlockStore, key_height
from protocol.syntax import TidClock

from .seeds import seeded_key
from .test_federation import PASSWORD, _account_key, link, start_nodes, until

DID = "did:skyfed:aaaaaaaaaaaaaaaaaaaaaaaa"
TIME = "2026-11-23T12:00:00.000Z"
KEY = seeded_key(1)
NOW = 1_800_000_000_000_000


def record(path: str) -> bytes:
    return encode({"$type": "app.bsky.feed.post", "text": path, "createdAt": TIME})


def val(path: str) -> CID:
    return cid_for_msgpack(record(path))


def keys_of_height(height: int, count: int, start: int = 0) -> list[str]:
    found = []
    for i in itertools.count(start):
        k = f"app.bsky.feed.post/k{i:06d}"
        if key_height(k) == height:
            found.append(k)
            if len(found) == count:
                return found
    raise AssertionError  # pragma: no cover


def node(entries: list[tuple[str, CID | None]], left: CID | None) -> bytes:
    """A tree node block, from (key, right subtree) pairs in order."""
    out: list[Value] = []
    prev = b""
    for key, right in entries:
        raw = key.encode()
        p = 0
        while p < min(len(prev), len(raw)) and prev[p] == raw[p]:
            p += 1
        out.append(
            {
                "k": raw[p:],
                "p": p,
                "t": None if right is None else right.to_bytes(),
                "v": val(key).to_bytes(),
            }
        )
        prev = raw
    return encode({"e": out, "l": None if left is None else left.to_bytes()})


#: The head commit the receivers in these tests hold: the forged events are signed on it.
HELD_HEAD = cid_for_msgpack(b"\x80")


class Forger:
    """Writes node blocks and signs commits over them, as a dishonest author can."""

    def __init__(self) -> None:
        self.store = MemoryBlockStore()
        self.clock = TidClock(5)
        self.micros = NOW - 10_000_000

    def put(self, block: bytes) -> CID:
        return self.store.put_block(block)

    def rev(self) -> str:
        self.micros += 1
        return self.clock.next(self.micros)

    def event(self, root: CID, ops: list[RepoOp], prev_data: CID, since: str | None) -> CommitEvent:
        # Signed on HELD_HEAD, the head the tests' receivers hold (none for a first).
        commit = Commit.sign(DID, root, self.rev(), KEY, prev=None if since is None else HELD_HEAD)
        block = commit.to_bytes()
        records = [record(op.path) for op in ops if op.cid is not None]
        return CommitEvent(
            repo=DID,
            rev=commit.rev,
            since=since,
            commit=cid_for_msgpack(block),
            ops=tuple(ops),
            blocks=(block, *records, *self.store.blocks.values()),
            prev_data=prev_data,
            time=TIME,
        )


def create(path: str) -> RepoOp:
    return RepoOp("create", path, val(path))


# -- finding 4 as reported: a left subtree holding a key above its parent's ------------------


def _left_subtree_too_high() -> tuple[Forger, CID, CID, str, str]:
    """Root [K] on layer 1 whose left leaf holds X > K. Deleting K (inverting its
    create) merges the leaf up into the canonical one-key tree {X}."""
    (k,) = keys_of_height(1, 1)
    x = next(x for x in keys_of_height(0, 50) if x > k)
    f = Forger()
    leaf = f.put(node([(x, None)], None))
    root = f.put(node([(k, None)], leaf))
    return f, leaf, root, k, x


def test_event_with_a_key_above_its_parents_is_refused() -> None:
    f, leaf, root, k, _x = _left_subtree_too_high()
    event = f.event(root, [create(k)], prev_data=leaf, since=f.rev())
    with pytest.raises(InvalidCommit, match="outside its subtree's range"):
        verify_commit_event(CommitEvent.from_bytes(event.to_bytes()), KEY.public)
    held = HeadState(head=HELD_HEAD, rev=event.since or "", data=leaf, since=None, prev=None)
    with pytest.raises(InvalidCommit):
        judge_event(event, signing_key=KEY.did_key(), held=held, now_micros=NOW)


def test_reads_of_such_a_tree_refuse_it() -> None:
    f, _leaf, root, _k, x = _left_subtree_too_high()
    tree = MST.load(f.store, root)
    # get(X) looks right of K and finds nothing: a lookup cannot see a key that is
    # not where it should be, which is why no path may admit such a tree.
    assert tree.get(x) is None
    with pytest.raises(InvalidCommit):
        list(tree.items())  # old code: [X, K], out of order
    with pytest.raises(InvalidCommit):
        tree.verify_structure()


# -- a subtree moved under a key it is not below: caught only in the new tree's shape -----


def _subtree_lifted_past_a_new_key() -> tuple[Forger, bytes, CID, list[RepoOp]]:
    """Old tree {a, b, K}: root [K] on layer 2 over an entry-less layer-1 node E over
    the leaf [a, b]. The forged new tree replaces K with K2 < a and keeps E under
    K2's left: a and b now sit left of a key they are above. Inverting (delete K2,
    which lifts E up and reads the leaf only in the lifted tree; then put K back)
    gives exactly the old tree, so the inversion alone cannot see it."""
    k2, k = keys_of_height(2, 2)
    a, b = [x for x in keys_of_height(0, 400) if k2 < x < k][:2]
    f = Forger()
    leaf = f.put(node([(a, None), (b, None)], None))
    e = f.put(node([], leaf))
    old_root = node([(k, None)], e)
    new_root = f.put(node([(k2, None)], e))
    ops = [RepoOp("delete", k, None, val(k)), create(k2)]
    return f, old_root, new_root, ops


def test_event_that_moves_a_subtree_out_of_its_range_is_refused() -> None:
    f, old_block, new_root, ops = _subtree_lifted_past_a_new_key()
    old_root = cid_for_msgpack(old_block)
    event = f.event(new_root, ops, prev_data=old_root, since=f.rev())
    with pytest.raises(InvalidCommit, match="outside its subtree's range"):
        verify_commit_event(event, KEY.public, prev_data=old_root, prev_rev=event.since)


def test_one_create_that_lifts_an_out_of_range_subtree_is_refused() -> None:
    # The one-op shortcut of verify_against must not apply when the inversion lifted
    # a subtree to the top: root [K] (height 2) over an entry-less E over the leaf
    # [a, b] with a, b > K; deleting K lifts the leaf into the whole range.
    (k,) = keys_of_height(2, 1)
    a, b = [x for x in keys_of_height(0, 400) if x > k][:2]
    f = Forger()
    leaf = f.put(node([(a, None), (b, None)], None))
    e = f.put(node([], leaf))
    root = f.put(node([(k, None)], e))
    event = f.event(root, [create(k)], prev_data=leaf, since=f.rev())
    with pytest.raises(InvalidCommit, match="outside its subtree's range"):
        verify_commit_event(event, KEY.public, prev_data=leaf, prev_rev=event.since)


def test_partial_resync_of_such_a_tree_is_refused() -> None:
    # The partial (since) resync path: the new tree's new nodes arrive, the rest is
    # what the node holds, and the node diffs its tree against the new one.
    f, old_block, new_root, _ops = _subtree_lifted_past_a_new_key()
    held = MemoryBlockStore(f.store.blocks)
    old = MST.load(held, held.put_block(old_block))
    assert old.verify_structure() == 3
    new = MST.load(held, new_root)
    with pytest.raises(InvalidCommit, match="outside its subtree's range"):
        old.diff(new)
    with pytest.raises(InvalidCommit):
        new.verify_structure()  # the whole-snapshot path


def test_snapshot_of_such_a_tree_is_refused_after_the_signature_passes() -> None:
    f, _leaf, root, _k, _x = _left_subtree_too_high()
    commit = Commit.sign(DID, root, f.rev(), KEY, prev=None)
    verdict = judge_snapshot(
        commit, commit.cid, signing_key=KEY.did_key(), held=None, now_micros=NOW
    )
    assert verdict.value == "apply"  # the signature is good: the tree is what is wrong
    tree = MST.load(f.store, root)
    with pytest.raises(InvalidCommit):
        tree.verify_structure()
    with pytest.raises(InvalidCommit):
        MST.empty().diff(tree)


# -- property: random non-canonical trees are refused by every loader ---------------------


def _tree_object(store: MemoryBlockStore, cid: CID) -> dict[str, Any]:
    raw = store.get_block(cid)
    assert raw is not None
    d = decode(raw)
    assert isinstance(d, dict)
    entries = d["e"]
    assert isinstance(entries, list)
    obj: dict[str, Any] = {"l": None, "e": []}
    if d["l"] is not None:
        obj["l"] = _tree_object(store, CID.from_bytes(d["l"]))  # type: ignore[arg-type]
    for entry in entries:
        assert isinstance(entry, dict)
        e = dict(entry)
        if e["t"] is not None:
            e["t"] = _tree_object(store, CID.from_bytes(e["t"]))  # type: ignore[arg-type]
        obj["e"].append(e)
    return obj


def _slots(obj: dict[str, Any], layer: int, out: list[tuple[int, dict[str, Any], str]]) -> None:
    """Every place a subtree can hang: (layer of the subtree, holder, field)."""
    if layer == 0:
        return
    out.append((layer - 1, obj, "l"))
    if obj["l"] is not None:
        _slots(obj["l"], layer - 1, out)
    for e in obj["e"]:
        out.append((layer - 1, e, "t"))
        if e["t"] is not None:
            _slots(e["t"], layer - 1, out)


def _write(obj: dict[str, Any], store: MemoryBlockStore) -> CID:
    entries = []
    for e in obj["e"]:
        t = None if e["t"] is None else _write(e["t"], store).to_bytes()
        entries.append({"k": e["k"], "p": e["p"], "t": t, "v": e["v"]})
    left = None if obj["l"] is None else _write(obj["l"], store).to_bytes()
    return store.put_block(encode({"e": entries, "l": left}))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sets(st.integers(0, 100_000), min_size=20, max_size=150),
    st.data(),
)
def test_random_non_canonical_trees_are_refused_by_every_loader(
    numbers: set[int], data: st.DataObject
) -> None:
    paths = [f"app.bsky.feed.post/k{n:06d}" for n in numbers]
    tree = MST.empty()
    for p in paths:
        tree = tree.set(p, val(p))
    store = MemoryBlockStore(tree.new_blocks())
    root = tree.root()
    layer = max(key_height(p) for p in paths)
    obj = _tree_object(store, root)
    slots: list[tuple[int, dict[str, Any], str]] = []
    _slots(obj, layer, slots)
    full = [s for s in slots if s[1][s[2]] is not None]
    mutation = data.draw(st.sampled_from(["swap", "move", "height"]))
    if mutation in ("swap", "move") and full:
        lay, holder, name = data.draw(st.sampled_from(full))
        same = [s for s in slots if s[0] == lay and s[1][s[2]] is not holder[name]]
        if mutation == "swap":
            same = [s for s in same if s[1][s[2]] is not None]
        if not same:
            mutation = "height"
        else:
            _, h2, n2 = data.draw(st.sampled_from(same))
            holder[name], h2[n2] = h2[n2], holder[name]
    if mutation == "height" or not full:
        # A key of another height in place of one key of a node (kept in order).
        leaf_entries = obj["e"]
        i = data.draw(st.integers(0, len(leaf_entries) - 1))
        e = leaf_entries[i]
        e["k"] = e["k"] + b"0"  # same order neighbours almost always; height changes often
        if key_height(_full_key(leaf_entries, i)) == _layer_of(leaf_entries):
            return  # the same height by chance: not a forgery
    forged = MemoryBlockStore()
    bad_root = _write(obj, forged)
    if bad_root == root:
        return
    # Whole snapshot.
    with pytest.raises(InvalidCommit):
        MST.load(forged, bad_root).verify_structure()
    # Partial resync / diff from a held tree (here: nothing held yet).
    with pytest.raises(InvalidCommit):
        MST.empty().diff(MST.load(forged, bad_root))
    # Reading every record.
    with pytest.raises(InvalidCommit):
        list(MST.load(forged, bad_root).items())
    # A commit event creating every record over the empty tree.
    f = Forger()
    f.store = forged
    event = f.event(bad_root, [create(p) for p in sorted(paths)], MST.empty().root(), None)
    with pytest.raises(InvalidCommit):
        verify_commit_event(event, KEY.public)


def _full_key(entries: list[dict[str, Any]], i: int) -> bytes:
    key = b""
    for e in entries[: i + 1]:
        key = key[: e["p"]] + e["k"]
    return key


def _layer_of(entries: list[dict[str, Any]]) -> int:
    return key_height(_full_key(entries, 0)) if entries else 0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sets(st.integers(0, 100_000), min_size=1, max_size=120),
    st.lists(st.tuples(st.booleans(), st.integers(0, 100_000)), max_size=6),
    st.data(),
)
def test_verify_against_agrees_with_a_full_walk(
    numbers: set[int], changes: list[tuple[bool, int]], data: st.DataObject
) -> None:
    """For a tree derived from a canonical one by writes, then possibly tampered with
    (two subtrees of one layer swapped, one moved, or a key of a higher node replaced
    by another of the same height), checking it against the canonical one refuses it
    exactly when a full walk of it does."""
    paths = sorted(f"app.bsky.feed.post/k{n:06d}" for n in numbers)
    base = MST.empty()
    for p in paths:
        base = base.set(p, val(p))
    store = MemoryBlockStore(base.new_blocks())
    base = MST.load(store, base.root())
    new = base
    for delete, n in changes:
        p = f"app.bsky.feed.post/k{n:06d}"
        new = new.delete(p) if delete and new.get(p) is not None else new.set(p, val(p + "x"))
    store.update(new.new_blocks())
    MST.load(store, new.root()).verify_against(base)  # honest: passes
    obj = _tree_object(store, new.root())
    top = max((key_height(k) for k, _ in new.items()), default=0)
    slots: list[tuple[int, dict[str, Any], str]] = []
    _slots(obj, top, slots)
    full = [s for s in slots if s[1][s[2]] is not None]
    mutation = data.draw(st.sampled_from(["swap", "key"]))
    if mutation == "swap" and full:
        lay, holder, name = data.draw(st.sampled_from(full))
        others = [s for s in slots if s[0] == lay and s[1][s[2]] is not holder[name]]
        if others:
            _, h2, n2 = data.draw(st.sampled_from(others))
            holder[name], h2[n2] = h2[n2], holder[name]
    elif obj["e"] and top > 0:
        # Replace one key of the root by another of the same height (node order kept,
        # subtrees left where they are): canonical or not depending on the keys below.
        keys = [_full_key(obj["e"], i) for i in range(len(obj["e"]))]
        i = data.draw(st.integers(0, len(keys) - 1))
        lo = keys[i - 1] if i else b""
        hi = keys[i + 1] if i + 1 < len(keys) else b"\xff"
        start = data.draw(st.integers(0, 100_000))
        candidates = [k for k in keys_of_height(top, 3, start) if lo < k.encode() < hi]
        if candidates:
            keys[i] = candidates[0].encode()
            prev = b""
            for e, k in zip(obj["e"], keys, strict=True):
                p = 0
                while p < min(len(prev), len(k)) and prev[p] == k[p]:
                    p += 1
                e["k"], e["p"] = k[p:], p
                prev = k
    forged_root = _write(obj, store)
    try:
        MST.load(store, forged_root).verify_structure()
    except InvalidCommit:
        canonical = False
    else:
        canonical = True
    if canonical:
        MST.load(store, forged_root).verify_against(base)
    else:
        with pytest.raises(InvalidCommit):
            MST.load(store, forged_root).verify_against(base)


# -- the partial resync path on a real node ------------------------------------------------


async def test_a_node_refuses_a_non_canonical_tree_in_a_partial_resync(tmp_path: Path) -> None:
    a, b = await start_nodes(tmp_path, 2)
    try:
        await link([a, b], [(0, 1)])
        async with Client(a.url) as alice:
            await alice.create_account("alice.skyfed.test", PASSWORD)
            await alice.post("the honest past")
            did = alice.did

        async def b_has_it() -> bool:
            return (await b.storage.head_state(did)) == (await a.storage.head_state(did))

        await until(b_has_it)
        held = await b.storage.head_state(did)
        assert held is not None
        key = await _account_key(a, did)
        # A signed head over a root [K] whose left leaf holds X > K.
        names = (f"com.example.thing/k{i:06d}" for i in itertools.count())
        k = next(c for c in names if key_height(c) == 1)
        x = next(c for c in names if key_height(c) == 0)  # after k: greater
        blocks: dict[CID, bytes] = {}
        for path in (k, x):
            rec = encode({"$type": "com.example.thing", "n": path})
            blocks[cid_for_msgpack(rec)] = rec

        def entry(path: str, right: CID | None) -> dict[str, Value]:
            rec = encode({"$type": "com.example.thing", "n": path})
            return {
                "k": path.encode(),
                "p": 0,
                "t": None if right is None else right.to_bytes(),
                "v": cid_for_msgpack(rec).to_bytes(),
            }

        leaf = encode({"e": [entry(x, None)], "l": None})
        root = encode({"e": [entry(k, None)], "l": cid_for_msgpack(leaf).to_bytes()})
        blocks[cid_for_msgpack(leaf)] = leaf
        blocks[cid_for_msgpack(root)] = root
        rev = TidClock(9).next(int(a.wall_clock() * 1e6))
        commit = Commit.sign(did, cid_for_msgpack(root), rev, key, prev=held.head)
        car = b"".join(write_car([commit.cid], [(commit.cid, commit.to_bytes()), *blocks.items()]))

        async def forged_export(
            head: CID, root_cid: CID, old_root: CID | None, *, limit: int | None = None
        ) -> bytes:
            return car

        a.export_car = forged_export  # type: ignore[method-assign]
        peer = b.federation.links[a.node_did]
        moved = await b.federation.resync(did, peer)
        assert not moved  # old code: True, and b held a tree it cannot read right
        assert await b.storage.head_state(did) == held
        assert peer.score < 0
    finally:
        for n in (a, b):
            await n.stop()
