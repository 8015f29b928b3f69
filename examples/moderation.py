#!/usr/bin/env python3
"""Moderation without a single point of control, as a story on three local nodes.

    .venv/bin/python examples/moderation.py

Nodes A, B and C are peered. troll's home is node A. A's operator takes troll down
on A, with a published reason: troll's posts vanish from A's views but stay readable
through B and C, and A's public listing says what it did and why. Meanwhile mod, an
account on node B acting as a labeler, labels a spam post: dana, who subscribes to
mod, no longer sees it; erin, who does not, still does. (The account's own answer to
a takedown, moving its home to another node, is in docs/moderation.md.)
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import _venv  # noqa: F401  (re-runs this script with the project's .venv if need be)

from node.client import Client
from node.config import NodeConfig
from node.wiring import Node
from protocol.moderation import ModerationPrefs

PASSWORD = "moderation-demo-123"


async def until(what: Callable[[], Awaitable[bool]], limit: float = 20) -> None:
    async with asyncio.timeout(limit):
        while not await what():  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # poll: gossip has no single event to wait on


async def main() -> None:
    admin_token = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="skyfed-moderation-") as tmp:
        async with contextlib.AsyncExitStack() as stack:
            nodes: list[Node] = []
            for name in "abc":
                config = NodeConfig(
                    data_dir=Path(tmp) / f"node-{name}",
                    port=0,
                    peers=tuple(n.url for n in nodes),
                    reconcile_interval=1.0,
                    admin_token=admin_token if name == "a" else None,
                    moderation_policy="Node A does not host harassment." if name == "a" else None,
                )
                nodes.append(await stack.enter_async_context(Node(config)))
            a, b, c = nodes
            troll = await stack.enter_async_context(Client(a.url))
            spammer = await stack.enter_async_context(Client(a.url))
            mod = await stack.enter_async_context(Client(b.url))
            admin = await stack.enter_async_context(Client(a.url))
            await troll.create_account("troll.skyfed.test", PASSWORD)
            await spammer.create_account("spammer.skyfed.test", PASSWORD)
            await mod.create_account("mod.skyfed.test", PASSWORD)
            insult = await troll.post("an insult A's operator will not serve")
            spam = await spammer.post("BUY CHEAP FOLLOWERS")
            await spammer.post("a perfectly ordinary post")
            readers = {n: await stack.enter_async_context(Client(n.url)) for n in nodes}

            async def everywhere() -> bool:
                for reader in readers.values():
                    uris = {i["post"]["uri"] for i in (await reader.latest())["feed"]}
                    if not {insult.uri, spam.uri} <= uris:
                        return False
                return True

            await until(everywhere)
            print("troll's post is on every node")

            taken = await admin.take_down(
                troll.did, "harassment, reported twice", admin_token=admin_token
            )
            print(f"A's operator took troll down on A: {taken['reason']} ({taken['createdAt']})")
            for name, node in zip("ABC", nodes, strict=True):
                uris = {i["post"]["uri"] for i in (await readers[node].latest())["feed"]}
                shown = "readable" if insult.uri in uris else "gone"
                print(f"  troll's post from node {name}: {shown}")
            listing = await readers[c].moderation_actions()
            print(f"  node C's own listing: {len(listing['actions'])} actions")
            listing = await readers[a].moderation_actions()
            for action in listing["actions"]:
                print(f"  node A publishes: #{action['id']} {action['did']} {action['reason']}")
            print(f"  node A's policy: {listing['policy']['statement']}")

            await mod.label(spam.uri, "spam")
            print("mod (on node B) labelled the spam post 'spam'")
            dana = await stack.enter_async_context(
                Client(c.url, moderation=ModerationPrefs().subscribe(mod.did))
            )
            erin = await stack.enter_async_context(Client(c.url))

            async def labelled_on_c() -> bool:
                page = await dana.posts([spam.uri])
                return bool(page["posts"] and page["posts"][0]["labels"])

            await until(labelled_on_c)
            for who, client in (("dana (subscribes to mod)", dana), ("erin", erin)):
                page = await client.latest()
                texts = [
                    i["post"]["record"]["text"]
                    for i in page["feed"]
                    if not client.moderate(i["post"]).hidden
                ]
                print(f"  {who} sees on node C: {texts}")


if __name__ == "__main__":
    asyncio.run(main())
