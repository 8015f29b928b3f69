"""app.bsky.actor.getPreferences / putPreferences: private, opaque, bounded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from node.client import Client, XrpcError
from node.config import NodeConfig
from node.wiring import Node

PASSWORD = "correct horse battery staple"

PREFS = [
    {"$type": "app.bsky.actor.defs#adultContentPref", "enabled": False},
    {
        "$type": "app.bsky.actor.defs#savedFeedsPrefV2",
        "items": [{"type": "timeline", "value": "following", "pinned": True, "id": "3l"}],
    },
    # A type skyfed has never heard of, nested values and all: kept as given.
    {"$type": "com.example.future#pref", "nested": {"a": [1, "two", None, True]}},
    {"$type": "app.bsky.actor.defs#contentLabelPref", "label": "nsfw", "visibility": "hide"},
]


@pytest.fixture
async def small_node(tmp_path: Path) -> AsyncIterator[Node]:
    config = NodeConfig(data_dir=tmp_path / "node", port=0, max_preferences_bytes=2048)
    async with Node(config) as n:
        yield n


@pytest.fixture
async def pair(small_node: Node) -> AsyncIterator[tuple[Client, Client]]:
    async with Client(small_node.url) as alice, Client(small_node.url) as bob:
        await alice.create_account("alice.skyfed.test", PASSWORD)
        await bob.create_account("bob.skyfed.test", PASSWORD)
        yield alice, bob


async def _get(c: Client) -> list[object]:
    out = await c.call("app.bsky.actor.getPreferences")
    prefs = out["preferences"]
    assert isinstance(prefs, list)
    return prefs


async def test_preferences_round_trip_unchanged_and_in_order(pair: tuple[Client, Client]) -> None:
    alice, _ = pair
    assert await _get(alice) == []
    await alice.call("app.bsky.actor.putPreferences", data={"preferences": PREFS})
    assert await _get(alice) == PREFS
    # A put replaces the whole list.
    await alice.call("app.bsky.actor.putPreferences", data={"preferences": PREFS[:1]})
    assert await _get(alice) == PREFS[:1]


async def test_preferences_are_private_to_the_account(
    small_node: Node, pair: tuple[Client, Client]
) -> None:
    alice, bob = pair
    await alice.call("app.bsky.actor.putPreferences", data={"preferences": PREFS})
    # Bob's session reads Bob's (empty) preferences, whatever he asks for.
    assert await _get(bob) == []
    out = await bob.call("app.bsky.actor.getPreferences", params={"actor": alice.did})
    assert out == {"preferences": []}
    # Without a session there is nothing to read.
    async with Client(small_node.url) as anyone:
        with pytest.raises(XrpcError) as e:
            await anyone.call("app.bsky.actor.getPreferences")
        assert e.value.status == 401
        with pytest.raises(XrpcError) as e:
            await anyone.call("app.bsky.actor.putPreferences", data={"preferences": []})
        assert e.value.status == 401
    # Bob cannot write Alice's either: a put always lands on the session's account.
    await bob.call("app.bsky.actor.putPreferences", data={"preferences": PREFS[:1]})
    assert await _get(alice) == PREFS
    # Nor are they in the repo, where peers and anyone could read them.
    described = await bob.call("com.atproto.repo.describeRepo", params={"repo": alice.did})
    assert not any("pref" in c.lower() for c in described["collections"])


@pytest.mark.parametrize(
    "bad",
    [
        None,
        "prefs",
        {"$type": "app.bsky.actor.defs#adultContentPref"},
        [1],
        [{"enabled": True}],
        [{"$type": ""}],
        [{"$type": 7}],
        [{"$type": "x" * 300}],
        [{"$type": "a"}] * 1001,
    ],
    ids=[
        "none",
        "string",
        "object",
        "number-item",
        "no-type",
        "empty-type",
        "int-type",
        "long-type",
        "too-many",
    ],
)
async def test_malformed_preferences_are_refused_and_change_nothing(
    pair: tuple[Client, Client], bad: object
) -> None:
    alice, _ = pair
    await alice.call("app.bsky.actor.putPreferences", data={"preferences": PREFS[:1]})
    with pytest.raises(XrpcError) as e:
        await alice.call("app.bsky.actor.putPreferences", data={"preferences": bad})
    assert e.value.status in (400, 413)
    assert await _get(alice) == PREFS[:1]


async def test_oversize_preferences_are_refused(pair: tuple[Client, Client]) -> None:
    alice, _ = pair
    await alice.call("app.bsky.actor.putPreferences", data={"preferences": PREFS[:1]})
    # Under the body cap but over the node's 2,048-byte preference budget.
    big = [{"$type": "com.example.pref#blob", "data": "x" * 2500}]
    with pytest.raises(XrpcError) as e:
        await alice.call("app.bsky.actor.putPreferences", data={"preferences": big})
    assert (e.value.status, e.value.error) == (413, "PayloadTooLarge")
    # Far over: refused on the declared length, before the body is parsed.
    huge = [{"$type": "com.example.pref#blob", "data": "x" * 200_000}]
    with pytest.raises(XrpcError) as e:
        await alice.call("app.bsky.actor.putPreferences", data={"preferences": huge})
    assert e.value.status == 413
    assert await _get(alice) == PREFS[:1]
    # Just under the budget is fine.
    fits = [{"$type": "com.example.pref#blob", "data": "x" * 1900}]
    await alice.call("app.bsky.actor.putPreferences", data={"preferences": fits})
    assert await _get(alice) == fits
