"""Ingest verified in worker processes (node/net/verify.py) judges exactly as inline:
the same commit or the same error for honest, forged and mis-keyed events, no event
lost when a worker dies mid-batch, a verdict bound to the key it was checked with,
and a node without workers (``workers = 0``) ingests inline."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import secrets
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from node.config import NodeConfig
from node.net.verify import EventVerifier
from node.wiring import Node
from protocol.cid import cid_for_msgpack
from protocol.commit import Commit, CommitEvent
from protocol.encoding import encode
from protocol.errors import DecodeError, InvalidSignature, SkyfedError
from protocol.identity import IdentityOp, did_for_genesis
from protocol.ingest import Verdict, verify_event, verify_events
from protocol.keys import SigningKey
from protocol.mst import MemoryBlockStore
from protocol.peerwire import encode_message
from protocol.repo import Repo, Write
from protocol.syntax import TidClock
from tests import worker_tasks as tasks
from tests.test_federation import FakePeer

pytestmark = pytest.mark.timeout(120)

STAMP = "2026-11-23T12:00:00.000Z"


@dataclasses.dataclass
class Author:
    did: str
    key: SigningKey
    op: IdentityOp
    events: list[CommitEvent]


def author(seed: int, posts: int) -> Author:
    """A signed identity and its first ``posts + 1`` commit events, in chain order."""
    key = SigningKey.from_seed(seed.to_bytes(32, "big"))
    op = IdentityOp.create(
        rotation_keys=[key.did_key()],
        signing_key=key.did_key(),
        handle=f"author{seed}.skyfed.test",
        endpoint="http://127.0.0.1:1",
        prev=None,
        signer=key,
    )
    did = did_for_genesis(op)
    clock = TidClock(7)
    micros = 1_700_000_000_000_000 + seed
    store = MemoryBlockStore()
    made = Repo.create(did, key, rev=clock.next(micros), time=STAMP, source=store)
    store.update(made.blocks)
    repo, events = made.repo, [made.event]
    for i in range(posts):
        micros += 1
        rev = clock.next(micros)
        record = {"$type": "app.bsky.feed.post", "text": f"post {i}", "createdAt": STAMP}
        result = repo.apply_writes(
            [Write("create", "app.bsky.feed.post", rev, record)], key, rev=rev, time=STAMP
        )
        store.update(result.blocks)
        repo = result.repo
        events.append(result.event)
    return Author(did, key, op, events)


def forged_signature(a: Author, event: CommitEvent) -> CommitEvent:
    """The same commit content signed by another key (blocks re-hashed: consistent)."""
    impostor = SigningKey.from_seed(secrets.token_bytes(32))
    blocks = event.block_map()
    honest = Commit.from_bytes(blocks[event.commit])
    fake = Commit.sign(honest.did, honest.data, honest.rev, impostor, prev=honest.prev)
    block = fake.to_bytes()
    others = [b for cid, b in blocks.items() if cid != event.commit]
    return dataclasses.replace(event, commit=cid_for_msgpack(block), blocks=(block, *others))


def forged_block(event: CommitEvent) -> CommitEvent:
    """A record block swapped for another: the ops no longer prove the tree."""
    blocks = event.block_map()
    op = event.ops[0]
    assert op.cid is not None
    other = encode({"$type": "app.bsky.feed.post", "text": "not what was signed"})
    kept = [b for cid, b in blocks.items() if cid != op.cid]
    return dataclasses.replace(event, blocks=(*kept, other))


def cases(a: Author, stranger: SigningKey) -> list[tuple[str, bytes, str]]:
    """(name, event bytes, key) for every way an event can pass or fail."""
    ev = a.events[2]
    key = a.key.did_key()
    return [
        ("genesis", a.events[0].to_bytes(), key),
        ("honest", ev.to_bytes(), key),
        ("forged-signature", forged_signature(a, ev).to_bytes(), key),
        ("forged-block", forged_block(ev).to_bytes(), key),
        ("wrong-key", ev.to_bytes(), stranger.did_key()),
        ("rewritten-since", dataclasses.replace(ev, since=ev.rev).to_bytes(), key),
    ]


def inline(data: bytes, key: str) -> Commit | tuple[type[SkyfedError], str]:
    try:
        return verify_event(CommitEvent.from_bytes(data), key)
    except SkyfedError as e:
        return type(e), str(e)


async def through(
    verifier: EventVerifier, data: bytes, key: str
) -> Commit | tuple[type[SkyfedError], str]:
    try:
        return await verifier.verify(CommitEvent.from_bytes(data), data, key)
    except SkyfedError as e:
        return type(e), str(e)


class Spawner:
    """Owns the verifier's batch tasks, as the federation does."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[None]] = set()

    def __call__(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task


def verifier_with(pool: Any, **kw: Any) -> EventVerifier:
    # Every event goes to the pool, however few there are.
    kw.setdefault("min_batch", 1)
    return EventVerifier(pool, lambda: 0, Spawner(), cold_backlog=0, warm_backlog=0, **kw)


def test_every_case_fails_or_passes_as_it_should() -> None:
    a, stranger = author(1, 3), SigningKey.from_seed(bytes(32))
    outcomes = {name: inline(data, key) for name, data, key in cases(a, stranger)}
    assert isinstance(outcomes["genesis"], Commit)
    assert isinstance(outcomes["honest"], Commit)
    for name in ("forged-signature", "wrong-key"):
        assert outcomes[name][0] is InvalidSignature, name  # type: ignore[index]
    for name in ("forged-block", "rewritten-since"):
        assert not isinstance(outcomes[name], Commit), name
    answers = verify_events([(b"\x00junk", a.key.did_key())])
    assert answers[0][0] == DecodeError.__name__  # type: ignore[index]


async def test_workers_give_the_verdicts_inline_gives() -> None:
    from node.workers import WorkerPool

    a, stranger = author(2, 3), SigningKey.from_seed(bytes(32))
    pool = WorkerPool(2, idle_seconds=30)
    verifier = verifier_with(pool)
    try:
        all_cases = cases(a, stranger) * 3  # several batches, over both workers
        got = await asyncio.gather(*(through(verifier, d, k) for _, d, k in all_cases))
        want = [inline(d, k) for _, d, k in all_cases]
        assert got == want
        assert verifier.offloaded == len(all_cases)
        assert verifier.inline == 0
        assert verifier.batches >= 2
        assert pool.tasks_done == verifier.batches
    finally:
        await pool.close()


async def test_a_worker_killed_mid_batch_loses_no_event(tmp_path: Path) -> None:
    from node.workers import WorkerPool

    a = author(3, 40)
    pool = WorkerPool(1, idle_seconds=30)
    marker = tmp_path / "died"
    verifier = verifier_with(
        pool, task=functools.partial(tasks.verify_events_dying_once, str(marker))
    )
    try:
        datas = [e.to_bytes() for e in a.events]
        key = a.key.did_key()
        got = await asyncio.gather(*(through(verifier, d, key) for d in datas))
        assert marker.read_text().startswith("died after")  # it did die, mid-batch
        assert got == [inline(d, key) for d in datas]
        assert all(isinstance(c, Commit) for c in got)
        assert pool.restarts >= 1
        assert verifier.fallbacks == 0
    finally:
        await pool.close()


async def test_a_batch_no_worker_survives_is_verified_inline() -> None:
    from node.workers import WorkerPool

    a, stranger = author(4, 3), SigningKey.from_seed(bytes(32))
    pool = WorkerPool(1, idle_seconds=30)
    verifier = verifier_with(pool, task=tasks.verify_events_dying)
    try:
        all_cases = cases(a, stranger)
        got = await asyncio.gather(*(through(verifier, d, k) for _, d, k in all_cases))
        assert got == [inline(d, k) for _, d, k in all_cases]
        assert verifier.fallbacks >= 1
        assert verifier.inline == len(all_cases)
    finally:
        await pool.close()


async def test_a_trickle_is_verified_inline_and_starts_no_worker() -> None:
    from node.workers import WorkerPool

    a = author(5, 2)
    pool = WorkerPool(1, idle_seconds=30)
    verifier = EventVerifier(pool, lambda: 1, Spawner())  # one push in flight
    try:
        for e in a.events:
            await verifier.verify(e, e.to_bytes(), a.key.did_key())
        assert verifier.inline == len(a.events)
        assert verifier.offloaded == 0
        assert not pool.running
        assert pool.starts == 0
    finally:
        await pool.close()


async def test_one_event_at_a_time_stays_inline_with_workers_running() -> None:
    from node.workers import WorkerPool

    a = author(10, 2)
    pool = WorkerPool(1, idle_seconds=30)
    verifier = verifier_with(pool, min_batch=2)
    try:
        await pool.warm()
        for e in a.events:  # each alone at its flush: cheaper inline than a worker call
            assert isinstance(await verifier.verify(e, e.to_bytes(), a.key.did_key()), Commit)
        assert verifier.inline == len(a.events)
        assert verifier.batches == 0
        both = await asyncio.gather(
            *(verifier.verify(e, e.to_bytes(), a.key.did_key()) for e in a.events)
        )
        assert [c.rev for c in both] == [e.rev for e in a.events]
        assert verifier.offloaded == len(a.events)
        assert verifier.batches == 1
    finally:
        await pool.close()


# -- through a node ----------------------------------------------------------------


async def _until(cond: Callable[[], Coroutine[Any, Any, bool]], limit: float = 30.0) -> None:
    async with asyncio.timeout(limit):
        while not await cond():  # noqa: ASYNC110 - state spread over a node's tasks
            await asyncio.sleep(0.02)  # poll


async def _push_identity(peer: FakePeer, a: Author) -> None:
    data = encode({"did": a.did, "ops": [a.op.to_bytes()]})
    await peer.ws.send_bytes(
        encode_message("push", id=a.op.cid.to_bytes(), kind="identity", data=data, round=0)
    )


@pytest.mark.parametrize("workers", [0, 1], ids=["inline", "workers"])
async def test_a_node_ingests_honest_events_and_refuses_forged_ones(
    tmp_path: Path, workers: int
) -> None:
    node = Node(NodeConfig(data_dir=tmp_path / "b", port=0, workers=workers))
    await node.start()
    try:
        verifier = node.federation.verifier
        assert (verifier.pool is None) == (workers == 0)
        verifier.cold_backlog = verifier.warm_backlog = 0  # every event to the pool
        verifier.min_batch = 1
        a = author(6, 6)
        async with aiohttp.ClientSession() as http:
            peer = await FakePeer.connect(http, node)
            await _push_identity(peer, a)

            async def known() -> bool:
                return await node.storage.identity(a.did) is not None

            await _until(known)
            # Forgeries first, from a peer the node will cut off (under the same ids as
            # the real events, which must still get in), then the real chain.
            forger = await FakePeer.connect(http, node)
            for event in (forged_signature(a, a.events[1]), forged_block(a.events[1])):
                await forger.push(event)

            async def refused() -> bool:
                return node.federation.rejected >= 2

            await _until(refused)
            for event in a.events:
                await peer.push(event)

            async def ingested() -> bool:
                held = await node.storage.get_head(a.did)
                return held is not None and held.head == a.events[-1].commit

            await _until(ingested)
        page = await node.storage.list_records(a.did, "app.bsky.feed.post", 20, None, False)
        assert len(page) == len(a.events) - 1
        if workers:
            assert verifier.offloaded >= len(a.events)
            assert verifier.inline == 0
        else:
            assert verifier.offloaded == 0
            assert verifier.inline >= len(a.events)
    finally:
        await node.stop()


async def test_a_verdict_is_bound_to_the_key_it_was_checked_with(tmp_path: Path) -> None:
    """The DID's key changes while its event is in a worker: judged again, refused."""
    node = Node(NodeConfig(data_dir=tmp_path / "b", port=0, workers=1))
    await node.start()
    try:
        fed = node.federation
        fed.verifier.cold_backlog = fed.verifier.warm_backlog = 0
        fed.verifier.min_batch = 1
        a = author(7, 1)
        other = SigningKey.from_seed(bytes(range(32)))
        fed._keys[a.did] = a.key.did_key()
        verify = fed.verifier.verify

        async def then_rotate(event: CommitEvent, data: bytes, key: str) -> Commit:
            commit = await verify(event, data, key)
            fed._keys[a.did] = other.did_key()  # a rotation landed meanwhile
            return commit

        fed.verifier.verify = then_rotate  # type: ignore[method-assign]
        first = a.events[0]
        with pytest.raises(InvalidSignature):
            await fed.ingest_event(first, None, first.to_bytes())
        assert await node.storage.get_head(a.did) is None
    finally:
        await node.stop()


@pytest.mark.parametrize("workers", [0, 1], ids=["inline", "workers"])
async def test_a_stale_head_hint_changes_no_verdict(tmp_path: Path, workers: int) -> None:
    """The head remembered from the last ingested event is only a hint: the head moved
    by another writer meanwhile, the next event is judged on the stored head."""
    node = Node(NodeConfig(data_dir=tmp_path / "b", port=0, workers=workers))
    await node.start()
    try:
        fed = node.federation
        fed.verifier.cold_backlog = fed.verifier.warm_backlog = 0
        fed.verifier.min_batch = 1
        a = author(8, 3)
        fed._keys[a.did] = a.key.did_key()
        for event in a.events[:2]:
            assert await fed.ingest_event(event, None, event.to_bytes()) is Verdict.APPLY
        assert fed._heads[a.did].head == a.events[1].commit
        # Another writer stores the next commit without telling federation.
        moved = a.events[2]
        held = await node.storage.head_state(a.did)
        await fed._store_event(moved, verify_event(moved, a.key.did_key()), held)
        assert fed._heads[a.did].head == a.events[1].commit  # stale now
        assert await fed.ingest_event(moved, None, moved.to_bytes()) is Verdict.DUPLICATE
        last = a.events[3]
        assert await fed.ingest_event(last, None, last.to_bytes()) is Verdict.APPLY
        head = await node.storage.get_head(a.did)
        assert head is not None
        assert head.head == last.commit
        page = await node.storage.list_records(a.did, "app.bsky.feed.post", 20, None, False)
        assert len(page) == 3
    finally:
        await node.stop()
