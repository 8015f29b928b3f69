"""The skyfed demo: three peered nodes on this machine and a conversation across them.

    python examples/demo.py            # runs the story, then serves until Ctrl-C
    python examples/demo.py --no-wait  # runs the story and exits (used by the tests)

Three nodes start on 127.0.0.1 (free ports, fresh data directories under a temporary
folder unless --data-dir is given) and link to each other. alice's home is node A,
bob's is node B. They post, reply, like and follow; every commit is signed by its
author and gossiped. Then node C, which hosts neither of them, renders their feed:
anyone's posts can be read from any node.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import tempfile
from pathlib import Path
from typing import Any

from node.app import Node
from node.client import Client, RecordRef
from node.config import NodeConfig

PASSWORD = "demo-password-123"


async def wait_for_paths(client: Client, paths: set[str], limit: float = 20) -> list[str]:
    """Follow a node's firehose until it has seen a commit touching every path."""
    seen: list[str] = []
    async with asyncio.timeout(limit):
        async for header, body in client.subscribe(cursor=1):
            for op in body.get("ops", []):
                if f"at://{body['repo']}/{op['path']}" in paths:
                    paths.discard(f"at://{body['repo']}/{op['path']}")
                    seen.append(
                        f"  seq {body['seq']:>3}  {header['t']}  {op['action']} {op['path']}"
                    )
            if not paths:
                return seen
    return seen


def render(posts: list[dict[str, Any]], handles: dict[str, str]) -> None:
    posts.sort(key=lambda p: p["value"]["createdAt"])
    for post in posts:
        did = post["uri"].split("/")[2]
        value = post["value"]
        indent = "    ↳ " if "reply" in value else "  "
        print(f"{indent}@{handles[did]}: {value['text']}")


async def story(urls: list[str]) -> None:
    a, b, c = urls
    async with Client(a) as alice, Client(b) as bob, Client(c) as reader:
        await alice.create_account("alice.skyfed.test", PASSWORD)
        await bob.create_account("bob.skyfed.test", PASSWORD)
        print(f"alice  {alice.did}  (home: node A)")
        print(f"bob    {bob.did}  (home: node B)\n")

        refs: list[RecordRef] = []
        hello = await alice.post("Hello from node A! Anyone can run a node.")
        refs.append(hello)
        refs.append(await bob.post("Hi alice, I'm on node B and I can read you.", reply_to=hello))
        refs.append(
            await alice.post(
                "No company can take this conversation down.", reply_to=refs[1], root=hello
            )
        )
        refs.append(await alice.like(refs[1]))
        refs.append(await bob.follow(alice.did))
        refs.append(await alice.follow(bob.did))

        print("Node C hosts neither account. Waiting for the commits to reach it…")
        events = await wait_for_paths(reader, {r.uri for r in refs})
        print("\n".join(events))

        handles = {alice.did: "alice.skyfed.test", bob.did: "bob.skyfed.test"}
        posts: list[dict[str, Any]] = []
        for did in handles:
            page = await reader.list_records(did, "app.bsky.feed.post")
            posts.extend(page["records"])
        print("\nThe conversation, as node C renders it:")
        render(posts, handles)
        likes = await reader.list_records(alice.did, "app.bsky.feed.like")
        follows = await reader.list_records(bob.did, "app.bsky.graph.follow")
        print(f"  ({len(likes['records'])} like by alice; bob follows {len(follows['records'])})")

        heads = []
        for url in urls:
            async with Client(url) as c2:
                repos = await c2.call("com.atproto.sync.listRepos")
                heads.append({r["did"]: r["head"] for r in repos["repos"]})
        same = all(h == heads[0] for h in heads)
        print(f"\nAll three nodes hold the same signed heads: {'yes' if same else 'not yet'}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, help="keep the nodes' data under here")
    parser.add_argument("--no-wait", action="store_true", help="exit after the story")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="skyfed-demo-") as tmp:
        root = args.data_dir or Path(tmp)
        async with contextlib.AsyncExitStack() as stack:
            nodes: list[Node] = []
            for name in "abc":
                peers = tuple(n.url for n in nodes)  # each new node links to the earlier ones
                config = NodeConfig(data_dir=root / f"node-{name}", port=0, peers=peers)
                nodes.append(await stack.enter_async_context(Node(config)))
            for name, node in zip("ABC", nodes, strict=True):
                print(f"node {name}  {node.url}  {node.node_did}")
            print()
            await story([n.url for n in nodes])
            if args.no_wait:
                return
            print("\nThe nodes keep serving — try:")
            print(f"  curl '{nodes[2].url}/xrpc/com.atproto.sync.listRepos'")
            print("Ctrl-C to stop.")
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
