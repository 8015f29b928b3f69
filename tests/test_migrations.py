"""Databases written by older versions upgrade in place on open."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from node.client import Client
from node.config import NodeConfig
from node.store.sqlite import SCHEMA_VERSION
from node.wiring import Node

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


async def test_v1_database_upgrades_and_backfills(tmp_path: Path) -> None:
    config = NodeConfig(data_dir=tmp_path / "node", port=0)
    async with Node(config) as node, Client(node.url) as alice, Client(node.url) as bob:
        await alice.create_account("alice.skyfed.test", PASSWORD)
        await bob.create_account("bob.skyfed.test", PASSWORD)
        await bob.follow(alice.did)
        first = await alice.post("written before the indexes existed")
        await bob.like(first)
        before = await bob.call("app.bsky.feed.getTimeline")

    # Turn the database back into a v1 one: drop every later table and index.
    conn = sqlite3.connect(config.db_path)
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    for table in tables:
        if table not in _V1_TABLES:
            conn.execute(f"DROP TABLE IF EXISTS {table}")  # an FTS5 table takes its own
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()

    async with Node(config) as node, Client(node.url) as bob:
        await bob.login("bob.skyfed.test", PASSWORD)
        after = await bob.call("app.bsky.feed.getTimeline")
        assert [i["post"]["uri"] for i in after["feed"]] == [
            i["post"]["uri"] for i in before["feed"]
        ]
        assert after["feed"][0]["post"]["likeCount"] == 1
        profile = await bob.call("app.bsky.actor.getProfile", params={"actor": "alice.skyfed.test"})
        assert (profile["postsCount"], profile["followersCount"]) == (1, 1)
    conn = sqlite3.connect(config.db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


async def test_a_newer_database_is_refused(tmp_path: Path) -> None:
    config = NodeConfig(data_dir=tmp_path / "node", port=0)
    async with Node(config):
        pass
    conn = sqlite3.connect(config.db_path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    node = Node(config)
    try:
        with pytest.raises(RuntimeError, match="newer"):
            await node.start()
    finally:
        await node.stop()


async def test_v4_database_gains_moderation_tables(tmp_path: Path) -> None:
    config = NodeConfig(data_dir=tmp_path / "node", port=0)
    async with Node(config) as node, Client(node.url) as alice:
        await alice.create_account("alice.skyfed.test", PASSWORD)
        post = await alice.post("written before moderation existed")

    # Back to v4: no takedowns, no mutes.
    conn = sqlite3.connect(config.db_path)
    conn.execute("DROP TABLE takedowns")
    conn.execute("DROP TABLE mutes")
    conn.execute("DROP TABLE reserved_keys")  # v6
    conn.execute("DROP TABLE account_deactivations")
    conn.execute("PRAGMA user_version = 4")
    conn.commit()
    conn.close()

    async with Node(config) as node, Client(node.url) as bob:
        await bob.create_account("bob.skyfed.test", PASSWORD)
        await bob.mute(alice.did)
        assert [p["did"] for p in (await bob.mutes())["mutes"]] == [alice.did]
        assert (await bob.latest())["feed"] == []
        assert node.moderation.active() == []
        async with Client(node.url) as anyone:
            assert [i["post"]["uri"] for i in (await anyone.latest())["feed"]] == [post.uri]
    conn = sqlite3.connect(config.db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"takedowns", "mutes"} <= tables
    conn.close()
