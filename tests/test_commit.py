"""Commits, repositories and the inductive commit event."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.car import read_car, write_car
from protocol.commit import Commit, CommitEvent, RepoOp, verify_commit_event
from protocol.errors import DecodeError, InvalidCommit, InvalidSignature, RepoError, SkyfedError
from protocol.keys import SigningKey
from protocol.mst import MST, MemoryBlockStore, key_height
from protocol.repo import Repo, Write
from protocol.syntax import TidClock

from .seeds import seeded_key

DID = "did:skyfed:aaaaaaaaaaaaaaaaaaaaaaaa"
TIME = "2026-11-23T12:00:00.000Z"


class Chain:
    """A repo plus a store and clock, the way a node drives one."""

    def __init__(self, key: SigningKey):
        self.key = key
        self.store = MemoryBlockStore()
        self.clock = TidClock(1)
        self.micros = 1_700_000_000_000_000
        result = Repo.create(DID, key, rev=self.rev(), time=TIME, source=self.store)
        self.store.update(result.blocks)
        self.repo = result.repo
        self.events = [result.event]

    def rev(self) -> str:
        self.micros += 1
        return self.clock.next(self.micros)

    def write(self, *writes: Write) -> CommitEvent:
        result = self.repo.apply_writes(
            list(writes), self.key, rev=self.rev(), time=TIME, validate=False
        )
        self.store.update(result.blocks)
        self.repo = result.repo
        self.events.append(result.event)
        return result.event


def post(rkey: str, text: str = "hi") -> Write:
    return Write(
        "create",
        "app.bsky.feed.post",
        rkey,
        {"$type": "app.bsky.feed.post", "text": text, "createdAt": TIME},
    )


@pytest.fixture
def chain() -> Chain:
    return Chain(seeded_key(1))


def test_commit_sign_verify_round_trip(key: SigningKey) -> None:
    commit = Commit.sign(DID, MST.empty().root(), "3kabcdefghijk", key, prev=None)
    again = Commit.from_bytes(commit.to_bytes())
    assert again == commit
    again.verify(key.public)
    with pytest.raises(InvalidSignature):
        again.verify(seeded_key(2).public)


def test_every_byte_flip_of_a_commit_fails(key: SigningKey) -> None:
    raw = Commit.sign(DID, MST.empty().root(), "3kabcdefghijk", key, prev=None).to_bytes()
    for i in range(len(raw)):
        for bit in (0x01, 0x80):
            flipped = bytearray(raw)
            flipped[i] ^= bit
            with pytest.raises(SkyfedError):
                Commit.from_bytes(bytes(flipped)).verify(key.public)


def test_events_verify_inductively(chain: Chain) -> None:
    chain.write(*(post(f"3k{i:011d}") for i in range(30)))
    chain.write(post("3kzzzzzzzzzzz"))
    chain.write(Write("delete", "app.bsky.feed.post", "3k00000000005"))
    chain.write(
        Write(
            "update",
            "app.bsky.feed.post",
            "3k00000000006",
            {"$type": "app.bsky.feed.post", "text": "edited"},
        ),
        Write("delete", "app.bsky.feed.post", "3k00000000007"),
        post("3kaaaaaaaaaaa"),
    )
    prev = None
    for event in chain.events:
        decoded = CommitEvent.from_bytes(event.to_bytes())
        assert decoded == event
        commit = verify_commit_event(decoded, chain.key.public, prev_data=prev)
        prev = commit.data
    assert prev == chain.repo.tree.root()


def test_event_blocks_are_small(chain: Chain) -> None:
    for batch in range(3):
        chain.write(*(post(f"3k{batch}{i:010d}") for i in range(200)))
    event = chain.write(post("3kzzzzzzzzzzz"))
    # One record, the commit, and a path of a few nodes, not the whole tree.
    assert len(event.blocks) < 15


def test_event_with_missing_block_refused(chain: Chain) -> None:
    chain.write(*(post(f"3k{i:011d}") for i in range(100)))
    event = chain.write(Write("delete", "app.bsky.feed.post", "3k00000000050"))
    for i in range(1, len(event.blocks)):
        partial = CommitEvent.from_value(
            {**event.to_value(), "blocks": [b for j, b in enumerate(event.blocks) if j != i]}
        )
        with pytest.raises(InvalidCommit):
            verify_commit_event(partial, chain.key.public)


def test_event_lying_about_ops_refused(chain: Chain) -> None:
    chain.write(*(post(f"3k{i:011d}") for i in range(20)))
    event = chain.write(post("3kzzzzzzzzzzz"), post("3kyyyyyyyyyyy"))
    # Hiding one of the two creates: inversion no longer reaches prevData.
    hidden = CommitEvent.from_value({**event.to_value(), "ops": [event.ops[0].to_value()]})
    with pytest.raises(InvalidCommit):
        verify_commit_event(hidden, chain.key.public)
    # Wrong previous root held by the receiver: a desync, named as such.
    with pytest.raises(InvalidCommit) as info:
        verify_commit_event(event, chain.key.public, prev_data=event.commit)
    assert info.value.error == "Desynchronized"


def test_event_signed_by_another_key_refused(chain: Chain) -> None:
    event = chain.write(post("3kzzzzzzzzzzz"))
    with pytest.raises(InvalidSignature):
        verify_commit_event(event, seeded_key(9).public)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_flipped_event_bytes_never_verify(data: st.DataObject) -> None:
    chain = Chain(seeded_key(1))
    chain.write(*(post(f"3k{i:011d}") for i in range(10)))
    event = chain.write(post("3kzzzzzzzzzzz"))
    raw = bytearray(event.to_bytes())
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= data.draw(st.integers(1, 255))
    try:
        tampered = CommitEvent.from_bytes(bytes(raw))
        verify_commit_event(
            tampered, chain.key.public, prev_data=event.prev_data, prev_rev=event.since
        )
    except SkyfedError:
        return
    # A flip in the free-form 'time' field is the one change that still verifies:
    # it is not signed (atproto's firehose time is informational too).
    assert tampered.time != event.time


def test_write_rules(chain: Chain) -> None:
    chain.write(post("3kaaaaaaaaaaa"))
    with pytest.raises(RepoError, match="exists"):
        chain.write(post("3kaaaaaaaaaaa"))
    with pytest.raises(RepoError, match="no record"):
        chain.write(Write("delete", "app.bsky.feed.post", "3kbbbbbbbbbbb"))
    with pytest.raises(RepoError, match="twice"):
        chain.write(post("3kccccccccccc"), post("3kccccccccccc"))
    with pytest.raises(RepoError, match="at most"):
        chain.write(*(post(f"3k{i:011d}") for i in range(201)))


def test_repo_export_import_round_trip(chain: Chain) -> None:
    chain.write(*(post(f"3k{i:011d}") for i in range(50)))
    repo = chain.repo
    records = [(cid, chain.store.blocks[cid]) for _, cid in repo.tree.items()]
    commit_block = chain.store.blocks[repo.commit_cid]
    car = b"".join(
        write_car(
            [repo.commit_cid], [(repo.commit_cid, commit_block), *repo.tree.all_blocks(), *records]
        )
    )
    roots, blocks = read_car(car)
    assert roots == [repo.commit_cid]
    imported = Repo.load(MemoryBlockStore(blocks), roots[0])
    imported.commit.verify(chain.key.public)
    assert imported.tree.verify_structure() == 50
    assert imported.tree.root() == repo.tree.root()


@given(st.binary(max_size=300))
def test_car_reader_refuses_garbage(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        read_car(data)


def test_repo_op_shape_is_checked() -> None:
    with pytest.raises(DecodeError):
        RepoOp("create", "a.b/c", None)
    with pytest.raises(DecodeError):
        RepoOp.from_value({"action": "explode", "path": "a.b/c"})


def test_commit_blocks_are_only_what_the_commit_built(chain: Chain) -> None:
    """Issue 16: a repo kept in memory across commits (as the node caches it) hands
    back only the nodes its own commit built, not every node built since it was
    loaded, and the store still ends up holding the whole tree."""
    chain.write(*(post(f"3k{i:011d}") for i in range(150)))
    for i in range(300):
        before = {cid for cid, _ in chain.repo.tree.all_blocks()}
        result = chain.repo.apply_writes(
            [post(f"3l{i:011d}")], chain.key, rev=chain.rev(), time=TIME, validate=False
        )
        after = dict(result.repo.tree.all_blocks())
        nodes = {cid for cid in result.blocks if cid in after}
        # Every node the new tree has and the old one lacks (and a node rebuilt with
        # the bytes it had, which storing again does not change).
        assert nodes >= set(after) - before
        assert set(result.blocks) == nodes | {result.commit_cid, *(op.cid for op in result.ops)}
        # Bounded by the tree's depth (the path to the key, and the two sides of a
        # split on each layer below it), not by the commits before it.
        depth = 1 + max(key_height(k) for k, _ in result.repo.tree.items())
        assert len(nodes) <= 2 * depth
        chain.store.update(result.blocks)
        chain.repo = result.repo
    stored = MST.load(chain.store, chain.repo.tree.root())
    assert stored.verify_structure() == 450
    assert dict(stored.all_blocks()) == dict(chain.repo.tree.all_blocks())


def test_repo_without_a_store_keeps_committing(key: SigningKey) -> None:
    """A repo whose caller keeps no store (it reads back only its own tree, as the
    hostile-node harness does) can still build commit events after many commits:
    the event's nodes come from the tree in memory."""
    clock = TidClock(1)
    created = Repo.create(DID, key, rev=clock.next(1), time=TIME)
    repo, prev = created.repo, created.commit.data
    for i in range(60):
        result = repo.apply_writes(
            [post(f"3k{i:011d}")], key, rev=clock.next(2 + i), time=TIME, validate=False
        )
        commit = verify_commit_event(result.event, key.public, prev_data=prev)
        repo, prev = result.repo, commit.data
    assert len(repo.tree) == 60


def test_new_blocks_since_needs_an_earlier_tree_of_the_lineage() -> None:
    from protocol.cid import cid_for_msgpack
    from protocol.errors import LocalProtocolError

    value = cid_for_msgpack(b"\x80")
    a = MST.empty().set("app.bsky.feed.post/aaa", value)
    b = a.set("app.bsky.feed.post/bbb", value)
    assert set(b.new_blocks(since=a)) <= set(b.new_blocks())
    assert b.root() in b.new_blocks(since=a)
    assert b.new_blocks(since=b) == {}
    with pytest.raises(LocalProtocolError):
        a.new_blocks(since=b)
    with pytest.raises(LocalProtocolError):
        b.new_blocks(since=MST.empty())
