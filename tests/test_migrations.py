"""Databases written by older versions upgrade in place on open."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from node.client import Client
from node.config import NodeConfig
from node.store.sqlite import SCHEMA_VERSION
from node.wiring import Node

from .pg import RawDb

PASSWORD = "correct horse battery staple"

# What schema v1 had; everything else was added by later migrations.
_V1_TABLES = {
    "blocks",
    "repos",
    "commits",
    "equivocations",
    "records",
    "events",
    "accounts",
    "identity_ops",
    "identities",
    "sessions",
    "meta",
}


async def test_v1_database_upgrades_and_backfills(
    tmp_path: Path, raw_db: Callable[[NodeConfig], RawDb]
) -> None:
    config = NodeConfig(data_dir=tmp_path / "node", port=0)
    async with Node(config) as node, Client(node.url) as alice, Client(node.url) as bob:
        await alice.create_account("alice.skyfed.test", PASSWORD)
        await bob.create_account("bob.skyfed.test", PASSWORD)
        await bob.follow(alice.did)
        first = await alice.post("written before the indexes existed")
        await bob.like(first)
        before = await bob.call("app.bsky.feed.getTimeline")

    # Turn the database back into a v1 one: drop every later table and index.
    db = raw_db(config)
    # Sorted: an FTS5 table before its shadow tables (actor_fts, actor_fts_data, ...),
    # which dropping it drops.
    for table in sorted(db.tables()):
        if table not in _V1_TABLES:
            db.drop(table)
    db.set_version(1)

    async with Node(config) as node, Client(node.url) as bob:
        await bob.login("bob.skyfed.test", PASSWORD)
        after = await bob.call("app.bsky.feed.getTimeline")
        assert [i["post"]["uri"] for i in after["feed"]] == [
            i["post"]["uri"] for i in before["feed"]
        ]
        assert after["feed"][0]["post"]["likeCount"] == 1
        profile = await bob.call("app.bsky.actor.getProfile", params={"actor": "alice.skyfed.test"})
        assert (profile["postsCount"], profile["followersCount"]) == (1, 1)
    assert db.version() == SCHEMA_VERSION


async def test_a_newer_database_is_refused(
    tmp_path: Path, raw_db: Callable[[NodeConfig], RawDb]
) -> None:
    config = NodeConfig(data_dir=tmp_path / "node", port=0)
    async with Node(config):
        pass
    raw_db(config).set_version(SCHEMA_VERSION + 1)
    node = Node(config)
    try:
        with pytest.raises(RuntimeError, match="newer"):
            await node.start()
    finally:
        await node.stop()


async def test_v4_database_gains_moderation_tables(
    tmp_path: Path, raw_db: Callable[[NodeConfig], RawDb]
) -> None:
    config = NodeConfig(data_dir=tmp_path / "node", port=0)
    async with Node(config) as node, Client(node.url) as alice:
        await alice.create_account("alice.skyfed.test", PASSWORD)
        post = await alice.post("written before moderation existed")

    # Back to v4: no takedowns, no mutes.
    db = raw_db(config)
    db.drop("takedowns")
    db.drop("mutes")
    db.drop("reserved_keys")  # v6
    db.drop("account_deactivations")
    db.set_version(4)

    async with Node(config) as node, Client(node.url) as bob:
        await bob.create_account("bob.skyfed.test", PASSWORD)
        await bob.mute(alice.did)
        assert [p["did"] for p in (await bob.mutes())["mutes"]] == [alice.did]
        assert (await bob.latest())["feed"] == []
        assert node.moderation.active() == []
        async with Client(node.url) as anyone:
            assert [i["post"]["uri"] for i in (await anyone.latest())["feed"]] == [post.uri]
    assert db.version() == SCHEMA_VERSION
    assert {"takedowns", "mutes"} <= db.tables()
