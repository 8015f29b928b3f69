"""The Merkle Search Tree: determinism, operations, diffs, proofs, refusal of bad trees."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.cid import CID, CODEC_RAW, cid_for_msgpack
from protocol.encoding import decode, encode
from protocol.errors import InvalidCommit, RepoError
from protocol.mst import (
    MST,
    HashedBlocks,
    MemoryBlockStore,
    MissingBlock,
    _keys_ok,
    key_height,
    validate_key,
)


def val(s: str) -> CID:
    return cid_for_msgpack(encode({"v": s}))


def build(keys: list[str]) -> MST:
    tree = MST.empty()
    for k in keys:
        tree = tree.set(k, val(k))
    return tree


def reference_root(pairs: dict[str, CID]) -> CID:
    """An independent builder: lay the sorted keys out layer by layer."""
    store = MemoryBlockStore()

    def node(keys: list[bytes], layer: int) -> CID | None:
        if not keys:
            return None
        if layer < 0:
            raise AssertionError
        here = [k for k in keys if key_height(k) == layer]
        gaps: list[list[bytes]] = [[]]
        for k in keys:
            if key_height(k) == layer:
                gaps.append([])
            else:
                gaps[-1].append(k)
        subs = [node(g, layer - 1) if g else None for g in gaps]
        entries = []
        prev = b""
        for k, right in zip(here, subs[1:], strict=True):
            p = 0
            while p < min(len(prev), len(k)) and prev[p] == k[p]:
                p += 1
            entries.append(
                {
                    "k": k[p:],
                    "p": p,
                    "t": None if right is None else right.to_bytes(),
                    "v": pairs[k.decode()].to_bytes(),
                }
            )
            prev = k
        left = subs[0]
        return store.put_block(
            encode({"e": entries, "l": None if left is None else left.to_bytes()})
        )

    raw = sorted(k.encode() for k in pairs)
    if not raw:
        return store.put_block(encode({"e": [], "l": None}))
    top = max(key_height(k) for k in raw)
    root = node(raw, top)
    assert root is not None
    return root


@pytest.mark.parametrize(
    ("key", "height"),
    [
        pytest.param("2653ae71", 0, id="2653ae71"),
        pytest.param("blue", 1, id="blue"),
        pytest.param("app.bsky.feed.post/454397e440ec", 4, id="post-454397e440ec"),
        pytest.param("app.bsky.feed.post/9adeb165882c", 8, id="post-9adeb165882c"),
    ],
)
def test_key_height_matches_atproto(key: str, height: int) -> None:
    assert key_height(key) == height


keys_st = st.lists(
    st.from_regex(r"\A[a-z]{1,3}\.[a-z]{1,3}/[a-z0-9]{1,6}\Z", fullmatch=True),
    unique=True,
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(keys_st, st.randoms(use_true_random=False))
def test_root_independent_of_order_and_equals_reference(
    keys: list[str], rnd: random.Random
) -> None:
    shuffled = keys[:]
    rnd.shuffle(shuffled)
    tree = build(shuffled)
    assert tree.root() == build(sorted(keys)).root()
    assert tree.root() == reference_root({k: val(k) for k in keys})
    assert [k for k, _ in tree.items()] == sorted(keys)


@settings(max_examples=60, deadline=None)
@given(keys_st, st.data())
def test_delete_gives_the_tree_of_the_remaining_keys(keys: list[str], data: st.DataObject) -> None:
    gone = data.draw(st.lists(st.sampled_from(keys), unique=True) if keys else st.just([]))
    tree = build(keys)
    for k in gone:
        tree = tree.delete(k)
    rest = sorted(set(keys) - set(gone))
    assert tree.root() == reference_root({k: val(k) for k in rest})
    store = MemoryBlockStore(tree.new_blocks())
    assert MST.load(store, tree.root()).verify_structure() == len(rest)


def test_large_tree_round_trip_and_diff() -> None:
    keys = [f"app.bsky.feed.post/{i:08d}" for i in range(2000)]
    tree = build(keys)
    store = MemoryBlockStore(tree.new_blocks())
    loaded = MST.load(store, tree.root())
    assert loaded.verify_structure() == 2000
    assert loaded.get(keys[123]) == val(keys[123])
    assert loaded.get("app.bsky.feed.post/nope") is None
    changed = (
        loaded.delete(keys[5]).set(keys[6], val("other")).set("app.bsky.feed.like/x", val("l"))
    )
    diff = {(d.key, d.old, d.new) for d in loaded.diff(changed)}
    assert diff == {
        (keys[5], val(keys[5]), None),
        (keys[6], val(keys[6]), val("other")),
        ("app.bsky.feed.like/x", None, val("l")),
    }
    assert changed.diff(changed) == []


def test_items_after_and_prefix() -> None:
    tree = build(["a.b/1", "a.b/2", "a.c/1", "a.c/2", "a.d/1"])
    assert [k for k, _ in tree.items(prefix="a.c/")] == ["a.c/1", "a.c/2"]
    assert [k for k, _ in tree.items(after="a.b/2")] == ["a.c/1", "a.c/2", "a.d/1"]
    assert [k for k, _ in tree.items(after="a.c/1", prefix="a.c/")] == ["a.c/2"]


def test_set_is_idempotent_and_update_replaces() -> None:
    tree = build(["a.b/1", "a.b/2"])
    assert tree.set("a.b/1", val("a.b/1")).root() == tree.root()
    assert tree.set("a.b/1", val("x")).get("a.b/1") == val("x")


def test_delete_missing_key_refused() -> None:
    with pytest.raises(RepoError):
        build(["a.b/1"]).delete("a.b/2")


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("", id="empty"),
        pytest.param("nocollection", id="no-slash"),
        pytest.param("a.b/", id="empty-rkey"),
        pytest.param("/x", id="empty-collection"),
        pytest.param("a.b/c/d", id="two-slashes"),
        pytest.param("a.b/ü", id="non-ascii"),
        pytest.param("a.b/" + "x" * 1100, id="too-long"),
    ],
)
def test_bad_keys_refused(key: str) -> None:
    with pytest.raises(RepoError):
        validate_key(key)


def test_proof_shows_presence_and_absence() -> None:
    keys = [f"app.bsky.feed.post/{i:05d}" for i in range(500)]
    tree = build(keys)
    proof = tree.proof(keys[42])
    assert len(proof) < 20
    assert MST.load(MemoryBlockStore(proof), tree.root()).get(keys[42]) == val(keys[42])
    absent = tree.proof("app.bsky.feed.post/zzz")
    assert MST.load(MemoryBlockStore(absent), tree.root()).get("app.bsky.feed.post/zzz") is None
    # A proof for one key says nothing reliable about another: blocks are missing.
    partial = MST.load(MemoryBlockStore(proof), tree.root())
    missing = 0
    for k in keys:
        try:
            partial.get(k)
        except MissingBlock:
            missing += 1
    assert missing > len(keys) // 2


def test_tampered_node_refused() -> None:
    tree = build([f"a.b/{i}" for i in range(50)])
    blocks = tree.new_blocks()
    root = tree.root()
    node = decode(blocks[root])
    assert isinstance(node, dict)
    entries = node["e"]
    assert isinstance(entries, list)
    assert entries
    # Same CID key in the store, different content: the hash check refuses it.
    forged = dict(blocks)
    forged[root] = encode({"e": entries[1:], "l": node["l"]})
    with pytest.raises(InvalidCommit):
        MST.load(MemoryBlockStore(forged), root)


def test_non_canonical_structure_refused() -> None:
    # One key of height 0 placed in a node claiming a subtree at layer 0.
    leaf = cid_for_msgpack(encode({"e": [], "l": None}))
    block = encode(
        {"e": [{"k": b"a.b/1", "p": 0, "t": leaf.to_bytes(), "v": val("x").to_bytes()}], "l": None}
    )
    store = MemoryBlockStore()
    cid = store.put_block(block)
    assert key_height("a.b/1") == 0
    with pytest.raises(InvalidCommit):
        MST.load(store, cid)


_GOOD = val("good").to_bytes()


@pytest.mark.parametrize("where", ["v", "t", "l"])
@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(b"", id="empty"),
        pytest.param(_GOOD[:-1], id="short-digest"),
        pytest.param(_GOOD + b"\x00", id="long-digest"),
        pytest.param(b"\x01\x71\x12\x20" + _GOOD[-32:], id="dag-cbor-codec"),
        pytest.param(b"\x12\x20" + _GOOD[-32:], id="cidv0"),
        pytest.param(b"\x01\x81\x04\x13\x20" + _GOOD[-32:], id="not-sha2-256"),
    ],
)
def test_node_with_a_malformed_cid_is_refused(where: str, bad: bytes) -> None:
    # Values and subtree links are held as binary CIDs and only made CID objects
    # when handed out: each must still be checked when the node is decoded, even
    # where no walk reads it. A key of height 4, so a subtree link is allowed.
    key = "app.bsky.feed.post/454397e440ec"
    assert key_height(key) == 4
    entry = {"k": key.encode(), "p": 0, "t": bad if where == "t" else None, "v": _GOOD}
    if where == "v":
        entry["v"] = bad
    block = encode({"e": [entry], "l": bad if where == "l" else None})
    store = MemoryBlockStore()
    root = store.put_block(block)
    with pytest.raises(InvalidCommit, match="not a CIDv1"):
        MST.load(store, root)


def _reference_key_ok(key: bytes) -> bool:
    try:
        validate_key(key.decode("ascii"))
    except (RepoError, UnicodeDecodeError):
        return False
    return True


@given(
    st.lists(
        st.binary(min_size=0, max_size=8).map(
            lambda b: b.translate(bytes(b"ab/\n.~\xff"[i % 7] for i in range(256)))
        ),
        min_size=1,
        max_size=6,
    )
)
@settings(max_examples=500)
def test_node_key_syntax_check_agrees_with_validate_key(keys: list[bytes]) -> None:
    # A node's keys are checked all at once (joined by newlines, at C speed); the
    # verdict must be that of validate_key on each key (bar length, checked apart).
    assert _keys_ok(keys) == all(_reference_key_ok(k) for k in keys)


def test_hashed_blocks_serve_only_what_they_hashed() -> None:
    # The loader does not hash again what it reads from HashedBlocks: so it must
    # serve a block only under the msgpack CID of its bytes as they are now.
    tree = build([f"a.b/{i}" for i in range(50)])
    blocks = tree.new_blocks()
    root = tree.root()
    mutable = [bytearray(b) for b in blocks.values()]
    hashed = HashedBlocks(mutable)
    for b in mutable:
        b[:] = b"\x80"  # changed after hashing: the copy taken then is served
    assert hashed.to_dict() == blocks
    assert [k for k, _ in MST.load(hashed, root).items()] == [k for k, _ in tree.items()]
    # The same digest under the raw codec is another CID: not served.
    raw_codec = CID(CODEC_RAW, root.digest)
    assert hashed.get_block(raw_codec) is None
    with pytest.raises(MissingBlock):
        MST.load(hashed, raw_codec)


def test_empty_tree_root_is_stable() -> None:
    assert MST.empty().root() == cid_for_msgpack(encode({"e": [], "l": None}))
