"""node/appview/render.py: read views rendered in worker processes answer exactly as
the node's own reader threads do, see every acknowledged write, survive a worker
killed mid-request, and a node without workers serves them all inline."""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from node.appview.notifications import notifications_page
from node.appview.render import render
from node.appview.views import (
    _Read,
    author_feed_page,
    post_thread_page,
    thread_page,
    timeline_page,
)
from node.client import Client
from node.config import NodeConfig
from node.store.sqlite import SqliteStorage
from node.wiring import Node
from protocol.errors import RemoteProtocolError
from protocol.moderation import ACCEPT_LABELERS
from tests import render_pages, worker_tasks

pytestmark = pytest.mark.timeout(180)

PASSWORD = "correct horse battery staple"
ADMIN = "render-admin-token"
NAMES = ("alice", "bob", "carol", "dave", "erin")


@pytest.fixture
async def wnode(tmp_path: Path) -> AsyncIterator[Node]:
    """A node with two worker processes; every read view goes to them once warm."""
    config = NodeConfig(data_dir=tmp_path / "node", port=0, workers=2, admin_token=ADMIN)
    async with Node(config) as n:
        if n.storage.shared_path is None:
            pytest.skip("read views stay inline on this storage (PostgreSQL)")
        yield n


async def _people(node: Node) -> dict[str, Client]:
    people = {name: Client(node.url) for name in NAMES}
    for name, c in people.items():
        await c.create_account(f"{name}.skyfed.test", PASSWORD)
    return people


async def _close(people: dict[str, Client]) -> None:
    for c in people.values():
        await c.close()


async def _world(p: dict[str, Client]) -> dict[str, str]:
    """A small network with every kind of viewer-dependent state: follows, likes,
    reposts, a thread, a quote, a block, a mute and a takedown."""
    alice, bob, carol, dave, erin = (p[n] for n in NAMES)
    for c in (bob, carol, dave, erin):
        await alice.follow(c.did)
    await bob.follow(alice.did)
    root = await bob.post("root post by bob")
    r1 = await carol.post("carol replies", reply_to=root)
    await dave.post("dave replies to carol", reply_to=r1, root=root)
    await erin.post("erin replies", reply_to=root)
    quote = await alice.post("alice quotes bob", quote=root)
    await carol.like(root)
    await alice.like(root)
    await dave.repost(root)
    await carol.post("carol talks")
    await dave.post("dave talks")
    await erin.post("erin talks")
    await alice.block(carol.did)  # carol's posts leave alice's views (blockedPost in threads)
    await alice.mute(dave.did)  # dave's posts leave alice's views
    await bob.take_down("erin.skyfed.test", "test", admin_token=ADMIN)  # gone for everyone
    return {"root": root.uri, "reply": r1.uri, "quote": quote.uri}


def _pages(
    p: dict[str, Client], uris: dict[str, str]
) -> list[tuple[str | None, Any, tuple[Any, ...]]]:
    """(viewer, page, args) for the main views, for several viewers."""
    out: list[tuple[str | None, Any, tuple[Any, ...]]] = []
    for name in ("alice", "bob", "carol"):
        viewer = p[name].did
        out += [
            (viewer, timeline_page, (50, None)),
            (viewer, notifications_page, (viewer, 50, None, ())),
            (viewer, notifications_page, (viewer, 50, None, ("like", "reply"))),
        ]
    for viewer in (p["alice"].did, p["bob"].did, None):
        for actor in ("bob.skyfed.test", p["carol"].did, p["alice"].did):
            out.append((viewer, author_feed_page, (actor, 50, None, "posts_with_replies")))
            out.append((viewer, author_feed_page, (actor, 50, None, "posts_no_replies")))
        for uri in uris.values():
            out.append((viewer, thread_page, (uri, 6, 80)))
    return out


async def _inline(node: Node, viewer: str | None, page: Any, args: tuple[Any, ...]) -> bytes:
    base = node.url

    def run(conn: sqlite3.Connection) -> bytes:
        return orjson.dumps(page(_Read(conn, viewer, base), *args))

    return await node.storage.read(run)


async def _in_worker(node: Node, viewer: str | None, page: Any, args: tuple[Any, ...]) -> bytes:
    assert node.workers is not None
    path = node.storage.shared_path
    assert path is not None
    return await node.workers.run(render, path, page, viewer, node.url, args, {})


async def test_worker_answers_equal_inline_answers(wnode: Node) -> None:
    p = await _people(wnode)
    try:
        uris = await _world(p)
        pages = _pages(p, uris)
        for viewer, page, args in pages:
            inline = await _inline(wnode, viewer, page, args)
            worker = await _in_worker(wnode, viewer, page, args)
            assert worker == inline, (page.__name__, viewer, args)
        # The state the pages depend on is really there (not two empty answers).
        alice_tl = orjson.loads(await _inline(wnode, p["alice"].did, timeline_page, (50, None)))
        authors = {item["post"]["author"]["handle"] for item in alice_tl["feed"]}
        assert "bob.skyfed.test" in authors
        assert authors.isdisjoint({"carol.skyfed.test", "dave.skyfed.test", "erin.skyfed.test"})
        thread = orjson.loads(
            await _in_worker(wnode, p["alice"].did, thread_page, (uris["root"], 6, 80))
        )
        kinds = {r["$type"].rsplit("#", 1)[1] for r in thread["thread"]["replies"]}
        assert kinds == {"blockedPost"}  # carol blocked; erin taken down is left out
        bob_notes = orjson.loads(
            await _in_worker(wnode, p["bob"].did, notifications_page, (p["bob"].did, 50, None, ()))
        )
        assert {n["reason"] for n in bob_notes["notifications"]} >= {"like", "reply", "quote"}
        # A page's error crosses the pipe as the same XRPC error.
        missing = f"at://{p['alice'].did}/app.bsky.feed.post/3kzzzzzzzzzzz"
        with pytest.raises(RemoteProtocolError, match="Post not found") as info:
            await _in_worker(wnode, None, post_thread_page, (missing, 6, 80))
        assert (info.value.error, info.value.status) == ("NotFound", 400)
        nobody = ("nobody.skyfed.test", 50, None, "posts_with_replies")
        with pytest.raises(RemoteProtocolError, match="profile not found") as info:
            await _in_worker(wnode, None, author_feed_page, nobody)
        assert info.value.error == "ProfileNotFound"
    finally:
        await _close(p)


async def test_labels_apply_to_worker_answers(wnode: Node) -> None:
    """Labels a reader asks for are applied in the node to the worker's bytes, as to
    an inline answer: a redacted post is gone, a labelled one carries its label."""
    p = await _people(wnode)
    try:
        alice, bob, carol = p["alice"], p["bob"], p["carol"]
        await alice.follow(carol.did)
        gone = await carol.post("taken down by bob's labels")
        kept = await carol.post("labelled by bob")
        await bob.label(gone.uri, "!takedown")
        await bob.label(kept.uri, "spam")
        headers = {ACCEPT_LABELERS: f"{bob.did};redact"}

        async def timeline() -> Any:
            return await alice.call("app.bsky.feed.getTimeline", headers=headers)

        inline = await timeline()
        assert wnode.renderer.served_by_workers == 0
        wnode.renderer.inline_limit = 0
        assert await wnode.renderer.warm()
        worker = await timeline()
        assert wnode.renderer.served_by_workers == 1
        assert worker == inline
        assert [i["post"]["uri"] for i in worker["feed"]] == [kept.uri]
        assert [lb["val"] for lb in worker["feed"][0]["post"]["labels"]] == ["spam"]
    finally:
        await _close(p)


async def test_concurrent_reads_go_to_workers_and_answer_the_same(wnode: Node) -> None:
    p = await _people(wnode)
    try:
        uris = await _world(p)
        renderer = wnode.renderer
        alice = p["alice"]
        expected = await alice.call("app.bsky.feed.getTimeline")
        # One client, one read at a time: all inline, no worker started for it.
        for _ in range(5):
            assert await alice.call("app.bsky.feed.getTimeline") == expected
        assert renderer.served_by_workers == 0
        assert not wnode.workers or not wnode.workers.running
        # Overlapping reads: the first overlap starts the workers (meanwhile inline),
        # then the reads past the first go to them.
        thread = await alice.call("app.bsky.feed.getPostThread", params={"uri": uris["root"]})
        async with asyncio.timeout(120):  # the workers start while rounds go on inline
            while renderer.served_by_workers < 20:
                answers = await asyncio.gather(
                    *(alice.call("app.bsky.feed.getTimeline") for _ in range(4)),
                    *(
                        alice.call("app.bsky.feed.getPostThread", params={"uri": uris["root"]})
                        for _ in range(4)
                    ),
                )
                assert answers == [expected] * 4 + [thread] * 4
        assert renderer.served_inline > 8  # served inline while they started
        assert renderer.served_by_workers >= 20
        assert renderer.ready
        async with alice.http.get(wnode.url + "/metrics") as resp:
            metrics = await resp.text()
        shown = re.search(r"^skyfed_views_rendered_in_workers ([0-9.]+)$", metrics, re.M)
        assert shown is not None
        assert float(shown.group(1)) >= 20
        assert wnode.workers is not None
        pids = wnode.workers.pids()
        assert pids
        assert os.getpid() not in pids
    finally:
        await _close(p)


async def test_a_cold_pool_never_makes_a_read_wait(wnode: Node, tmp_path: Path) -> None:
    """While the workers are not up, overlapping reads are served inline; they go
    to the workers only once every worker has opened its connection."""
    p = await _people(wnode)
    pool = wnode.workers
    assert pool is not None
    marker = tmp_path / "go"
    # Every worker held busy: the warm-up the first overlap starts cannot finish.
    holds = [
        asyncio.create_task(pool.run(worker_tasks.wait_for, str(marker), i))
        for i in range(pool.size)
    ]
    try:
        await _world(p)
        alice = p["alice"]
        expected = await alice.call("app.bsky.feed.getTimeline")
        for _ in range(3):
            answers = await asyncio.wait_for(
                asyncio.gather(*(alice.call("app.bsky.feed.getTimeline") for _ in range(6))), 30
            )
            assert answers == [expected] * 6
        assert wnode.renderer.served_by_workers == 0
        assert not wnode.renderer.ready
        await asyncio.to_thread(marker.write_text, "go")
        assert await asyncio.gather(*holds) == list(range(pool.size))
        assert await wnode.renderer.warm()
        async with asyncio.timeout(60):  # warm now: the first overlap goes to a worker
            while not wnode.renderer.served_by_workers:
                answers = await asyncio.gather(
                    *(alice.call("app.bsky.feed.getTimeline") for _ in range(6))
                )
                assert answers == [expected] * 6
    finally:
        await asyncio.to_thread(marker.write_text, "go")
        await asyncio.gather(*holds, return_exceptions=True)
        await _close(p)


async def test_a_reader_sees_its_own_writes_in_a_worker(wnode: Node) -> None:
    p = await _people(wnode)
    try:
        alice, bob = p["alice"], p["bob"]
        await alice.follow(bob.did)
        wnode.renderer.inline_limit = 0  # every read to a worker (once warm)
        assert await wnode.renderer.warm()
        served = wnode.renderer.served_by_workers
        for i in range(15):
            # Each write is acknowledged after its commit; the very next read (in a
            # worker whose connection has stayed open all along) must show it.
            ref = await (bob if i % 2 else alice).post(f"post {i}")
            tl = await alice.call("app.bsky.feed.getTimeline", params={"limit": 1})
            assert tl["feed"][0]["post"]["uri"] == ref.uri
            like = await bob.like(ref)
            notes = await alice.call("app.bsky.notification.listNotifications", params={"limit": 5})
            if i % 2 == 0:
                assert like.uri in {n["uri"] for n in notes["notifications"]}
        await alice.mute(bob.did)
        tl = await alice.call("app.bsky.feed.getTimeline")
        assert {i["post"]["author"]["did"] for i in tl["feed"]} == {alice.did}
        assert wnode.renderer.served_by_workers >= served + 31
        assert wnode.renderer.served_inline == 0
    finally:
        await _close(p)


async def test_a_worker_killed_mid_request_still_answers(wnode: Node, tmp_path: Path) -> None:
    p = await _people(wnode)
    try:
        await _world(p)
        renderer = wnode.renderer
        assert wnode.workers is not None
        renderer.inline_limit = 0
        assert await renderer.warm()
        before = set(wnode.workers.pids())
        viewer = p["alice"].did
        expected = await _inline(wnode, viewer, timeline_page, (50, None))
        marker = str(tmp_path / "died")
        body = await renderer.json(
            render_pages.timeline_dying_once, viewer, marker, os.getpid(), 50
        )
        assert await asyncio.to_thread(Path(marker).exists)  # a worker did die under it
        assert body == expected
        assert wnode.workers.restarts >= 1
        assert before.isdisjoint(wnode.workers.pids())
        # The new workers are warmed again before reads go to them.
        assert not renderer.ready
        assert await renderer.warm()
        tl = await p["alice"].call("app.bsky.feed.getTimeline")
        assert orjson.dumps(tl) == expected
    finally:
        await _close(p)


async def test_no_workers_serves_everything_inline(tmp_path: Path) -> None:
    config = NodeConfig(data_dir=tmp_path / "node", port=0, workers=0, admin_token=ADMIN)
    async with Node(config) as node:
        assert node.workers is None
        p = await _people(node)
        try:
            uris = await _world(p)
            alice = p["alice"]
            expected = await alice.call("app.bsky.feed.getTimeline")
            thread = await alice.call("app.bsky.feed.getPostThread", params={"uri": uris["root"]})
            answers = await asyncio.wait_for(
                asyncio.gather(
                    *(alice.call("app.bsky.feed.getTimeline") for _ in range(8)),
                    *(
                        alice.call("app.bsky.feed.getPostThread", params={"uri": uris["root"]})
                        for _ in range(8)
                    ),
                ),
                30,
            )
            assert answers == [expected] * 8 + [thread] * 8
            assert node.renderer.served_by_workers == 0
            assert node.renderer.served_inline >= 18
            assert not await node.renderer.warm()
        finally:
            await _close(p)


async def test_storage_no_other_process_can_open_stays_inline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL (``shared_path`` None): overlapping reads stay inline even with
    workers configured, and no worker process starts for them."""
    # As PostgresStorage answers (it overrides the property itself).
    monkeypatch.setattr(SqliteStorage, "shared_path", property(lambda self: None))
    config = NodeConfig(data_dir=tmp_path / "node", port=0, workers=2, admin_token=ADMIN)
    async with Node(config) as node:
        assert node.storage.shared_path is None
        p = await _people(node)
        try:
            await _world(p)
            alice = p["alice"]
            expected = await alice.call("app.bsky.feed.getTimeline")
            answers = await asyncio.wait_for(
                asyncio.gather(*(alice.call("app.bsky.feed.getTimeline") for _ in range(8))), 30
            )
            assert answers == [expected] * 8
            assert node.renderer.served_by_workers == 0
            assert not await node.renderer.warm()
            assert node.workers is not None
            assert not node.workers.running
        finally:
            await _close(p)
