#!/usr/bin/env python3
"""An account leaves a node that has gone away, and its conversation follows it.

    .venv/bin/python examples/move_account.py

Three peered nodes start on 127.0.0.1 (fresh data directories under a temporary
folder). alice's home is node A, and she holds a rotation key of her own; bob (on B)
and carol (on C) follow her, and carol replies to her post. Then node A stops. alice
moves to node B with her rotation key alone: B imports her repository from its own
replica, an identity op signed by her key points her DID at B with B's new signing
key, and B commits under that key. She posts again; bob's and carol's timelines show
the new post beside the old one, with the reply and the like. Only the public API
(``node.client``) is used.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import _venv  # noqa: F401  (re-runs this script with the project's .venv if need be)

from node.client import Client, migrate_account
from node.config import NodeConfig
from node.wiring import Node
from protocol.keys import SigningKey

PASSWORD = "example-password-123"


async def until(what: str, check: Callable[[], Awaitable[bool]], limit: float = 20) -> None:
    async with asyncio.timeout(limit):
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(0.1)  # poll: several nodes, no one event to wait on
    print(f"  ... {what}")


async def story(root: Path) -> None:
    nodes: list[Node] = []
    for name in "abc":
        config = NodeConfig(
            data_dir=root / f"node-{name}",
            port=0,
            peers=tuple(n.url for n in nodes),
            reconcile_interval=1.0,
        )
        node = Node(config)
        await node.start()
        nodes.append(node)
    a, b, c = nodes
    try:
        key = SigningKey.from_seed(secrets.token_bytes(32))
        async with Client(a.url) as alice, Client(b.url) as bob, Client(c.url) as carol:
            await alice.create_account("alice.skyfed.test", PASSWORD, recovery_key=key.did_key())
            await bob.create_account("bob.skyfed.test", PASSWORD)
            await carol.create_account("carol.skyfed.test", PASSWORD)
            did = alice.did
            print(f"alice is {did}, at node A {a.url}")
            await bob.follow(did)
            await carol.follow(did)
            first = await alice.post("Hello from node A!")
            await until("bob and carol see it", lambda: seen(bob, first.uri))
            await carol.post("Welcome, alice (from node C)", reply_to=first)
            await bob.like(first)

            async def replicated() -> bool:
                heads = []
                for n in nodes:
                    heads.append({d: h for d, h, _ in await n.storage.all_heads()})
                return len(heads[0]) == 3 and all(h == heads[0] for h in heads)

            await until("every node holds every repository", replicated)

            print("node A stops.")
            await a.stop()
            async with Client(b.url) as moved:
                await migrate_account(moved, did, PASSWORD, rotation_key=key)
                state = await moved.identity(did)
                print(f"alice moved to node B: home {state.endpoint}, key {state.signing_key}")
                second = await moved.post("Hello again, now from node B")
            for name, reader in (("bob", bob), ("carol", carol)):
                await until(f"{name}'s timeline shows it", lambda r=reader: seen(r, second.uri))
                print(f"{name}'s timeline:")
                for item in reversed((await reader.timeline())["feed"]):
                    post = item["post"]
                    print(
                        f"  @{post['author']['handle']}: {post['record']['text']}"
                        f"   (likes {post['likeCount']}, replies {post['replyCount']})"
                    )
            print("alice's old post still verifies:", (await carol.verify_record(first.uri)).uri)
    finally:
        for node in nodes:
            await node.stop()


async def seen(client: Client, uri: str) -> bool:
    page = await client.timeline()
    return any(item["post"]["uri"] == uri for item in page["feed"])


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="skyfed-move-") as tmp:
        asyncio.run(story(Path(tmp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
